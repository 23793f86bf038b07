"""Diagonal attention learns through gradual rank increase (Boix-Adsera et al. 2023, Figs. R1-R2).

Trains the diagonal attention head by gradient descent from ``alpha * N(0, I)`` for a grid of
init scales (all on one run axis), runs the limiting incremental algorithm (Algorithm 1), and
compares: loss against rescaled time ``t / log(1/alpha)`` with the predicted staircase on top,
the entries of ``a = w_K * w_Q`` and ``b = w_V * w_O`` switching on one at a time, and the rank
of the learned perturbation growing by one per stage.

    python -m minitheory.demos.rank_growth [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..rank_growth import analysis, data, incremental, training
from ..validation import TrainingStopped, check_array, check_float, check_int, check_types
from . import _common

NAME = "rank_growth"
MAX_TBAR_STEP = 0.05        # largest rescaled-time step eta / log(1/alpha) accepted


@dataclass(frozen=True)
class Config:
    """Defaults: the toy of the spec, section (b) [project choice]."""

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
    euler_step: float = field(default=0.05, metadata={"help": "Euler step of Algorithm 1 (B)"})
    threshold: float = field(default=0.05, metadata={"help": "|w_i| above which a coordinate "
                                                             "counts as active"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        for name in ("n_seq", "n_tokens", "d"):
            check_int(name, getattr(self, name), low=1)
        check_array("a_star", self.a_star, shape=(self.d,))
        check_array("b_star", self.b_star, shape=(self.d,))
        alphas = data.check_alphas(self.alphas)
        check_float("eta", self.eta, low=0.0, low_open=True)
        check_float("tbar_max", self.tbar_max, low=0.0, low_open=True, high=100.0)
        check_float("euler_step", self.euler_step, low=0.0, high=0.5, low_open=True)
        check_float("threshold", self.threshold, low=0.0, low_open=True)
        if not np.any(np.isclose(alphas, self.detail_alpha, rtol=1e-12, atol=0)):
            raise ValueError(f"detail_alpha must be one of alphas {list(self.alphas)}, "
                             f"got {self.detail_alpha}")
        # One step advances rescaled time by eta / log(1/alpha); coarser than MAX_TBAR_STEP, the
        # stages (about 0.1-0.6 apart in Algorithm 1) cannot be resolved and every run would
        # end within a few steps, its entries "never" active. [project choice]
        eta_max = MAX_TBAR_STEP * np.log(1.0 / alphas.max())
        if self.eta > eta_max:
            steps = training.steps_for(alphas, self.tbar_max, self.eta)
            raise ValueError(f"eta must be <= {eta_max:.3g} = {MAX_TBAR_STEP} log(1/max(alphas)) "
                             f"so one step is at most {MAX_TBAR_STEP} of rescaled time, got "
                             f"{self.eta} (the runs would take only {steps.min()}-{steps.max()} "
                             f"steps)")


def memory_estimate(cfg: Config):
    """Bytes the training arrays need (those of ``model.diagonal_data`` and the per-step
    temporaries, about 3x), and the options that set them."""
    R, n, d = len(cfg.alphas), cfg.n_tokens, cfg.d
    per_seq = d * n * n + (d + 1) * n + 3 * R * n * n + 2 * R * n * (d + 1)
    return 8 * 3 * cfg.n_seq * per_seq, (f"--n-seq {cfg.n_seq} sequences of --n-tokens {n} "
                                         f"tokens, {R} --alphas")


def run(cfg: Config, progress=None):
    """Train and analyse; returns ``(metrics, result, error)``: ``result`` is Algorithm 1's
    :class:`~minitheory.rank_growth.incremental.IncrementalResult`, ``error`` a
    :class:`TrainingStopped` (divergence or Ctrl-C; metrics then hold what was computed) or ``None``."""
    X, Y = data.diagonal_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d, cfg.a_star, cfg.b_star)
    alphas = np.asarray(cfg.alphas, dtype=np.float64)
    params0 = data.init_diagonal(np.random.default_rng(cfg.seed + 1), cfg.d, alphas)
    result = incremental.incremental_learning(X, Y, euler_step=cfg.euler_step)
    n_steps = training.steps_for(alphas, cfg.tbar_max, cfg.eta)
    error = None
    try:
        _, hist = training.train_diagonal(params0, X, Y, eta=cfg.eta, n_steps=n_steps,
                                          progress=progress)
    except TrainingStopped as exc:
        error, hist = exc, exc.partial[1]
    tbar = analysis.rescaled_time(hist["step"], cfg.eta, alphas)
    a0, b0 = params0["w_K"] * params0["w_Q"], params0["w_V"] * params0["w_O"]
    w = np.concatenate([hist["a"], hist["b"]], axis=-1) if len(hist["step"]) else np.zeros((0,))
    metrics = {
        "alphas": alphas, "n_steps": n_steps, "step": hist["step"], "tbar": tbar,
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
        rows.append([k + 1, name, float(result.times[k])]
                    + [float(t) for t in m["activation_times"][:, i]]
                    + [float(result.plateau_loss[k]), float(obs_loss[k])])
    return "\n".join([
        f"Algorithm 1: {len(result.times)} stages, {result.n_evals} gradient evaluations; "
        f"L(0) = {result.loss0:.3f}",
        f"Activation times t/log(1/alpha) (first |w_i| > {cfg.threshold}) and plateau losses:",
        _common.format_table(headers, rows),
        f"conservation law: max |c' - c(1 - eta^2 g^2)| / (u^2 + v^2 + u'^2 + v'^2), all steps = "
        f"{m['conservation_residual'].max():.1e}"])


def plot(cfg: Config, m: dict, result, out, show: bool):
    """Figures R1 (loss vs rescaled time, staircase) and R2 (entries of a, b; rank per stage)."""
    plt = _common.pyplot(show)
    alphas, tbar, loss = m["alphas"], m["tbar"], m["loss"]
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(alphas)))
    grid = np.linspace(0.0, cfg.tbar_max, 2000)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r, al in enumerate(alphas):
        keep = tbar[:, r] <= cfg.tbar_max
        ax.plot(tbar[keep, r], loss[keep, r], color=colors[r], lw=1.6, label=f"GD, α = {al:.0e}")
    ax.plot(grid, result.staircase(grid), "k--", lw=1.2, label="Algorithm 1 (α → 0)")
    for t in result.times:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="rescaled time  t / log(1/α)", ylabel="training loss",
           title="Diagonal attention: loss approaches a staircase as α → 0")
    ax.legend(fontsize=8)
    paths = [_common.save_figure(fig, out, "rank_growth_loss", show)]

    r = int(np.argmin(np.abs(np.log(alphas) - np.log(cfg.detail_alpha))))
    keep = tbar[:, r] <= cfg.tbar_max
    t = tbar[keep, r]
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8), sharex=True)
    for ax, key, label in ((axes[0], "a", "a = w_K ⊙ w_Q"), (axes[1], "b", "b = w_V ⊙ w_O")):
        for j in range(cfg.d):
            ax.plot(t, m[key][keep, r, j], lw=1.6, label=f"{key}_{j}")
        star = cfg.a_star if key == "a" else cfg.b_star
        for v in star:
            ax.axhline(v, color="0.7", lw=0.6, ls=":")
        ax.axhspan(-cfg.threshold, cfg.threshold, color="0.9", zorder=0,
                   label=f"|entry| ≤ {cfg.threshold}: inactive")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # off the data
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
        for tk in result.times:
            ax.axvline(tk, color="0.85", lw=0.8, zorder=0)
    axes[0].set_title(f"α = {alphas[r]:.0e}: one entry switches on per stage "
                      f"(vertical lines: Algorithm 1)")
    paths.append(_common.save_figure(fig, out, "rank_growth_entries", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
