"""A linear transformer learns a sparse contextual bigram: the l1-proximal two-stage method
recovers the ground truth where SGD stalls (Ren, Wang, Lee 2024, Figs. S1, S3, S4).

Draws an SCB task (vocabulary N, context T, Q-sparse attention), then trains the one-layer
linear transformer f = V X A e_k from the uninformative initialization with (i) the two-stage
method (preconditioned SGD, then l1-proximal steps with normalization), (ii) SGD at a large and
a small learning rate, all on the same batches, and (iii) the two-stage method with each
normalization option. Plots distances to the truth, signals and residuals, the ablation, and the
learned attention next to the true one.

    python -m minitheory.demos.sparse_bigrams [--seeds S] [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..sparse_bigrams import data, training
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "sparse_bigrams"


@dataclass(frozen=True)
class Config:
    """Defaults: the spec, sections (b) and (e) [paper: N = 10, T = 50, Q = 2, switch at 400]."""

    seed: int = field(default=0, metadata={"help": "task and batches from SeedSequence(seed)"})
    seeds: int = field(default=1, metadata={"help": "training seeds per method (run axis)"})
    N: int = field(default=10, metadata={"help": "vocabulary size (>= 2)"})
    T: int = field(default=50, metadata={"help": "context length"})
    Q: int = field(default=2, metadata={"help": "non-zeros per attention column (<= T)"})
    batch: int = field(default=64, metadata={"help": "batch size of every method"})
    steps: int = field(default=4000, metadata={"help": "training steps of every method"})
    tau: int = field(default=400, metadata={"help": "stage switch of the two-stage method"})
    eta1: float = field(default=0.03, metadata={"help": "stage-1 step (preconditioned)"})
    eta2: float = field(default=0.03, metadata={"help": "stage-2 step for V"})
    eta2_A: float = field(default=0.03, metadata={"help": "stage-2 step for A"})
    lam: float = field(default=0.01, metadata={"help": "l1 weight lambda"})
    normalize: str = field(default="balance", metadata={"help": "normalization: balance, "
                                                                "v_cols, a_cols or none"})
    sgd_etas: tuple[float, ...] = field(default=(0.5, 0.05),
                                        metadata={"help": "learning rates of the SGD baseline"})
    ablation: bool = field(default=True, metadata={"help": "also run every normalization"})
    log_every: int = field(default=10, metadata={"help": "log metrics every k steps"})
    level: float = field(default=0.1, metadata={"help": "distance counted as recovery"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("seeds", self.seeds, low=1, high=64)
        data.check_sizes(self.N, self.T, self.Q)
        check_int("batch", self.batch, low=1)
        check_int("steps", self.steps, low=1)
        check_int("log_every", self.log_every, low=1)
        check_float("level", self.level, low=0.0, low_open=True)
        self.method()
        if not self.sgd_etas:
            raise ValueError("sgd_etas must hold at least one learning rate")
        for i, eta in enumerate(self.sgd_etas):
            check_float(f"sgd_etas[{i}]", eta, low=0.0, low_open=True)

    def method(self, normalize: str | None = None) -> training.Method:
        return training.Method(tau=self.tau, eta1=self.eta1, eta2=self.eta2,
                               eta2_A=self.eta2_A, lam=self.lam,
                               normalize=normalize or self.normalize)


def run(cfg: Config, progress=None):
    """Train every method on the same batches; returns ``(metrics, instance, error)``."""
    ss = np.random.SeedSequence(cfg.seed).spawn(1 + cfg.seeds)
    inst = data.make_instance(np.random.default_rng(ss[0]), cfg.N, cfg.T, cfg.Q)
    methods = {"proposed": cfg.method()}
    methods.update({f"sgd_{eta:g}": training.Method(kind="sgd", eta=eta) for eta in cfg.sgd_etas})
    if cfg.ablation:
        methods.update({f"norm_{n}": cfg.method(n) for n in training.NORMALIZE
                        if n != cfg.normalize})
    m = {"P": inst.P, "mu": inst.mu, "Q_star": inst.Q_star, "methods": np.array(list(methods))}
    for i, (name, meth) in enumerate(methods.items()):
        label = f"[{i + 1}/{len(methods)}] {meth.label}"
        prog = _common.Progress(label) if progress is not None else None
        (params, hist), error = outcome(training.train, inst, meth, ss[1:], steps=cfg.steps,
                                        batch=cfg.batch, log_every=cfg.log_every,
                                        progress=prog)
        m.update({f"{name}/{k}": v for k, v in hist.items()})
        m[f"{name}/V"], m[f"{name}/A"] = params["V"], params["A"]
        if error is not None:
            return m, inst, error
    return m, inst, None


def context(m: dict):
    """The task, rebuilt from saved metrics (for ``--replot``)."""
    return data.check_instance(m["P"], m["mu"], m["Q_star"])


def report(cfg: Config, m: dict, inst) -> str:
    """Final distances, signals and support per method; steps and samples to recovery."""
    rows = []
    for name in m["methods"]:
        h = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(f"{name}/")}
        step, samples = training.first_reach(h, "dist_A", cfg.level)
        fmt = _common.format_spread
        rows.append([name, fmt(h["dist_V"][-1]), fmt(h["dist_A"][-1]), fmt(h["alpha_V"][-1]),
                     fmt(h["alpha_A"][-1]), fmt(h["support"][-1]), fmt(h["excess_loss"][-1]),
                     fmt(step), fmt(samples)])
    return _common.format_table(
        ["method", "||V-P||_mu", "||A-Q*||_mu", "alpha_V", "alpha_A", "top-Q support",
         "excess loss", f"steps to ||A-Q*|| <= {cfg.level}", "samples"], rows)


def _curve(ax, m, name, key, **kw):
    """Metric ``key`` of method ``name`` against iteration (mean and range over seeds)."""
    _common.plot_band(ax, m[f"{name}/step"], m[f"{name}/{key}"], **kw)


def plot(cfg: Config, m: dict, inst, out, show: bool):
    """Figures S1 (distances), S3 (signals), S4 (normalization) and the attention heatmaps."""
    plt = _common.pyplot(show)
    main = ["proposed"] + [f"sgd_{eta:g}" for eta in cfg.sgd_etas]
    labels = {"proposed": f"two-stage ({cfg.normalize})",
              **{f"sgd_{eta:g}": f"SGD η = {eta:g}" for eta in cfg.sgd_etas},
              **{f"norm_{n}": f"two-stage ({n})" for n in training.NORMALIZE}}
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "dist_V", "‖V − P‖_μ"), (axes[1], "dist_A", "‖A − Q*‖_μ")):
        for name in main:
            _curve(ax, m, name, key, label=labels[name])
        ax.axvline(cfg.tau, color="0.5", ls=":", lw=1, label="stage switch")
        ax.axhline(cfg.level, color="0.8", lw=0.8)
        ax.set(yscale="log", xlabel="iteration", title=title)
        ax.legend(fontsize=8)
    fig.suptitle(f"S1: the proximal two-stage method recovers the truth (N={cfg.N}, T={cfg.T}, "
                 f"Q={cfg.Q}, batch {cfg.batch})")
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_distances", show))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, color in zip(main, plt.cm.tab10.colors):
        _curve(axes[0], m, name, "alpha_V", color=color, label=f"α_V, {labels[name]}")
        _curve(axes[0], m, name, "alpha_A", color=color, ls="--", label=f"α_A, {labels[name]}")
        _curve(axes[1], m, name, "resid_V", color=color, label=f"‖Δ_V‖_Σ, {labels[name]}")
        _curve(axes[1], m, name, "resid_A", color=color, ls="--", label=f"‖Δ_A‖_μ, {labels[name]}")
    for ax in axes:
        ax.axvline(cfg.tau, color="0.5", ls=":", lw=1)
        ax.legend(fontsize=7)
        ax.set(xlabel="iteration")
    axes[0].set_title("signals (1 = aligned with the truth)")
    axes[1].set(yscale="log", title="residuals (exactly 0 at init)", ylim=(1e-4, 1))
    fig.suptitle("S3: signals rise from exactly 0; the two-stage method ends balanced")
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_signals", show))

    norms = [n for n in m["methods"] if n == "proposed" or n.startswith("norm_")]
    if len(norms) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, title in ((axes[0], "dist_V", "‖V − P‖_μ"),
                               (axes[1], "dist_A", "‖A − Q*‖_μ")):
            for name in norms:
                _curve(ax, m, name, key, label=labels[name])
            ax.axvline(cfg.tau, color="0.5", ls=":", lw=1)
            ax.set(yscale="log", xlabel="iteration", title=title)
            ax.legend(fontsize=8)
        fig.suptitle("S4: normalization after the proximal step (balance moves along the symmetry)")
        fig.tight_layout()
        paths.append(_common.save_figure(fig, out, "sparse_bigrams_normalization", show))

    panels = [("true Q*", inst.Q_star)] + [(labels[n], m[f"{n}/A"][0]) for n in main[:2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 5), sharey=True)
    vmax = float(np.max(inst.Q_star))
    for ax, (title, A) in zip(axes, panels):
        im = ax.imshow(A, aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set(title=title, xlabel="last token k")
        if inst.N <= 20:
            ax.set_xticks(range(inst.N))
    axes[0].set_ylabel("position t")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle("Learned attention A (seed 0) next to the truth")
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_attention", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
