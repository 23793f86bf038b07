"""Benchmark the training cores on this machine (NumPy only; not a test).

    python -m minitheory.bench [--repeats 5] [--skip-demos] [--out bench.json]

Measures, in one run:

- the float64 matrix-multiply rate of a large ``@`` (the reference ceiling);
- for each model, at the paper's default size and at a large one: microseconds per
  ``loss_and_grads`` and per full training step (median of ``--repeats`` timings, each timing
  averaging enough calls to last ~0.2 s), the achieved GFLOP/s from an analytic FLOP count,
  and that as a fraction of the matmul rate; next to it, the rate NumPy's ``@`` itself reaches
  on the shapes of that model's matrix products (:func:`products_rate`), as a fraction of the
  same matmul rate;
- the speed-up of training 16 runs on the run axis over 16 runs one after another;
- the peak resident memory of the process (its largest case is the N = 500, T = 100000
  population step) and the wall time of every default demo (in subprocesses).

FLOP counts are the multiply-adds of the forward and backward formulas (2 per multiply-add),
plus one per element for elementwise work; they are stated next to each model below.
"""
from __future__ import annotations

import argparse
import json
import os
import pkgutil
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from . import demos
from .allocator import tune_allocator


def demo_names() -> list[str]:
    """The demos: the public modules of :mod:`minitheory.demos` (each runs with ``-m``)."""
    return sorted(m.name for m in pkgutil.iter_modules(demos.__path__)
                  if not m.name.startswith("_"))


def format_table(headers: list[str], rows: list[list]) -> str:
    """Rows of strings as a plain-text table, right-aligned under ``headers``."""
    cols = list(zip(headers, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line("-" * w for w in widths)] + [line(r) for r in rows])


def blas_info() -> dict:
    """The BLAS NumPy was built with (``numpy.show_config``) and the threads it uses now.

    The thread count is asked from the loaded OpenBLAS itself (its ``*get_num_threads*``
    function, through ``ctypes``) when it can be found in the process's memory map; otherwise
    it is ``None`` and the ``*_NUM_THREADS`` environment variables are recorded instead.
    """
    import ctypes
    import re
    info = {"name": None, "version": None, "threads": None,
            "env": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info.update(name=blas.get("name"), version=blas.get("version"))
    except (TypeError, KeyError, AttributeError):
        pass
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return info
    for lib in sorted(set(re.findall(r"(/\S*openblas\S*\.so[.\d]*)", maps))):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                       "openblas_get_num_threads"):
            fn = getattr(handle, symbol, None)
            if fn is not None:
                info.update(threads=int(fn()), library=lib)
                return info
    return info


def timeit(fn, repeats: int, min_time: float = 0.2) -> float:
    """Median over ``repeats`` of the mean seconds per call (each timing lasts >= ``min_time``)."""
    fn()                                                    # warm up (allocations, caches)
    t0 = time.perf_counter()
    fn()
    n = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times))


def matmul_rate(repeats: int, n: int = 2048) -> float:
    """GFLOP/s of ``(n, n) @ (n, n)`` in float64: ``2 n^3`` flops."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    return 2 * n**3 / timeit(lambda: a @ b, repeats) / 1e9


def products_rate(products, repeats: int) -> float:
    """GFLOP/s of NumPy's ``@`` on a model's own matrix-product shapes: total flops over total
    time, each ``(shape_a, shape_b)`` timed on random arrays (``nan`` for an empty list).

    Stacks of small matrices and inner dimensions of 4-20 run far below the large-``@`` rate; a
    step made of such products cannot beat them, so this is the ceiling that step can reach.
    """
    if not products:
        return float("nan")
    rng = np.random.default_rng(0)
    flops = seconds = 0.0
    for sa, sb in products:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        flops += 2 * np.prod(np.broadcast_shapes(sa[:-2], sb[:-2])) * sa[-2] * sa[-1] * sb[-1]
        seconds += timeit(lambda a=a, b=b: a @ b, repeats, min_time=0.05)
    return flops / seconds / 1e9


# --------------------------------------------------------------------------------------------
# One case per (model, size): a loss_and_grads closure, a training-step closure, a FLOP count,
# the shapes of the matrix products in one loss_and_grads call, and the reference twin of the
# loss_and_grads closure (of the step for the population, or None) on the same inputs
# --------------------------------------------------------------------------------------------
class Case(NamedTuple):
    """One benchmark case; ``lag`` is the fast ``loss_and_grads`` closure the training loop calls."""
    lag: Callable
    step: Callable
    flops: float
    products: list
    reference: Callable | None
    reference_of: str = "lag"          # which closure the reference twin computes


def case_diagonal(R: int):
    """Diagonal head, the toy of the rank-growth paper (N=256, n=8, d=4), ``R`` init scales."""
    from .rank_growth import data, model, reference
    X, Y = data.diagonal_toy(0, 256, 8, 4)
    p = data.init_diagonal(np.random.default_rng(1), 4, np.full(R, 0.5))
    eta = 0.02
    prepared = model.diagonal_data(X, Y, R)                 # once per run, as train_diagonal does

    def step():
        _, g = model.diag_loss_and_grads_unchecked(p, prepared)
        for k in p:
            p[k] -= eta * g[k]
    Ns, n, d = X.shape
    # forward: XM, Z, SX, out (2 flops per multiply-add); backward: twice the forward
    fwd = 2 * Ns * n * (d * d + n * d + n * d + d * d) + 5 * Ns * n * n
    products = [((Ns, n, d), (Ns, d, R * n)), ((Ns, d + 1, n), (Ns, n, R * n)),
                ((Ns, n, d + 1), (Ns, d + 1, R * n)), ((Ns, d, n), (Ns, n, R * n))]
    return Case(lambda: model.diag_loss_and_grads_unchecked(p, prepared), step, 3 * fwd * R,
                products, lambda: reference.loss_and_grads(p, X, Y))


def case_full(R: int):
    """Full attention head, the non-diagonal toy (N=256, n=8, d=6), ``R`` init scales."""
    from .rank_growth import data, model, reference
    X, Y, _, _ = data.full_toy(0, 256, 8, 6)
    p = data.init_full(np.random.default_rng(1), 6, 6, 6, np.full(R, 0.5))
    X1 = model.augment(X)                                   # once per run, as train_full does

    def step():
        _, g = model.full_loss_and_grads_unchecked(p, X, Y, X1)
        for k in p:
            p[k] -= 0.02 * g[k]
    Ns, n, d = X.shape
    fwd = 2 * Ns * n * (d * d + n * d + n * d + d * d) + 5 * Ns * n * n
    products = [((Ns * n, d), (d, R * d)), ((Ns, n * R, d), (Ns, d, n)),
                ((Ns, n * R, n), (Ns, n, d)), ((R, Ns * n, d), (R, d, d)),
                ((R, d, Ns * n), (R, Ns * n, d)), ((R, Ns * n, d), (R, d, d)),
                ((Ns, n * R, d + 1), (Ns, d + 1, n)), ((Ns, n * R, n), (Ns, n, d)),
                ((d, Ns * n), (Ns * n, R * d))]
    return Case(lambda: model.full_loss_and_grads_unchecked(p, X, Y, X1), step, 3 * fwd * R,
                products, lambda: reference.full_loss_and_grads(p, X, Y))


def case_softmax_transformer(B: int):
    """One-layer softmax transformer of the low-rank/sparse paper (L=20, d=20, m=64), batch B."""
    from .lowrank_sparse import data, model, reference, training
    dcfg = data.DataConfig()
    rng = np.random.default_rng(0)
    X, y, _, _ = data.sample(rng, B, dcfg)
    p = {k: v[None] for k, v in training.init_params(rng, dcfg, training.ModelConfig()).items()}
    Xr, yr = X[None], y[None]

    def step():
        _, g = model.loss_and_grads_unchecked(p, Xr, yr)
        for k in g:
            p[k] -= 3.0 * g[k]
    L, d, m = dcfg.L, dcfg.d, 64
    fwd = 2 * B * L * (3 * d * d + L * d + L * d + d * m) + 5 * B * L * L
    products = [((B * L, d), (d, 3 * d)), ((B, L, d), (B, d, L)), ((B, L, L), (B, L, d)),
                ((B * L, d), (d, m)), ((B, L * m), (L * m, 1)), ((B * L, m), (m, d)),
                ((B, L, d), (B, d, L))] + [((B, L, L), (B, L, d))] * 3 + \
        [((3 * d, B * L), (B * L, d)), ((m, B * L), (B * L, d))]
    return Case(lambda: model.loss_and_grads_unchecked(p, Xr, yr), step, 3 * fwd, products,
                lambda: reference.loss_and_grads_unchecked(p, Xr, yr))


def case_linear_bigram(B: int):
    """Linear transformer on SCB (N=10, T=50), batch B, with the sampling of a training step."""
    from .sparse_bigrams import data, model, reference, training
    rng = np.random.default_rng(0)
    inst = data.make_instance(rng, 10, 50, 2)
    p = training.uninformative_init(inst, 1)
    xs, k, xo = (a[None] for a in data.sample(rng, inst, B))

    def step():
        b = data.sample(rng, inst, B)
        _, g = model.loss_and_grads_unchecked(p, *(a[None] for a in b))
        p["V"] -= 0.03 * g["V"] / inst.mu
        p["A"] -= 0.03 * g["A"] / inst.mu
    N, T = inst.N, inst.T
    # histogram B*T, f and g_V 2*B*N*N each, r@V 2*B*N*N, one-hot product 2*B*T*N
    flops = B * T + 3 * 2 * B * N * N + 2 * B * T * N
    return Case(lambda: model.loss_and_grads_unchecked(p, xs, k, xo), step, flops, [],
                lambda: reference.loss_and_grads(p, xs, k, xo))


def case_population(N: int, T: int = 100_000):
    """Large-T population step (two-stage, stage 2, noisy), one run, N tokens."""
    from .sparse_bigrams import population as pop
    rng = np.random.default_rng(0)
    inst = pop.make_large_instance(rng, N, T, 2)
    d = pop.defaults_for(N)
    s = pop.Schedule(eta_A=d["eta_A"], B1=d["B2"], B2=d["B2"], lam=d["lam"], tau=0)
    V, A = np.outer(inst.mu, np.ones(N)), np.full((T, N), 1.0 / T)
    G, Xi = np.empty((T, N)), np.empty((T, N))
    noise = pop.NoiseSource(rng)

    def grads():
        return pop.preconditioned_grads_into(G, V, A, pop.column_stats(A, inst.q), inst)

    def step():                                             # as in population.simulate
        Xi_mean = noise.fill(Xi)
        pop._step(s, V, A, 1, pop.column_stats(A, inst.q), inst, G, Xi, Xi_mean,
                  rng.standard_normal((N, N)))
    # per T x N entry: stats 3, gradient 3, update ~10 elementwise flops; O(N^2) parts small
    return Case(grads, step, 16 * T * N + 20 * N * N, [],
                reference_step(s, V, A, inst, Xi, noise) if N <= 100 else None, "step")


def reference_step(s, V, A, inst, Xi, noise):
    """:func:`.sparse_bigrams.reference.large_t_step` on the same state (dense ``Q*``; its six
    ``T x N`` temporaries would need 2.4 GB at N = 500, so the bench runs it at N = 100 only),
    timed against the fast step (``step``) rather than the gradients."""
    from .sparse_bigrams import data, population as pop, reference
    dense = data.check_instance(inst.P, inst.mu, inst.q.dense())
    Xi_V = np.random.default_rng(1).standard_normal(V.shape)

    def step():
        noise.fill(Xi)
        return reference.large_t_step(s, V, A, 1, dense, Xi, Xi_V, sigma_V=pop.SIGMA_V,
                                      sigma_A_times_sqrt_N=pop.SIGMA_A_TIMES_SQRT_N)
    return step


def case_transformer_adam(task: str):
    """Pre-LN transformer of the rank-growth demo (d=64, 4 heads of 16, 4 layers, MLP 128), one
    Adam step on a minibatch of the demo's size: vision 64 digits in 2x2 patches (17 tokens),
    language 16 windows of 64 characters (vocabulary 103)."""
    from .transformer import model, reference, training
    rng = np.random.default_rng(0)
    if task == "vision":
        B, n, V = 64, 17, 10
        cfg = model.TransformerConfig(task="vision", n_tokens=n, n_in=4, n_out=V)
        x, y = rng.random((B, n - 1, 4)), rng.integers(0, V, B)
    else:
        B, n, V = 16, 64, 103
        cfg = model.TransformerConfig(task="language", n_tokens=n, n_in=V, n_out=V)
        x, y = rng.integers(0, V, (B, n)), rng.integers(0, V, (B, n))
    state = {"p": model.init_params(rng, cfg)}
    state["opt"] = training.adam_init(state["p"])

    def step():
        _, g = model.loss_and_grads_unchecked(state["p"], x, y, cfg)
        state["p"], state["opt"] = training.adam_update(state["p"], g, state["opt"], 1e-4)
    d, H, dh, m = cfg.d, cfg.heads, cfg.d_h, cfg.d_mlp
    # per token and layer: Q, K, V and O maps, scores and mixing, the MLP; then the head
    per_token = cfg.depth * 2 * (4 * d * H * dh + 2 * n * H * dh + 2 * d * m)
    fwd = B * n * per_token + 2 * (B if task == "vision" else B * n) * d * V
    return Case(lambda: model.loss_and_grads_unchecked(state["p"], x, y, cfg), step, 3 * fwd, [],
                lambda: reference.loss_and_grads_unchecked(state["p"], x, y, cfg))


CASES = [
    ("diagonal head", "R=5 (paper)", lambda: case_diagonal(5)),
    ("diagonal head", "R=64", lambda: case_diagonal(64)),
    ("full attention head", "R=6 (paper)", lambda: case_full(6)),
    ("full attention head", "R=64", lambda: case_full(64)),
    ("softmax 1-layer transformer", "B=16 (paper)", lambda: case_softmax_transformer(16)),
    ("softmax 1-layer transformer", "B=1024", lambda: case_softmax_transformer(1024)),
    ("linear transformer, bigrams", "B=64 (paper)", lambda: case_linear_bigram(64)),
    ("linear transformer, bigrams", "B=1024", lambda: case_linear_bigram(1024)),
    ("large-T population step", "N=100, T=1e5", lambda: case_population(100)),
    ("large-T population step", "N=500, T=1e5", lambda: case_population(500)),
    ("transformer + Adam, digits", "B=64 (demo)", lambda: case_transformer_adam("vision")),
    ("transformer + Adam, characters", "B=16 (demo)", lambda: case_transformer_adam("language")),
]


def run_axis_speedup(repeats: int, R: int = 16) -> dict:
    """Seconds per run of a diagonal-head GD step: R runs on the run axis vs one at a time."""
    batched, single = case_diagonal(R).step, case_diagonal(1).step
    t_batched = timeit(batched, repeats) / R
    t_single = timeit(single, repeats)
    return {"runs": R, "us_per_run_batched": 1e6 * t_batched,
            "us_per_run_sequential": 1e6 * t_single, "speedup": t_single / t_batched}


def demo_times(out: Path) -> dict:
    """Wall time of each default demo, run as ``python -m minitheory.demos.NAME``."""
    times = {}
    for name in demo_names():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"minitheory.demos.{name}", "--out",
                               str(out / name)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        times[name] = time.perf_counter() - t0 if proc.returncode == 0 else float("nan")
        status = f"{times[name]:.1f} s" if proc.returncode == 0 else \
            f"FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        print(f"  demo {name}: {status}", file=sys.stderr)
    return times


def main(argv=None) -> int:
    """Command-line entry: measure, print the table, optionally write JSON; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m minitheory.bench", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per measurement (median)")
    parser.add_argument("--skip-demos", action="store_true", help="do not time the demos")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    tune_allocator()
    blas = blas_info()
    print(f"BLAS: {blas['name']} {blas['version']}, {blas['threads']} thread(s)", file=sys.stderr)
    peak = matmul_rate(args.repeats)
    print(f"float64 matmul (2048^3): {peak:.1f} GFLOP/s", file=sys.stderr)
    run_axis = run_axis_speedup(args.repeats)      # before the 400 MB cases disturb the caches
    rows, results = [], {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                     "numpy": np.__version__, "blas": blas},
                         "matmul_gflops": peak,
                         "cases": []}
    slower = []
    for model_name, size, make in CASES:
        case = make()
        t_lag, t_step = timeit(case.lag, args.repeats), timeit(case.step, args.repeats)
        gflops, ceiling = case.flops / t_lag / 1e9, products_rate(case.products, args.repeats)
        gain = float("nan")
        if case.reference is not None:
            t_fast = t_lag if case.reference_of == "lag" else t_step
            gain = timeit(case.reference, max(1, args.repeats // 2)) / t_fast
            if gain < 1.0:
                slower.append(f"{model_name} {size} ({gain:.2f}x)")
        results["cases"].append({"model": model_name, "size": size, "us_loss_and_grads": 1e6 * t_lag,
                                 "us_train_step": 1e6 * t_step, "gflops": gflops,
                                 "fraction_of_matmul": gflops / peak, "flops": case.flops,
                                 "products_gflops": ceiling,
                                 "products_fraction_of_matmul": ceiling / peak,
                                 "loss_and_grads_over_products_rate": gflops / ceiling,
                                 "gain_over_reference": gain,
                                 "reference_of": case.reference_of})
        rows.append([model_name, size, f"{1e6 * t_lag:,.0f}", f"{1e6 * t_step:,.0f}",
                     f"{gflops:.2f}", f"{100 * gflops / peak:.1f}%",
                     "-" if np.isnan(ceiling) else f"{100 * ceiling / peak:.0f}%",
                     "-" if np.isnan(ceiling) else f"{100 * gflops / ceiling:.0f}%",
                     "-" if np.isnan(gain) else f"{gain:.1f}x"])
        print(f"  {model_name} {size}: {1e6 * t_lag:,.0f} us", file=sys.stderr)
        del case
    results["fast_twins_slower_than_reference"] = slower
    results["run_axis"] = run_axis
    results["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if not args.skip_demos:
        with tempfile.TemporaryDirectory() as tmp:
            results["demo_seconds"] = demo_times(Path(tmp))
    print(format_table(["model", "size", "us / loss_and_grads", "us / train step", "GFLOP/s",
                        "of matmul", "its products' @", "lag / products' @", "vs reference"],
                       rows))
    ra = results["run_axis"]
    print(f"\nBLAS {blas['name']} {blas['version']} with {blas['threads']} thread(s) on "
          f"{os.cpu_count()} CPUs; matmul ceiling: {peak:.1f} GFLOP/s; run axis at {ra['runs']} runs: "
          f"{ra['us_per_run_batched']:.0f} us per run batched vs {ra['us_per_run_sequential']:.0f} "
          f"us one at a time ({ra['speedup']:.1f}x); peak RSS {results['peak_rss_GB']:.2f} GB")
    print("lag / products' @: loss_and_grads's FLOP rate over the rate of @ on its own product "
          "shapes")
    print("vs reference: the reference twin's time / the fast twin's, at these BLAS threads "
          "(the population: whole steps, N = 100 only); " +
          (f"SLOWER THAN THE REFERENCE: {', '.join(slower)}" if slower else
           "every fast twin is faster"))
    if "demo_seconds" in results:
        print("demo wall times: " + ", ".join(f"{k} {v:.1f} s"
                                              for k, v in results["demo_seconds"].items()))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
