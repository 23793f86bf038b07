"""Time minitheory's hand-written NumPy gradients against PyTorch eager autograd and JAX jit.

Not part of the package and not a dependency: run it where torch and/or jax are importable,

    python benchmarks/compare_frameworks.py [--repeats 5] [--part cores|public|both]
                                            [--out compare.json] [--only pre-LN]

Each model is written once more in the framework (forward only; the framework differentiates
it), at the papers' default sizes, in float64 on the CPU, with each library's default threads.
Two tables:

* ``public``: the checked ``loss_and_grads`` a student calls, one run, fresh inputs every call
  (random arrays, and the demos' data and initialization), NumPy arrays in, as a student passes
  them (the frameworks convert them inside the timed call);
* ``cores``: the unchecked cores the training loops call on the arrays they prepare once, and
  the transformer's whole Adam step against ``torch.optim.Adam``.

The losses are checked to agree. The frameworks are timed in turn, round by round, and each
round's time is divided by NumPy's in the same round (> 1: NumPy is faster): the table shows the
median time and the median ratio with its range over the rounds.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from minitheory.bench import blas_info, timeit
from minitheory.demos._common import format_table, tune_allocator


def problems():
    """``name -> (numpy_fn, arrays, framework_loss(xp, softmax, arrays) -> scalar, wrt,
    numpy_loss_value[, frameworks])``: the last entry, where present, names the only frameworks
    to compare (``"torch-adam"``: PyTorch with ``torch.optim.Adam``)."""
    from minitheory.lowrank_sparse import data as ls_data, model as ls_model, training as ls_train
    from minitheory.rank_growth import data as rg_data, model as rg_model
    from minitheory.sparse_bigrams import data as sb_data, model as sb_model, training as sb_train

    out = {}
    X, Y = rg_data.diagonal_toy(0, 256, 8, 4)
    p = rg_data.init_diagonal(np.random.default_rng(1), 4, np.full(5, 0.5))

    def diag_loss(xp, smax, a):
        A = a["w_K"] * a["w_Q"]
        Bv = a["w_V"] * a["w_O"]
        Z = xp.einsum("sij,rj,skj->rsik", a["X"], A, a["X"])
        out = xp.einsum("rsik,skj->rsij", smax(Z), a["X"]) * Bv[:, None, None, :]
        return 0.5 * xp.sum((out - a["Y"]) ** 2) / a["X"].shape[0]

    prepared = rg_model.diagonal_data(X, Y, 5)     # X-only arrays, once per training run
    out["diagonal head (R=5)"] = (lambda: rg_model.diag_loss_and_grads_unchecked(p, prepared),
                                  dict(p, X=X, Y=Y), diag_loss, list(rg_model.DIAG_KEYS),
                                  lambda: float(np.sum(rg_model.diag_loss_and_grads_unchecked(p, prepared)[0])))

    Xf, Yf, _, _ = rg_data.full_toy(0, 256, 8, 6)
    pf = rg_data.init_full(np.random.default_rng(1), 6, 6, 6, np.full(6, 0.5))

    def full_loss(xp, smax, a):
        M = a["W_K"] @ xp.swapaxes(a["W_Q"], -1, -2)
        Nm = a["W_V"] @ xp.swapaxes(a["W_O"], -1, -2)
        Z = xp.einsum("sia,rab,skb->rsik", a["X"], M, a["X"])
        out = xp.einsum("rsik,skb,rbc->rsic", smax(Z), a["X"], Nm)
        return 0.5 * xp.sum((out - a["Y"]) ** 2) / a["X"].shape[0]

    X1 = rg_model.augment(Xf)
    out["full attention head (R=6)"] = (lambda: rg_model.full_loss_and_grads_unchecked(pf, Xf, Yf, X1),
                                        dict(pf, X=Xf, Y=Yf), full_loss, list(rg_model.FULL_KEYS),
                                        lambda: float(np.sum(rg_model.full_loss_and_grads_unchecked(pf, Xf, Yf, X1)[0])))

    dcfg = ls_data.DataConfig()
    rng = np.random.default_rng(0)
    Xs, ys, _, _ = ls_data.sample(rng, 16, dcfg)
    ps = {k: v[None] for k, v in ls_train.init_params(rng, dcfg, ls_train.ModelConfig()).items()}

    def ls_loss(xp, smax, a):
        Qx, Kx, Vx = (a["X"] @ xp.swapaxes(a[k][0], 0, 1) for k in ("W_Q", "W_K", "W_V"))
        H = smax(Qx @ xp.swapaxes(Kx, -1, -2)) @ Vx
        P = H @ xp.swapaxes(a["W_O"][0], 0, 1)
        F = xp.sum(xp.maximum(P, 0 * P) * a["a"][0], axis=(1, 2)) / a["X"].shape[1]
        return xp.mean(xp.maximum(1 - a["y"] * F, 0 * F))

    out["softmax 1-layer transformer (B=16)"] = (
        lambda: ls_model.loss_and_grads_unchecked(ps, Xs[None], ys[None]), dict(ps, X=Xs, y=ys), ls_loss,
        list(ls_model.TRAINED), lambda: float(ls_model.loss_and_grads_unchecked(ps, Xs[None], ys[None])[0][0]))

    inst = sb_data.make_instance(rng, 10, 50, 2)
    pb = sb_train.uninformative_init(inst, 1)
    pb = {"V": pb["V"] + 0.1 * rng.standard_normal(pb["V"].shape), "A": pb["A"] + 0.01}
    xs, k, xo = sb_data.sample(rng, inst, 64)
    onehot_x = np.eye(10)[xs]                                       # (B, T, N), fixed input
    onehot_o = np.eye(10)[xo]

    def sb_loss(xp, smax, a):
        w = xp.swapaxes(a["A"][0][:, a["k"]], 0, 1)                  # (B, T): A[t, k_b]
        Xa = xp.einsum("btn,bt->bn", a["onehot_x"], w)
        f = Xa @ xp.swapaxes(a["V"][0], 0, 1)
        return 0.5 * xp.sum((a["onehot_o"] - f) ** 2) / f.shape[0]

    out["linear transformer, bigrams (B=64)"] = (
        lambda: sb_model.loss_and_grads_unchecked(pb, xs[None], k[None], xo[None]),
        dict(pb, k=k, onehot_x=onehot_x, onehot_o=onehot_o), sb_loss, ["V", "A"],
        lambda: float(sb_model.loss_and_grads_unchecked(pb, xs[None], k[None], xo[None])[0][0]))
    out.update(transformer_problems())
    return out


def public_problems():
    """The public, checked ``loss_and_grads`` of each paper's model at the papers' sizes, one run:
    ``name -> (numpy_call(inputs), draw(rng, kind) -> inputs, framework_loss(xp, inputs), wrt)``.

    Each call gets fresh inputs (a cycle of :data:`FRESH` draws) as NumPy arrays, as a student
    passes them; the frameworks convert them inside the timed call. ``kind`` is ``"random"``
    (every array drawn at random, parameters of order one) or ``"demo"`` (the demos' data and
    initialization).
    """
    from minitheory.lowrank_sparse import data as ls_data, model as ls_model, training as ls_train
    from minitheory.rank_growth import data as rg_data, model as rg_model
    from minitheory.sparse_bigrams import data as sb_data, model as sb_model, training as sb_train

    def diag_draw(rng, kind):
        if kind == "random":
            p = {k: rng.standard_normal(4) for k in rg_model.DIAG_KEYS}
            return dict(p, X=rng.standard_normal((256, 8, 4)), Y=rng.standard_normal((256, 8, 4)))
        X, Y = rg_data.diagonal_toy(int(rng.integers(1 << 30)), 256, 8, 4)
        p = rg_data.init_diagonal(rng, 4, [1e-2])
        return dict({k: v[0] for k, v in p.items()}, X=X, Y=Y)

    def diag_loss(xp, smax, a):
        A, Bv = a["w_K"] * a["w_Q"], a["w_V"] * a["w_O"]
        Z = xp.einsum("sij,j,skj->sik", a["X"], A, a["X"])
        out = xp.einsum("sik,skj->sij", smax(Z), a["X"]) * Bv
        return 0.5 * xp.sum((out - a["Y"]) ** 2) / a["X"].shape[0]

    dcfg, mcfg = ls_data.DataConfig(), ls_train.ModelConfig()

    def ls_draw(rng, kind):
        if kind == "random":
            d, m = dcfg.d, mcfg.m
            p = {k: rng.standard_normal((d, d)) / np.sqrt(d) for k in ("W_Q", "W_K", "W_V")}
            p.update(W_O=rng.standard_normal((m, d)) / np.sqrt(d),
                     a=rng.choice([-1.0, 1.0], (dcfg.L, m)) / np.sqrt(m))
            X, y = rng.standard_normal((16, dcfg.L, d)), rng.choice([-1.0, 1.0], 16)
        else:
            X, y, _, _ = ls_data.sample(rng, 16, dcfg)
            p = ls_train.init_params(rng, dcfg, mcfg)
        return dict(p, X=X, y=y)

    def ls_loss(xp, smax, a):
        Qx, Kx, Vx = (a["X"] @ a[k].T for k in ("W_Q", "W_K", "W_V"))
        H = smax(Qx @ xp.swapaxes(Kx, -1, -2)) @ Vx
        P = H @ a["W_O"].T
        F = xp.sum(xp.maximum(P, 0 * P) * a["a"], axis=(1, 2)) / a["X"].shape[1]
        return xp.mean(xp.maximum(1 - a["y"] * F, 0 * F))

    def sb_draw(rng, kind):
        N, T, B = 10, 50, 64
        if kind == "random":
            p = {"V": rng.standard_normal((N, N)), "A": rng.standard_normal((T, N))}
            return dict(p, xs=rng.integers(0, N, (B, T)), k=rng.integers(0, N, B),
                        xo=rng.integers(0, N, B))
        inst = sb_data.make_instance(rng, N, T, 2)
        p = sb_train.uninformative_init(inst, 1)
        p = {"V": p["V"][0] + 0.1 * rng.standard_normal((N, N)), "A": p["A"][0] + 0.01}
        xs, k, xo = sb_data.sample(rng, inst, B)
        return dict(p, xs=xs, k=k, xo=xo)

    def sb_loss(xp, smax, a):
        N = a["V"].shape[0]
        hot = lambda idx: idx[..., None] == xp.arange(N)  # noqa: E731  (bool one-hot)
        w = xp.swapaxes(a["A"][:, a["k"]], 0, 1)                             # (B, T): A[t, k_b]
        f = xp.sum(hot(a["xs"]) * w[..., None], axis=1) @ a["V"].T           # (B, N)
        g = xp.where(hot(a["xo"]), f - 1.0, f)                              # f - e_{x_o}
        return 0.5 * xp.sum(g ** 2) / f.shape[0]

    return {
        "diagonal head (N=256, n=8, d=4)": (
            lambda a: rg_model.loss_and_grads({k: a[k] for k in rg_model.DIAG_KEYS}, a["X"], a["Y"]),
            diag_draw, diag_loss, list(rg_model.DIAG_KEYS)),
        "softmax 1-layer transformer (B=16, L=20, d=20, m=64)": (
            lambda a: ls_model.loss_and_grads({k: a[k] for k in ls_model.KEYS}, a["X"], a["y"]),
            ls_draw, ls_loss, list(ls_model.TRAINED)),
        "linear transformer, bigrams (B=64, T=50, N=10)": (
            lambda a: sb_model.loss_and_grads({"V": a["V"], "A": a["A"]}, a["xs"], a["k"], a["xo"]),
            sb_draw, sb_loss, ["V", "A"]),
    }


def transformer_problems():
    """The transformer of arXiv 2306.07042 v2, Sec. 5, at the demo sizes, against an idiomatic
    PyTorch model (``F.layer_norm``, ``F.scaled_dot_product_attention``, ``F.gelu(tanh)``,
    ``F.cross_entropy``); torch only (the 6th entry names the frameworks).

    The NumPy vision model computes its last block for the class token only (the only row the
    head reads); the row "torch: class token only" gives PyTorch the same saving, the plain
    vision row runs PyTorch over every token as a standard ViT does.
    """
    from minitheory.transformer import model as tr

    out = {}
    cases = {"vision": (dict(task="vision", n_tokens=17, n_in=4, n_out=10), 64, False),
             "vision, torch: class token only": (dict(task="vision", n_tokens=17, n_in=4,
                                                      n_out=10), 64, True),
             "language": (dict(task="language", n_tokens=64, n_in=103, n_out=103), 16, False)}
    for task, (kw, B, prune) in cases.items():
        cfg = tr.TransformerConfig(**kw)
        rng = np.random.default_rng(0)
        params = tr.init_params(rng, cfg)
        if cfg.task == "vision":
            inputs = rng.standard_normal((B, cfg.n_tokens - 1, cfg.n_in))
            targets = rng.integers(0, cfg.n_out, B)
        else:
            inputs = rng.integers(0, cfg.n_in, (B, cfg.n_tokens))
            targets = rng.integers(0, cfg.n_out, (B, cfg.n_tokens))

        def torch_loss(xp, smax, a, cfg=cfg, prune=prune):
            F = xp.nn.functional
            d = cfg.d
            x_in, y = a["inputs"], a["targets"]
            if cfg.task == "vision":
                cls = a["cls"].expand(x_in.shape[0], 1, d)
                x = xp.cat([cls, x_in @ a["embed"]], dim=1) + a["pos"]
            else:
                x = a["embed"][x_in] + a["pos"]
            for layer in range(cfg.depth):
                p = lambda k: a[f"layer{layer}.{k}"]  # noqa: E731
                h = F.layer_norm(x, (d,), p("ln1_g"), p("ln1_b"), eps=1e-5)
                W_qkv = xp.cat([p("W_Q"), p("W_K"), p("W_V")], dim=0)          # (3H, d, d_h)
                q, k, v = xp.einsum("bnd,hde->bhne", h, W_qkv).chunk(3, dim=1)
                if prune and layer == cfg.depth - 1:                           # class token
                    q, x = q[:, :, :1], x[:, :1]
                att = F.scaled_dot_product_attention(q, k, v, is_causal=cfg.causal)
                x = x + xp.einsum("bhne,hde->bnd", att, p("W_O"))
                h = F.layer_norm(x, (d,), p("ln2_g"), p("ln2_b"), eps=1e-5)
                x = x + F.gelu(h @ p("W_1") + p("b_1"), approximate="tanh") @ p("W_2") + p("b_2")
            top = x[:, 0] if cfg.task == "vision" else x
            z = F.layer_norm(top, (d,), a["lnf_g"], a["lnf_b"], eps=1e-5) @ a["head"] + a["head_b"]
            return F.cross_entropy(z.reshape(-1, cfg.n_out), y.reshape(-1))

        fn = (lambda p=params, x=inputs, y=targets, c=cfg: tr.loss_and_grads_unchecked(p, x, y, c))
        name = f"pre-LN transformer, {task} (B={B}, n={cfg.n_tokens}, d=64, 4 layers)"
        out[name] = (fn, dict(params, inputs=inputs, targets=targets), torch_loss, list(params),
                     lambda fn=fn: float(fn()[0]), ("torch",))
        if not prune:
            out[name.replace("transformer,", "transformer + Adam step,")] = (
                adam_step(params, inputs, targets, cfg), dict(params, inputs=inputs, targets=targets),
                torch_loss, list(params), lambda fn=fn: float(fn()[0]), ("torch-adam",))
    return out


def adam_step(params, inputs, targets, cfg):
    """One training step of the NumPy transformer: loss and gradients, then Adam."""
    from minitheory.transformer import model as tr, training
    state = {"p": dict(params), "opt": training.adam_init(params)}

    def step():
        loss, g = tr.loss_and_grads_unchecked(state["p"], inputs, targets, cfg)
        state["p"], state["opt"] = training.adam_update(state["p"], g, state["opt"], 1e-4)
        return loss
    return step


def torch_runner(loss, arrays, wrt):
    import torch
    t = {k: torch.tensor(v) for k, v in arrays.items()}
    for key in wrt:
        t[key].requires_grad_(True)
    smax = lambda z: torch.softmax(z, dim=-1)  # noqa: E731

    def call():
        value = loss(torch, smax, t)
        grads = torch.autograd.grad(value, [t[key] for key in wrt])
        return value, grads
    return call, lambda: float(call()[0].detach())


def torch_adam_runner(loss, arrays, wrt):
    """One ``torch.optim.Adam`` step (its default implementation) after the backward pass."""
    import torch
    t = {k: torch.tensor(v) for k, v in arrays.items()}
    for key in wrt:
        t[key].requires_grad_(True)
    opt = torch.optim.Adam([t[key] for key in wrt], lr=1e-4)
    smax = lambda z: torch.softmax(z, dim=-1)  # noqa: E731

    def call():
        opt.zero_grad(set_to_none=True)
        value = loss(torch, smax, t)
        value.backward()
        opt.step()
        return value
    first = float(loss(torch, smax, t).detach())            # the loss before any step
    return call, lambda: first


def jax_runner(loss, arrays, wrt):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    fixed = {k: jnp.asarray(v) for k, v in arrays.items() if k not in wrt}
    params = {k: jnp.asarray(v) for k, v in arrays.items() if k in wrt}
    smax = lambda z: jax.nn.softmax(z, axis=-1)  # noqa: E731
    f = jax.jit(jax.value_and_grad(lambda p: loss(jnp, smax, {**fixed, **p})))

    def call():
        value, grads = f(params)
        jax.block_until_ready(grads)
        return value, grads
    return call, lambda: float(call()[0])


FRESH = 16    # input sets each public entry point cycles through (a new one every call)


def torch_public_runner(loss, wrt):
    import torch
    smax = lambda z: torch.softmax(z, dim=-1)  # noqa: E731

    def call(arrays):
        t = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        for key in wrt:
            t[key].requires_grad_(True)
        value = loss(torch, smax, t)
        return float(value.detach()), torch.autograd.grad(value, [t[key] for key in wrt])
    return call


def jax_public_runner(loss, wrt):
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    smax = lambda z: jax.nn.softmax(z, axis=-1)  # noqa: E731
    f = jax.jit(jax.value_and_grad(lambda p, fixed: loss(jnp, smax, {**fixed, **p})))

    def call(arrays):
        fixed = {k: v for k, v in arrays.items() if k not in wrt}
        value, grads = f({k: arrays[k] for k in wrt}, fixed)
        jax.block_until_ready(grads)
        return float(value), grads
    return call


RUNNERS = {"torch": (torch_runner, torch_public_runner), "jax": (jax_runner, jax_public_runner)}


def timed(fn) -> float:
    """Microseconds per call of ``fn``: one timing of ~0.2 s after a warm-up (the rounds give the
    repeats)."""
    return 1e6 * timeit(fn, 1)


def measure(fw: str, part: str, only: str) -> dict:
    """One round in this process, for the one framework ``fw`` (``"numpy"``, ``"torch"``,
    ``"jax"``): ``key -> {"us": us per call, "loss": the loss at the first inputs}``."""
    out = {}
    if part in ("public", "both"):
        # before tune_allocator: a student's process has only import minitheory's warm_heap
        for name, (np_call, draw, loss, wrt) in public_problems().items():
            if only not in name:
                continue
            for kind in ("random", "demo"):
                rng = np.random.default_rng(0)
                sets = [draw(rng, kind) for _ in range(FRESH)]
                call = np_call if fw == "numpy" else RUNNERS[fw][1](loss, wrt)
                fresh = itertools.cycle(sets)
                out[f"public | {name} | {kind}"] = {"loss": float(call(sets[0])[0]),
                                                    "us": timed(lambda: call(next(fresh)))}
    if part in ("cores", "both"):
        tune_allocator()
        for name, (np_fn, arrays, loss, wrt, np_value, *which) in problems().items():
            if only not in name:
                continue
            if fw == "numpy":
                call, value = np_fn, np_value
            elif which and f"{fw}-adam" in which[0]:
                call, value = torch_adam_runner(loss, arrays, wrt)
            elif which and fw not in which[0]:
                continue
            else:
                call, value = RUNNERS[fw][0](loss, arrays, wrt)
            v = value()
            first = call()                                  # the gradients at the first point
            entry = {"loss": v, "us": timed(call)}
            if isinstance(first, tuple):                    # (an Adam step returns the loss only)
                entry["grads"] = grad_digest(first[1], wrt)
            out[f"cores | {name}"] = entry
    return out


def grad_digest(grads, wrt) -> dict:
    """Each gradient projected on a fixed random direction (the same in every process), and the
    sum of the absolute terms (the rounding scale): ``key -> [<g, r_key>, sum |g r_key|]``.

    ``grads``: a dict by key (NumPy, JAX) or a tuple in the order of ``wrt`` (PyTorch)."""
    out = {}
    for i, key in enumerate(wrt):
        g = grads[key] if isinstance(grads, dict) else grads[i]
        g = np.asarray(g.detach().numpy() if hasattr(g, "detach") else g, dtype=np.float64)
        r = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(g.shape)
        out[key] = [float(np.sum(g * r)), float(np.sum(np.abs(g * r)))]
    return out


def rounds(frameworks, repeats: int, part: str, only: str) -> dict:
    """``repeats`` rounds, each framework in a fresh process of its own, in turn (the order
    rotating from round to round):
    ``fw -> [round results]``. One process per framework keeps their thread pools (OpenBLAS's,
    PyTorch's OpenMP) from spinning on the cores while the other is timed."""
    paths = [str(Path(__file__).resolve().parents[1])] + \
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    results = {fw: [] for fw in frameworks}
    for r in range(repeats):
        k = r % len(frameworks)                             # rotate the order: drift within a
        for fw in frameworks[k:] + frameworks[:k]:          # round biases no framework
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", fw, f"--part={part}",
                   f"--only={only}"]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"the {fw} worker failed:\n{done.stderr}")
            results[fw].append(json.loads(done.stdout))
        print(f"  round {r + 1} of {repeats} done", file=sys.stderr)
    return results


def summarize(results: dict) -> list:
    """Per model: NumPy's median time, each framework's median time and its ratio to NumPy's
    time round by round ``[min, median, max]``; losses checked to agree."""
    entries = []
    for key in results["numpy"][0]:
        np_us = np.array([rnd[key]["us"] for rnd in results["numpy"]])
        entry = {"key": key, "numpy": {"us": float(np.median(np_us))}}
        for fw, rnds in results.items():
            if fw == "numpy" or key not in rnds[0]:
                continue
            v_np, v_fw = results["numpy"][0][key]["loss"], rnds[0][key]["loss"]
            if not np.isclose(v_np, v_fw, rtol=1e-9, atol=1e-12):
                raise AssertionError(f"{fw} loss {v_fw} differs from NumPy {v_np} for {key}")
            g_np, g_fw = results["numpy"][0][key].get("grads"), rnds[0][key].get("grads")
            for k in (g_np.keys() & g_fw.keys()) if g_np and g_fw else ():
                (d_np, scale), d_fw = g_np[k], g_fw[k][0]
                if abs(d_np - d_fw) > 1e-9 * scale + 1e-300:
                    raise AssertionError(f"{fw} gradient of {k!r} differs from NumPy's for {key}: "
                                         f"projections {d_fw} and {d_np} (scale {scale})")
            us = np.array([rnd[key]["us"] for rnd in rnds])
            ratio = us / np_us
            entry[fw] = {"us": float(np.median(us)),
                         "ratio": [float(ratio.min()), float(np.median(ratio)), float(ratio.max())]}
        entries.append(entry)
    return entries


def _row(entry, frameworks):
    """Table cells: NumPy's time, then each framework's time and median ratio (its range)."""
    cells = [f"{entry['numpy']['us']:,.0f}"]
    for fw in frameworks:
        if fw not in entry:
            cells.append("-")
            continue
        lo, med, hi = entry[fw]["ratio"]
        cells.append(f"{entry[fw]['us']:,.0f} ({med:.2f}x, {lo:.2f}-{hi:.2f})")
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds (each framework timed once per round, in its own process)")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--only", default="", help="run only the models whose name contains this")
    parser.add_argument("--part", choices=("cores", "public", "both"), default="both",
                        help="time the public checked entry points on fresh inputs, the prepared "
                             "cores the training loops call, or both (default)")
    parser.add_argument("--worker", choices=("numpy", "torch", "jax"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        json.dump(measure(args.worker, args.part, args.only), sys.stdout)
        return 0
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.out is not None:
        if args.out.is_dir() or not args.out.parent.is_dir():
            parser.error(f"--out must be a file in an existing folder, got {args.out}")
        if not os.access(args.out.parent, os.W_OK) or (args.out.exists() and
                                                        not os.access(args.out, os.W_OK)):
            parser.error(f"--out: {args.out} cannot be written")
    names = [n for n in ({**public_problems(), **problems()} if args.part == "both" else
                         public_problems() if args.part == "public" else problems())
             if args.only in n]
    if not names:
        parser.error(f"--only {args.only!r} matches no model of --part {args.part}")
    frameworks = ["numpy"]
    for fw in RUNNERS:
        if importlib.util.find_spec(fw) is None:
            print(f"{fw} is not importable: skipped", file=sys.stderr)
        else:
            frameworks.append(fw)
    entries = summarize(rounds(frameworks, args.repeats, args.part, args.only))
    report = {"blas": blas_info(), "repeats": args.repeats, "results": entries}
    head = [f"{fw} us (median ratio, range)" for fw in frameworks[1:]]
    for part, title in (("public", "public loss_and_grads, checks included, fresh inputs every "
                                   "call (one run):"),
                        ("cores", "prepared cores, as the training loops call them:")):
        rows = [e["key"].split(" | ")[1:] + _row(e, frameworks[1:]) for e in entries
                if e["key"].startswith(part)]
        if rows:
            print(title)
            print(format_table(["model"] + (["inputs"] if part == "public" else []) +
                               ["NumPy us"] + head, rows))
    b = report["blas"]
    print(f"NumPy BLAS: {b['name']} {b['version']}, {b['threads']} thread(s); {args.repeats} "
          f"rounds; ratio = framework time / NumPy time in the same round (> 1: NumPy is faster)")
    return _save(args.out, report)


def _save(out, report) -> int:
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
