"""The reference transformer against an independent scalar oracle and finite differences.

The oracle evaluates the definitions one sample, one head, one (query, key) pair at a time with
Python floats; the reference is vectorized with einsum. Planted wrong forwards (softmax over the
query axis, the causal mask off or transposed, LayerNorm without its mean, no 1/sqrt(d_h)) must
be rejected by the same comparison, so the comparison is known to be able to fail. Each layer's
backward is also checked on its own against central differences.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.transformer import model, reference
from tests.strategies import seeds


# --------------------------------------------------------------------------------------------
# The oracle: per sample, per head, per position, scalar arithmetic
# --------------------------------------------------------------------------------------------
def _ln_token(x, g, b):
    d = len(x)
    mu = sum(x) / d
    var = sum((xi - mu) ** 2 for xi in x) / d
    return [g[i] * (x[i] - mu) / math.sqrt(var + reference.LN_EPS) + b[i] for i in range(d)]


def _matvec(v, W):
    """sum_i v_i W[i, j] for every j, in Python floats."""
    return [sum(v[i] * W[i, j] for i in range(len(v))) for j in range(W.shape[1])]


def _act(u, name):
    if name == "relu":
        return max(u, 0.0)
    return 0.5 * u * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def oracle_logits(params, inputs, cfg):
    """Logits by the scalar definitions: vision ``(B, n_out)``, language ``(B, n, n_out)``."""
    out = []
    d, n = cfg.d, cfg.n_tokens
    for b in range(inputs.shape[0]):
        if cfg.task == "vision":
            X = [list(params["cls"])] + [_matvec(list(inputs[b, t]), params["embed"])
                                         for t in range(n - 1)]
        else:
            X = [list(params["embed"][inputs[b, t]]) for t in range(n)]
        X = [[X[t][i] + params["pos"][t, i] for i in range(d)] for t in range(n)]
        for l in range(cfg.depth):
            P = lambda k: params[f"layer{l}.{k}"]  # noqa: E731
            Y = [_ln_token(X[t], P("ln1_g"), P("ln1_b")) for t in range(n)]
            att = [[0.0] * d for _ in range(n)]
            for h in range(cfg.heads):
                q = [_matvec(Y[t], P("W_Q")[h]) for t in range(n)]
                k = [_matvec(Y[t], P("W_K")[h]) for t in range(n)]
                v = [_matvec(Y[t], P("W_V")[h]) for t in range(n)]
                for i in range(n):
                    keys = [j for j in range(n) if not (cfg.causal and j > i)]
                    s = {j: sum(q[i][e] * k[j][e] for e in range(cfg.d_h)) / math.sqrt(cfg.d_h)
                         for j in keys}
                    top = max(s.values())
                    Z = sum(math.exp(s[j] - top) for j in keys)
                    w = {j: math.exp(s[j] - top) / Z for j in keys}     # masked j: weight 0
                    z = [sum(w[j] * v[j][e] for j in keys) for e in range(cfg.d_h)]
                    for c in range(d):                                 # + W_O^h z
                        att[i][c] += sum(P("W_O")[h][c, e] * z[e] for e in range(cfg.d_h))
            X = [[X[t][c] + att[t][c] for c in range(d)] for t in range(n)]
            Y = [_ln_token(X[t], P("ln2_g"), P("ln2_b")) for t in range(n)]
            for t in range(n):
                u = _matvec(Y[t], P("W_1"))
                a = [_act(u[j] + P("b_1")[j], cfg.activation) for j in range(cfg.d_mlp)]
                m = _matvec(a, P("W_2"))
                X[t] = [X[t][c] + m[c] + P("b_2")[c] for c in range(d)]
        rows = [0] if cfg.task == "vision" else range(n)
        z = []
        for t in rows:
            y = _ln_token(X[t], params["lnf_g"], params["lnf_b"])
            z.append([v + params["head_b"][c] for c, v in enumerate(_matvec(y, params["head"]))])
        out.append(z[0] if cfg.task == "vision" else z)
    return np.array(out)


def _case(seed, task, n_tokens, n_in, n_out, B, **kw):
    cfg = model.TransformerConfig(task=task, n_tokens=n_tokens, n_in=n_in, n_out=n_out, **kw)
    rng = np.random.default_rng(seed)
    params = model.init_params(rng, cfg)
    if task == "vision":
        inputs = rng.standard_normal((B, n_tokens - 1, n_in))
        targets = rng.integers(0, n_out, B)
    else:
        inputs = rng.integers(0, n_in, (B, n_tokens))
        targets = rng.integers(0, n_out, (B, n_tokens))
    return cfg, params, inputs, targets


def _perturb(rng, params, size=0.3):
    """Move LayerNorm gains and biases off 1 and 0, so that a wrong use of them shows."""
    return {k: v + size * rng.standard_normal(v.shape) if k.endswith(("_g", "_b")) else v
            for k, v in params.items()}


@st.composite
def configs(draw):
    task = draw(st.sampled_from(["vision", "language"]))
    n_tokens = draw(st.integers(2 if task == "vision" else 1, 4))
    vocab = draw(st.integers(2, 5))
    return dict(seed=draw(seeds), task=task, n_tokens=n_tokens,
                n_in=draw(st.integers(1, 4)) if task == "vision" else vocab,
                n_out=draw(st.integers(2, 4)) if task == "vision" else vocab,
                B=draw(st.integers(1, 2)), d=draw(st.integers(2, 5)),
                heads=draw(st.integers(1, 3)), d_h=draw(st.integers(1, 3)),
                depth=draw(st.integers(1, 2)), d_mlp=draw(st.integers(1, 5)),
                activation=draw(st.sampled_from(["gelu", "relu"])),
                causal=draw(st.sampled_from([None, True, False])))


@settings(max_examples=15)
@given(configs())
def test_reference_forward_matches_scalar_oracle(case):
    # the vectorized forward against the per-sample, per-head, per-(query, key) definitions
    cfg, params, inputs, _ = _case(**case)
    params = _perturb(np.random.default_rng(case["seed"] + 1), params)
    np.testing.assert_allclose(reference.forward(params, inputs, cfg)[0],
                               oracle_logits(params, inputs, cfg), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# A test of the test: planted wrong forwards are rejected by the oracle comparison
# --------------------------------------------------------------------------------------------
def _softmax_query_axis(s):
    e = np.exp(s - s.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


def _ln_no_mean(x, g, b):
    inv_std = 1.0 / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + reference.LN_EPS)
    x_hat = x * inv_std
    return g * x_hat + b, (x_hat, inv_std, g)


_ATTENTION = reference.attention


def _attention_unscaled(y, W_Q, W_K, W_V, W_O, causal):
    d_h = W_Q.shape[-1]
    return _ATTENTION(y, W_Q * np.sqrt(d_h), W_K, W_V, W_O, causal)  # cancels 1/sqrt(d_h)


PLANTS = {
    "softmax over the query axis": ("softmax", _softmax_query_axis),
    "causal mask off": ("causal_mask", lambda n: np.ones((n, n), dtype=bool)),
    "causal mask transposed": ("causal_mask", lambda n: np.triu(np.ones((n, n), dtype=bool))),
    "LayerNorm without its mean": ("layer_norm", _ln_no_mean),
    "attention without 1/sqrt(d_h)": ("attention", _attention_unscaled),
}


@pytest.mark.parametrize("plant", list(PLANTS))
@pytest.mark.parametrize("task", ["vision", "language"])
def test_oracle_rejects_planted_wrong_forwards(plant, task, monkeypatch):
    kw = dict(n_tokens=4, n_in=3, n_out=3) if task == "vision" else dict(n_tokens=4, n_in=5, n_out=5)
    # a causal vision model's class token (position 0) sees only itself: mask plants need the
    # mask on, the others need the class token to attend to the patches
    causal = PLANTS[plant][0] == "causal_mask" or task == "language"
    cfg, params, inputs, _ = _case(7, task, B=2, d=4, heads=2, d_h=2, depth=1, d_mlp=3,
                                   causal=causal, **kw)
    params = _perturb(np.random.default_rng(8), params, size=1.0)
    expected = oracle_logits(params, inputs, cfg)
    np.testing.assert_allclose(reference.forward(params, inputs, cfg)[0], expected,
                               rtol=1e-10, atol=1e-12)                # the honest forward passes
    monkeypatch.setattr(reference, *PLANTS[plant])
    wrong = reference.forward(params, inputs, cfg)[0]
    assert np.max(np.abs(wrong - expected)) > 1e-3, plant


# --------------------------------------------------------------------------------------------
# Each layer's backward against central differences (float64, random cotangents)
# --------------------------------------------------------------------------------------------
def _vjp_check(fwd, bwd, arrays, rng, **kw):
    """Check ``bwd(cot, cache)`` (cotangents of ``arrays`` in order) through the scalar
    ``<cot, fwd(*arrays)>`` for a random cotangent ``cot``."""
    names = list(arrays)
    out, _ = fwd(*arrays.values())
    cot = rng.standard_normal(out.shape)

    def f(p):
        y, cache = fwd(*(p[k] for k in names))
        return float(np.sum(cot * y)), dict(zip(names, bwd(cot, cache)))
    check_gradients(f, arrays, rng=rng, full_max=40, **kw)


@settings(max_examples=10)
@given(seeds, st.integers(1, 3), st.integers(2, 6))
def test_layer_norm_backward(seed, N, d):
    rng = np.random.default_rng(seed)
    _vjp_check(reference.layer_norm, reference.layer_norm_backward,
               {"x": rng.standard_normal((N, 2, d)), "g": rng.standard_normal(d),
                "b": rng.standard_normal(d)}, rng)


@settings(max_examples=10)
@given(seeds, st.sampled_from(["gelu", "relu"]))
def test_activation_backward(seed, name):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((3, 5)) * 2
    u += np.sign(u) * 0.1                                   # away from the ReLU kink
    fwd, bwd = reference.ACTIVATIONS[name]
    _vjp_check(lambda x: fwd(x), lambda c, cache: (bwd(c, cache),), {"u": u}, rng)


@settings(max_examples=10)
@given(seeds, st.integers(1, 2), st.integers(1, 4), st.integers(2, 4), st.integers(1, 3),
       st.integers(1, 3), st.booleans())
def test_attention_backward(seed, B, n, d, H, d_h, causal):
    rng = np.random.default_rng(seed)
    arrays = {"y": rng.standard_normal((B, n, d))}
    arrays.update({k: rng.standard_normal((H, d, d_h)) for k in ("W_Q", "W_K", "W_V", "W_O")})
    _vjp_check(lambda *a: reference.attention(*a, causal), reference.attention_backward,
               arrays, rng)


@settings(max_examples=10)
@given(seeds, st.integers(2, 4), st.integers(1, 5))
def test_mlp_backward_gelu(seed, d, m):
    rng = np.random.default_rng(seed)
    arrays = {"y": rng.standard_normal((2, 3, d)), "W_1": rng.standard_normal((d, m)),
              "b_1": rng.standard_normal(m), "W_2": rng.standard_normal((m, d)),
              "b_2": rng.standard_normal(d)}
    _vjp_check(lambda *a: reference.mlp(*a, "gelu"), reference.mlp_backward, arrays, rng)


def test_mlp_backward_relu_skips_only_kinks():
    rng = np.random.default_rng(3)
    arrays = {"y": rng.standard_normal((2, 3, 4)), "W_1": rng.standard_normal((4, 5)),
              "b_1": rng.standard_normal(5), "W_2": rng.standard_normal((5, 4)),
              "b_2": rng.standard_normal(4)}
    pattern = lambda p: p["y"] @ p["W_1"] + p["b_1"] > 0  # noqa: E731
    names = list(arrays)
    cot = rng.standard_normal((2, 3, 4))

    def f(p):
        out, cache = reference.mlp(*(p[k] for k in names), "relu")
        return float(np.sum(cot * out)), dict(zip(names, reference.mlp_backward(cot, cache)))
    report = check_gradients(f, arrays, rng=rng, full_max=40, pattern=pattern)
    assert sum(report.n_compared.values()) > 50


@settings(max_examples=10)
@given(seeds, st.integers(1, 3), st.integers(2, 4), st.integers(1, 3), st.integers(2, 4))
def test_embedding_backward(seed, B, n, p, d):
    rng = np.random.default_rng(seed)
    patches = rng.standard_normal((B, n - 1, p))
    _vjp_check(lambda *a: reference.embed_vision(patches, *a), reference.embed_vision_backward,
               {"embed": rng.standard_normal((p, d)), "cls": rng.standard_normal(d),
                "pos": rng.standard_normal((n, d))}, rng)
    ids = rng.integers(0, 3, (B, n))                        # 3 ids over B n slots: repeats
    fwd = lambda embed, pos: reference.embed_language(ids, embed, pos)  # noqa: E731
    _vjp_check(fwd, reference.embed_language_backward,
               {"embed": rng.standard_normal((3, d)), "pos": rng.standard_normal((n, d))}, rng)


@settings(max_examples=10)
@given(seeds, st.integers(1, 4), st.integers(2, 5))   # C = 1: the loss is flat
def test_cross_entropy_gradient_and_value(seed, N, C):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, (N, 2))
    check_gradients(lambda p: (reference.cross_entropy(p["z"], y)[0],
                               {"z": reference.cross_entropy(p["z"], y)[1]}),
                    {"z": 3 * rng.standard_normal((N, 2, C))}, rng=rng, full_max=40)
    # a uniform prediction costs log C nats, whatever the targets
    assert np.isclose(reference.cross_entropy(np.full((N, C), 2.5), y[:, 0])[0], np.log(C))
    # huge logits stay finite (the row max is subtracted)
    z = np.zeros((N, C))
    z[np.arange(N), y[:, 0]] = 1e4
    loss, dz = reference.cross_entropy(z, y[:, 0])
    assert loss == 0.0 and np.all(np.isfinite(dz))
