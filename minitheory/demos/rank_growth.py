"""Diagonal attention learns through gradual rank increase (Boix-Adsera et al. 2023, the toy of
Fig. 2 in arXiv:2306.07042 v2, Fig. 1 in v1).

Trains the diagonal attention head by gradient descent from ``alpha * N(0, I)`` for a grid of
init scales (all on one run axis), runs the limiting incremental algorithm (Algorithm 1), and
compares: loss against rescaled time ``t / log(1/alpha)`` with the predicted staircase on top,
the entries of ``a = w_K * w_Q`` and ``b = w_V * w_O`` switching on one at a time, and the rank
of the learned perturbation growing by one per stage.

With ``--paper-toy`` it runs the setting of the paper's App. A instead of the small default toy:
1000 fixed samples X in R^{10 x 50}, a random sparse diagonal teacher (see
``data.sparse_diagonal_teacher``), alpha in {0.1, 0.01, 1e-4, 1e-8, 1e-16, 1e-32}, and says how
far it matches the paper's Fig. 2 (v2). ``--quick`` shrinks either setting for a fast look.

    python -m minitheory.demos.rank_growth [--paper-toy] [--quick] [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from ..rank_growth import analysis, data, incremental, training
from ..validation import TrainingStopped, check_array, check_float, check_int, check_types
from . import _common

NAME = "rank_growth"
MIN_STEPS = 10              # fewest steps accepted for the run of the largest alpha


@dataclass(frozen=True)
class Config:
    """Defaults: the small diagonal toy of ``data.diagonal_toy`` [project choice: fast]."""

    seed: int = field(default=0, metadata={"help": "data from default_rng(seed), init directions "
                                                   "from default_rng(seed + 1)"})
    n_seq: int = field(default=256, metadata={"help": "number of sequences (full batch)"})
    n_tokens: int = field(default=8, metadata={"help": "tokens per sequence"})
    d: int = field(default=4, metadata={"help": "embedding dimension"})
    a_star: tuple[float, ...] = field(default=data.A_STAR, metadata={"help": "teacher a* (d values)"})
    b_star: tuple[float, ...] = field(default=data.B_STAR, metadata={"help": "teacher b* (d values)"})
    alphas: tuple[float, ...] = field(default=(1e-2, 1e-4, 1e-8, 1e-16, 1e-32),
                                      metadata={"help": "init scales, each in (0, 1)"})
    eta: float = field(default=0.02, metadata={"help": "gradient-descent step"})
    tbar_max: float = field(default=3.0, metadata={"help": "train to rescaled time t/log(1/alpha)"})
    detail_alpha: float = field(default=1e-8, metadata={"help": "alpha of the entries figure "
                                                                "(one of --alphas)"})
    euler_step: float = field(default=0.05, metadata={"help": "largest Euler step of Algorithm "
                                                              "1 (B), in (0, 100]"})
    threshold: float = field(default=0.05, metadata={"help": "|w_i| above which a coordinate "
                                                             "counts as active"})
    paper_toy: bool = field(default=False, metadata={
        "help": "the paper's App. A setting (changes the defaults of the options above; "
                "a*, b* are drawn: see --nnz-a, --nnz-b)"})
    quick: bool = field(default=False, metadata={"help": "smaller, shorter run (changes the "
                                                         "defaults of the options above)"})
    nnz_a: int = field(default=data.PAPER_NNZ_A, metadata={
        "help": "--paper-toy: nonzero entries of the random teacher's a*"})
    nnz_b: int = field(default=data.PAPER_NNZ_B, metadata={
        "help": "--paper-toy: nonzero entries of the random teacher's b*"})
    log_every: int = field(default=1, metadata={"help": "log gradient descent every k steps"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        for name in ("n_seq", "n_tokens", "d", "log_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("nnz_a", self.nnz_a, low=0, high=self.d if self.paper_toy else None)
        check_int("nnz_b", self.nnz_b, low=1, high=self.d if self.paper_toy else None)
        if self.paper_toy:
            if len(self.a_star) or len(self.b_star):
                raise ValueError("a_star and b_star must be empty with --paper-toy (its teacher "
                                 "is drawn from the seed; set --nnz-a, --nnz-b)")
        else:
            check_array("a_star", self.a_star, shape=(self.d,))
            check_array("b_star", self.b_star, shape=(self.d,))
        alphas = data.check_alphas(self.alphas)
        check_float("eta", self.eta, low=0.0, low_open=True)
        check_float("tbar_max", self.tbar_max, low=0.0, low_open=True, high=100.0)
        check_float("euler_step", self.euler_step, low=0.0, high=100.0, low_open=True)
        check_float("threshold", self.threshold, low=0.0, low_open=True)
        if not np.any(np.isclose(alphas, self.detail_alpha, rtol=1e-12, atol=0)):
            raise ValueError(f"detail_alpha must be one of alphas {list(self.alphas)}, "
                             f"got {self.detail_alpha}")
        # One step advances rescaled time by eta / log(1/alpha). A run of fewer than MIN_STEPS
        # steps cannot resolve the stages, and every entry would read "never" active: refuse it
        # rather than report it as a result. [project choice]
        eta_max = self.tbar_max * np.log(1.0 / alphas.max()) / MIN_STEPS
        if self.eta > eta_max:
            steps = training.steps_for(alphas, self.tbar_max, self.eta)
            raise ValueError(f"eta must be <= {eta_max:.3g} = tbar_max log(1/max(alphas)) / "
                             f"{MIN_STEPS}, so that every run takes at least {MIN_STEPS} steps, "
                             f"got {self.eta} (the runs would take only "
                             f"{steps.min()}-{steps.max()} steps)")


def memory_estimate(cfg: Config):
    """Bytes the training arrays need (those of ``model.diagonal_data`` and the per-step
    temporaries, about 3x), and the options that set them."""
    R, n, d = len(cfg.alphas), cfg.n_tokens, cfg.d
    per_seq = 2 * (d + 1) * n + 2 * d * R * n + 3 * R * n * n + 2 * R * n * (d + 1)
    return 8 * 3 * cfg.n_seq * per_seq, (f"--n-seq {cfg.n_seq} sequences of --n-tokens {n} "
                                         f"tokens, {R} --alphas")


#: ``--paper-toy``: the setting of the paper's App. A (arXiv:2306.07042 v2, Fig. 2). Step size,
#: batch and epochs are not stated there; full-batch GD with eta = 1 [project choice: the loss is
#: small, so is the curvature, and eta = 1 is stable] to t/log(1/alpha) = 15 fits the time
#: budget, Algorithm 1's staircase runs to its last stage.
PAPER_TOY = dict(paper_toy=True, n_seq=data.PAPER_N_SEQ, n_tokens=data.PAPER_N_TOKENS,
                 d=data.PAPER_D, a_star=(), b_star=(), alphas=(0.1, 0.01, 1e-4, 1e-8, 1e-16, 1e-32),
                 eta=1.0, tbar_max=15.0, detail_alpha=1e-32, euler_step=5.0, log_every=5,
                 threshold=0.01)
#: ``--quick``: fewer samples and a shorter horizon (a look in seconds, not the paper's numbers).
QUICK = dict(quick=True, n_seq=64, tbar_max=2.8, alphas=(1e-2, 1e-8, 1e-32))
QUICK_PAPER = dict(quick=True, n_seq=100, tbar_max=10.0, alphas=(0.01, 1e-8, 1e-32),
                   log_every=5)


def config_class(argv) -> type:
    """``Config`` with the defaults of ``--paper-toy`` and/or ``--quick`` when ``argv`` asks."""
    preset = {}
    if "--paper-toy" in argv:
        preset.update(PAPER_TOY)
    if "--quick" in argv:
        preset.update(QUICK_PAPER if "--paper-toy" in argv else QUICK)
    if not preset:
        return Config
    base = {f.name: f for f in dataclasses.fields(Config)}
    hints = {"alphas": tuple[float, ...], "a_star": tuple[float, ...], "b_star": tuple[float, ...],
             "paper_toy": bool, "quick": bool}
    return dataclasses.make_dataclass(
        "Config", [(k, hints.get(k, type(v)), field(default=v, metadata=base[k].metadata))
                   for k, v in preset.items()], bases=(Config,), frozen=True)


def run(cfg: Config, progress=None):
    """Train and analyse; returns ``(metrics, result, error)``: ``result`` is Algorithm 1's
    :class:`~minitheory.rank_growth.incremental.IncrementalResult`, ``error`` a
    :class:`TrainingStopped` (divergence or Ctrl-C; metrics then hold what was computed) or ``None``."""
    if cfg.paper_toy:
        X, Y, a_star, b_star = data.paper_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d,
                                              cfg.nnz_a, cfg.nnz_b)
    else:
        a_star, b_star = np.asarray(cfg.a_star), np.asarray(cfg.b_star)
        X, Y = data.diagonal_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d, a_star, b_star)
    alphas = np.asarray(cfg.alphas, dtype=np.float64)
    params0 = data.init_diagonal(np.random.default_rng(cfg.seed + 1), cfg.d, alphas)
    result = incremental.incremental_learning(X, Y, euler_step=cfg.euler_step)
    n_steps = training.steps_for(alphas, cfg.tbar_max, cfg.eta)
    error = None
    try:
        _, hist = training.train_diagonal(params0, X, Y, eta=cfg.eta, n_steps=n_steps,
                                          log_every=cfg.log_every, progress=progress)
    except TrainingStopped as exc:
        error, hist = exc, exc.partial[1]
    tbar = analysis.rescaled_time(hist["step"], cfg.eta, alphas)
    a0, b0 = params0["w_K"] * params0["w_Q"], params0["w_V"] * params0["w_O"]
    w = np.concatenate([hist["a"], hist["b"]], axis=-1) if len(hist["step"]) else np.zeros((0,))
    metrics = {
        "alphas": alphas, "n_steps": n_steps, "a_star": a_star, "b_star": b_star, "step": hist["step"], "tbar": tbar,
        "loss": hist["loss"], "a": hist["a"], "b": hist["b"],
        "c_KQ": hist["c_KQ"], "c_VO": hist["c_VO"],
        "conservation_residual": hist["conservation_residual"],
        "rank_a": analysis.perturbation_rank(hist["a"], a0, atol=cfg.threshold),
        "rank_b": analysis.perturbation_rank(hist["b"], b0, atol=cfg.threshold),
        "activation_times": analysis.activation_times(tbar, w, cfg.threshold),
        **result.to_metrics(),
    }
    return metrics, result, error


def context(m: dict):
    """Algorithm 1's result, rebuilt from saved metrics (for ``--replot``)."""
    return incremental.IncrementalResult.from_metrics(m)


def report(cfg: Config, m: dict, result) -> str:
    """The table that carries the claim: stage times and plateau losses, predicted vs observed,
    and the worst violation of the per-step conservation identity."""
    alphas = m["alphas"]
    small = int(np.argmin(alphas))
    obs_loss = analysis.observed_plateau_losses(result, m["tbar"][:, small], m["loss"][:, small],
                                                cfg.tbar_max)
    headers = ["stage", "coord", "Alg.1 t"] + [f"a={al:.0e}" for al in alphas] + \
              ["Alg.1 loss", f"GD loss a={alphas[small]:.0e}"]
    rows = [[0, "-", 0.0] + ["-"] * len(alphas) + [result.loss0, float(m["loss"][0, small])]]
    for k, (i, name) in enumerate(zip(result.coordinate, result.names())):
        seen = result.times[k] < cfg.tbar_max                   # inside the GD horizon
        rows.append([k + 1, name, float(result.times[k])]
                    + [float(t) for t in m["activation_times"][:, i]]
                    + [float(result.plateau_loss[k]), float(obs_loss[k]) if seen else "-"])
    lines = [f"{'Paper toy (App. A)' if cfg.paper_toy else 'Default toy'}: compare with the "
             f"paper's Fig. 2 of arXiv v2 (Fig. 1 of v1)."]
    if cfg.paper_toy:
        lines += ["How far it matches the paper's Fig. 2 (v2), read off the figure:",
                  _common.format_table(["quantity", "paper Fig. 2 (v2)", "this run"],
                                       paper_match(m, result))]
    return "\n".join(lines + [
        f"Algorithm 1: {len(result.times)} stages, {result.n_evals} gradient evaluations; "
        f"L(0) = {result.loss0:.3f}",
        f"Activation times t/log(1/alpha) (first |w_i| > {cfg.threshold}) and plateau losses:",
        _common.format_table(headers, rows),
        f"conservation law: max |c' - c(1 - eta^2 g^2)| / (u^2 + v^2 + u'^2 + v'^2), all steps = "
        f"{m['conservation_residual'].max():.1e}"])


def paper_match(m: dict, result) -> list[list]:
    """Rows (quantity, paper's Fig. 2 of v2 as read off the figure, this run) for the paper toy."""
    d = result.d
    coords = set(int(i) for i in result.coordinate)
    n_a, n_b = sum(i < d for i in coords), sum(i >= d for i in coords)
    first_a = next((k for k, i in enumerate(result.coordinate) if i < d), None)
    small = int(np.argmin(m["alphas"]))
    order_gd = analysis.activation_times(m["tbar"][:, small:small + 1],
                                         np.concatenate([m["a"], m["b"]], -1)[:, small:small + 1],
                                         )[0]
    horizon = float(m["tbar"][-1, small])
    seen = [i for i in result.coordinate if result.times[list(result.coordinate).index(i)]
            < horizon]
    gd_order = [int(i) for i in np.argsort(order_gd) if np.isfinite(order_gd[i])][:len(seen)]
    return [
        ["loss at t = 0", "~0.09", f"{result.loss0:.3f}"],
        ["entries of a that leave 0", "~9", f"{n_a} (teacher: {int(np.count_nonzero(m['a_star']))})"],
        ["entries of b that leave 0", "~6", f"{n_b} (teacher: {int(np.count_nonzero(m['b_star']))})"],
        ["first stages", "b entries (dL/da = 0 while b = 0)",
         f"{first_a} b stages before the first a"],
        ["staircase extends to t/log(1/alpha)", "~1000", f"{result.times[-1]:.0f} (last jump)"],
        ["last plateau loss", "~0 (teacher recovered)", f"{result.plateau_loss[-1]:.1e}"],
        [f"GD alpha={m['alphas'][small]:.0e} order = Alg. 1 (t < {horizon:.0f})", "-",
         "yes" if gd_order == [int(i) for i in seen] else f"no: {gd_order} vs {seen}"],
    ]


def plot(cfg: Config, m: dict, result, out, show: bool):
    """The loss against rescaled time with Algorithm 1's staircase, and the entries of ``a``,
    ``b`` with the rank per stage (the toy of the paper's Fig. 2, arXiv v2)."""
    plt = _common.pyplot(show)
    alphas, tbar, loss = m["alphas"], m["tbar"], m["loss"]
    a_star = m.get("a_star", np.asarray(cfg.a_star))
    b_star = m.get("b_star", np.asarray(cfg.b_star))
    prefix = "rank_growth_paper_toy" if cfg.paper_toy else "rank_growth"
    setting = (f"paper's App. A toy ({cfg.n_seq} samples, d = {cfg.d})" if cfg.paper_toy
               else "default toy [project choice]")
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(alphas)))
    x_max = max(cfg.tbar_max, 1.15 * result.times[-1]) if cfg.paper_toy else cfg.tbar_max
    grid = np.linspace(0.0, x_max, 4000)

    fig, ax = plt.subplots(figsize=(8.5 if cfg.paper_toy else 7.5, 4.8))
    for r, al in enumerate(alphas):
        keep = tbar[:, r] <= cfg.tbar_max
        ax.plot(tbar[keep, r], loss[keep, r], color=colors[r], lw=1.6, label=f"GD, α = {al:.0e}")
    ax.plot(grid, result.staircase(grid), "k--", lw=1.2, label="Algorithm 1 (α → 0)")
    for t in result.times:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="rescaled time  t / log(1/α)", ylabel="training loss",
           title=f"Diagonal attention, {setting}: loss approaches a staircase as α → 0\n"
                 f"(reproduces the paper's Fig. 2, arXiv v2 = Fig. 1 of v1)")
    if cfg.paper_toy:
        ax.set_xscale("symlog", linthresh=10.0)
        ax.set_xlim(0.0, x_max)
        ax.set_yscale("log")
        ax.set_ylim(max(1e-8, 0.3 * result.plateau_loss[-1]), 2 * result.loss0)
        ax.axvline(cfg.tbar_max, color="r", lw=0.8, ls=":")
        ax.text(cfg.tbar_max, 1.3 * result.loss0, " GD stops here (time budget)", color="r",
                fontsize=7, va="top")
        rows = paper_match(m, result)
        ax.text(0.01, 0.02, "vs paper Fig. 2 (v2):\n" + "\n".join(
            f"{q}: paper {p}, here {h}" for q, p, h in rows[:6]), transform=ax.transAxes,
                fontsize=6.5, va="bottom", family="monospace",
                bbox={"facecolor": "white", "alpha": 0.85, "lw": 0.5})
    ax.legend(fontsize=8, loc="upper right")            # paper toy: above the late staircase
    paths = [_common.save_figure(fig, out, prefix + "_loss", show)]

    r = int(np.argmin(np.abs(np.log(alphas) - np.log(cfg.detail_alpha))))
    keep = tbar[:, r] <= cfg.tbar_max
    t = tbar[keep, r]
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8), sharex=True)
    for ax, key, label, star in ((axes[0], "a", "a = w_K ⊙ w_Q", a_star),
                                 (axes[1], "b", "b = w_V ⊙ w_O", b_star)):
        shown = [j for j in range(cfg.d) if np.max(np.abs(m[key][keep, r, j])) > cfg.threshold]
        for j in (shown if cfg.paper_toy else range(cfg.d)):
            ax.plot(t, m[key][keep, r, j], lw=1.6, label=f"{key}_{j}")
        for v in star[star != 0] if cfg.paper_toy else star:
            ax.axhline(v, color="0.7", lw=0.6, ls=":")
        ax.axhspan(-cfg.threshold, cfg.threshold, color="0.9", zorder=0,
                   label=f"|entry| ≤ {cfg.threshold}: inactive")
        ax.set_ylabel(label)
        if cfg.paper_toy and not shown:
            ax.text(0.5, 0.75, f"no entry of {key} leaves |{key}_i| ≤ {cfg.threshold} by "
                    f"t / log(1/α) = {t[-1]:.3g}", transform=ax.transAxes, ha="center",
                    fontsize=8)
        if shown or not cfg.paper_toy:                                        # off the data
            ax.legend(fontsize=7 if cfg.paper_toy else 8, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), ncol=1 + len(shown) // 12 if cfg.paper_toy else 1)
    ax = axes[2]
    ax.step(t, m["rank_a"][keep, r], where="post", label="rank Δ(W_K W_Q^T)")
    ax.step(t, m["rank_b"][keep, r], where="post", label="rank Δ(W_V W_O^T)")
    ax.step(t, m["rank_a"][keep, r] + m["rank_b"][keep, r], where="post", color="k", ls="--",
            label="total")
    ax.set(xlabel="rescaled time  t / log(1/α)",
           ylabel=f"rank (entries > {cfg.threshold})")
    _common.integer_ticks(ax.yaxis)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in axes:
        for tk in result.times[result.times <= t[-1]]:
            ax.axvline(tk, color="0.85", lw=0.8, zorder=0)
    axes[0].set_title(f"{setting}, α = {alphas[r]:.0e}: one entry switches on per stage\n"
                      f"(vertical lines: Algorithm 1; cf. the paper's Fig. 2, arXiv v2)")
    paths.append(_common.save_figure(fig, out, prefix + "_entries", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    module = sys.modules[__name__]
    cls = config_class(argv)
    if cls is Config:
        return _common.demo_main(module, argv)
    demo = types.SimpleNamespace(NAME=NAME, Config=cls, run=run, report=report, plot=plot,
                                 context=context, __doc__=__doc__)
    return _common.demo_main(demo, argv)


if __name__ == "__main__":
    sys.exit(main())
