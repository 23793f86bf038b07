"""A linear transformer learns a sparse contextual bigram: the l1-proximal two-stage method
recovers the ground truth where SGD stalls (Ren, Wang, Lee 2024, arXiv:2410.23438v1,
Figs. 1, 3, 4).

Draws an SCB task (vocabulary N, context T, Q-sparse attention) and runs stage 1
(preconditioned SGD) from the uninformative initialization up to the switch tau. There the
methods branch (Fig. 1), all continuing from the stage-1 endpoint on the same batches: (i) the
two-stage method's stage 2 (l1-proximal steps with normalization), (ii) SGD at the large and
the small learning rate (eta2, eta2') and at every rate of a sweep, (iii) stage 2 with each
normalization option. Every run has its population process beside it (the same update with
exact gradients, same start, in lockstep), and the distance to it is the paper's Delta_V,
Delta_A (Figs. 3 and 5). Plots distances to the truth (Fig. 1), signals and the distances to the
population process (Fig. 3), the similarity with the truth per normalization (Fig. 4), and the
learned attention next to the true one.

    python -m minitheory.demos.sparse_bigrams [--seeds S] [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..sparse_bigrams import data, training
from ..validation import DivergenceError
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "sparse_bigrams"


@dataclass(frozen=True)
class Config:
    """Defaults [paper: N = 10, T = 50, Q = 2, switch at tau = 400 (Fig. 1)]; the step sizes
    and the batch are [project choice]."""

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
    sgd_etas: tuple[float, ...] = field(
        default=(0.5, 0.05), metadata={"help": "the large and the small SGD learning rate "
                                               "(eta2, eta2' of Fig. 1)"})
    sgd_sweep: tuple[float, ...] = field(
        default=(0.05, 0.1, 0.2, 0.5, 1.0),
        metadata={"help": "SGD learning rates swept for the best SGD branch"})
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
        if check_int("tau", self.tau, low=0) >= self.steps:
            raise ValueError(f"tau must be in [0, steps - 1] = [0, {self.steps - 1}] (the "
                             f"two-stage method enters stage 2 at step tau), got {self.tau}")
        check_int("log_every", self.log_every, low=1)
        check_float("level", self.level, low=0.0, low_open=True)
        self.method()
        if not self.sgd_etas:
            raise ValueError("sgd_etas must hold at least one learning rate")
        for i, eta in enumerate(self.sgd_etas):
            check_float(f"sgd_etas[{i}]", eta, low=0.0, low_open=True)
        if not self.sgd_sweep:
            raise ValueError("sgd_sweep must hold at least one learning rate")
        for i, eta in enumerate(self.sgd_sweep):
            check_float(f"sgd_sweep[{i}]", eta, low=0.0, low_open=True)

    def method(self, normalize: str | None = None) -> training.Method:
        return training.Method(tau=self.tau, eta1=self.eta1, eta2=self.eta2,
                               eta2_A=self.eta2_A, lam=self.lam,
                               normalize=normalize or self.normalize)


def sgd_rates(cfg: Config) -> list:
    """Every SGD learning rate that runs: ``sgd_etas`` then the rest of the sweep."""
    return list(dict.fromkeys(cfg.sgd_etas + tuple(sorted(cfg.sgd_sweep))))


def run(cfg: Config, progress=None):
    """Stage 1, then every method branching from its endpoint on the same batches (Fig. 1);
    returns ``(metrics, instance, error)``. A diverging SGD branch is a result (its step is
    saved as ``sgd_<eta>/diverged_at``); a diverging two-stage run stops the demo."""
    ss = np.random.SeedSequence(cfg.seed).spawn(1 + cfg.seeds)
    inst = data.make_instance(np.random.default_rng(ss[0]), cfg.N, cfg.T, cfg.Q)
    methods = {"proposed": cfg.method()}
    methods.update({f"sgd_{eta:g}": training.Method(kind="sgd", eta=eta) for eta in sgd_rates(cfg)})
    if cfg.ablation:
        methods.update({f"norm_{n}": cfg.method(n) for n in training.NORMALIZE
                        if n != cfg.normalize})
    m = {"P": inst.P, "mu": inst.mu, "Q_star": inst.Q_star, "methods": np.array(list(methods))}
    tau = min(cfg.tau, cfg.steps)
    stage1 = dataclasses.replace(cfg.method(), tau=tau)
    prog = _common.Progress(f"stage 1 (shared, {tau} steps)") if progress is not None else None
    start, error = outcome(training.stage_one, inst, stage1, ss[1:], batch=cfg.batch,
                           log_every=cfg.log_every, progress=prog, population=True)
    if error is not None:
        params, hist = start
        m.update({f"proposed/{k}": v for k, v in hist.items()})
        m["proposed/V"], m["proposed/A"] = params["V"], params["A"]
        return m, inst, error
    for i, (name, meth) in enumerate(methods.items()):
        label = f"[{i + 1}/{len(methods)}] {meth.label} from step {tau}"
        prog = _common.Progress(label) if progress is not None else None
        (params, hist), error = outcome(training.branch, inst, meth, start, steps=cfg.steps,
                                        log_every=cfg.log_every, progress=prog)
        m.update({f"{name}/{k}": v for k, v in hist.items()})
        m[f"{name}/V"], m[f"{name}/A"] = params["V"], params["A"]
        if isinstance(error, DivergenceError) and meth.kind == "sgd":
            m[f"{name}/diverged_at"] = error.step
        elif error is not None:
            return m, inst, error
    return m, inst, None


def best_sgd(cfg: Config, m: dict):
    """The sweep's rate with the smallest final mean ``||A - Q*||_mu`` among the SGD branches
    that did not diverge [project choice: the criterion], or ``None``."""
    ok = [eta for eta in cfg.sgd_sweep if f"sgd_{eta:g}/diverged_at" not in m
          and f"sgd_{eta:g}/dist_A" in m]
    return min(ok, key=lambda eta: m[f"sgd_{eta:g}/dist_A"][-1].mean()) if ok else None


def sgd_claim(cfg: Config, m: dict) -> str:
    """:func:`sgd_budget` in a few words, for a figure title."""
    rates = sgd_rates(cfg)
    reached = [eta for eta in rates if np.all(np.isfinite(
        training.first_reach(_hist(m, f"sgd_{eta:g}"), "dist_A", cfg.level)[1]))]
    if reached:
        return "SGD reaches the level at η = " + ", ".join(f"{e:g}" for e in reached)
    return (f"no SGD rate in {{{', '.join(f'{e:g}' for e in rates)}}} reaches "
            f"‖A − Q*‖_μ ≤ {cfg.level:g} within {cfg.steps * cfg.batch:,} samples")


def sgd_budget(cfg: Config, m: dict) -> str:
    """The sample budget within which "SGD does not recover" holds (or which rate does)."""
    rates = sgd_rates(cfg)
    hits = {eta: training.first_reach(_hist(m, f"sgd_{eta:g}"), "dist_A", cfg.level)[1]
            for eta in rates}
    budget = cfg.steps * cfg.batch
    done = [eta for eta, s in hits.items() if np.all(np.isfinite(s))]
    if not done:
        return (f"no SGD branch (eta in {{{', '.join(f'{e:g}' for e in rates)}}}) reaches "
                f"||A - Q*||_mu <= {cfg.level:g} within {budget:,} samples "
                f"({cfg.steps} steps of batch {cfg.batch}, stage 1 included)")
    return "; ".join(f"SGD eta={eta:g} reaches ||A - Q*||_mu <= {cfg.level:g} after "
                     f"{_common.format_spread(hits[eta])} samples" for eta in done)


def _hist(m: dict, name: str) -> dict:
    return {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(f"{name}/")}


def context(m: dict):
    """The task, rebuilt from saved metrics (for ``--replot``)."""
    return data.check_instance(m["P"], m["mu"], m["Q_star"])


def report(cfg: Config, m: dict, inst) -> str:
    """Final distances, similarities and distances to the population process per method; steps
    and samples to recovery; the sample budget of "SGD does not recover"."""
    rows = []
    fmt = _common.format_spread
    for name in m["methods"]:
        h = _hist(m, name)
        if "dist_A" not in h:
            continue
        step, samples = training.first_reach(h, "dist_A", cfg.level)
        both, _ = training.first_reach(h, ("dist_V", "dist_A"), cfg.level)
        note = f" (diverged at step {int(h['diverged_at'])})" if "diverged_at" in h else ""
        rows.append([name + note, fmt(h["dist_V"][-1]), fmt(h["dist_A"][-1]), fmt(h["sim_V"][-1]),
                     fmt(h["sim_A"][-1]), fmt(h["delta_V"][-1]), fmt(h["delta_A"][-1]),
                     fmt(h["support"][-1]), fmt(h["excess_loss"][-1]), fmt(step), fmt(samples),
                     fmt(both)])
    table = _common.format_table(
        ["method (branch from the stage-1 endpoint)", "||V-P||_mu", "||A-Q*||_mu", "sim(V, P)",
         "sim(A, Q*)", "Delta_V", "Delta_A", "top-Q support", "excess loss",
         f"steps to ||A-Q*|| <= {cfg.level}", "samples", f"steps to both <= {cfg.level}"], rows)
    best = best_sgd(cfg, m)
    lines = [table,
             "Delta_V, Delta_A: ||V - V_pop||_mu, ||A - A_pop||_mu to the method's own population "
             "process (exact gradients, same start, lockstep)",
             "best SGD rate of the sweep (smallest final ||A - Q*||_mu): "
             + ("none (all diverged)" if best is None else f"eta = {best:g}"),
             sgd_budget(cfg, m)]
    return "\n".join(lines)


def _band(ax, m, name, key, star=True, **kw):
    """Metric ``key`` of method ``name`` against iteration (mean and range over seeds), with a
    star on the final solution (Fig. 1)."""
    line = _common.plot_band(ax, m[f"{name}/step"], m[f"{name}/{key}"], **kw)
    if star:
        ax.plot(m[f"{name}/step"][-1], m[f"{name}/{key}"][-1].mean(), marker="*", ms=11,
                color=line.get_color(), mec="k", mew=0.5, ls="none", zorder=5)
    return line


def plot(cfg: Config, m: dict, inst, out, show: bool):
    """Figs. 1 (distances), 3 (signals, distance to the population process), 4 (similarity
    per normalization) and the attention heatmaps."""
    plt = _common.pyplot(show)
    tau = min(cfg.tau, cfg.steps)
    big, small = cfg.sgd_etas[0], cfg.sgd_etas[-1]
    best = best_sgd(cfg, m)
    sgd_main = list(dict.fromkeys([f"sgd_{big:g}", f"sgd_{small:g}"]
                                  + ([f"sgd_{best:g}"] if best is not None else [])))
    main = ["proposed"] + [n for n in sgd_main if f"{n}/step" in m]
    role = {f"sgd_{big:g}": "η₂, large", f"sgd_{small:g}": "η₂′, small"}
    labels = {"proposed": f"two-stage ({cfg.normalize})",
              **{f"sgd_{eta:g}": f"SGD η = {eta:g}" for eta in sgd_rates(cfg)},
              **{f"norm_{n}": f"two-stage ({n})" for n in training.NORMALIZE}}
    for name in sgd_main:
        tags = [role[name]] if name in role else []
        if best is not None and name == f"sgd_{best:g}":
            tags.append("best of sweep")
        labels[name] += f" ({', '.join(tags)})" if tags else ""
    colors = dict(zip(main, plt.cm.tab10.colors))
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, title in ((axes[0], "dist_V", "‖V − P‖_μ"), (axes[1], "dist_A", "‖A − Q*‖_μ")):
        for name in main:
            _band(ax, m, name, key, label=labels[name], color=colors[name])
        ax.axvline(tau, color="0.5", ls=":", lw=1, label=f"τ = {tau}: SGD branches off")
        ax.axhline(cfg.level, color="0.75", lw=0.8, label=f"level {cfg.level:g}")
        ax.set(yscale="log", xlabel="iteration", ylabel=title, title=title)
    axes[0].plot([], [], "k*", ls="none", label="final solution")
    fig.suptitle(f"Fig. 1 (arXiv:2410.23438v1): shared stage 1, then the proximal method vs "
                 f"SGD from the stage-1 endpoint\n(N={cfg.N}, T={cfg.T}, Q={cfg.Q}, batch "
                 f"{cfg.batch}; {sgd_claim(cfg, m)})",
                 fontsize=10)
    _common.legend_below(fig, axes[0], ncol=3)
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_distances", show))

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for name in main:
        c = colors[name]
        _band(axes[0], m, name, "alpha_V", star=False, color=c, label=f"α_V, {labels[name]}")
        _band(axes[0], m, name, "alpha_A", star=False, color=c, ls="--",
              label=f"α_A, {labels[name]}")
        ref = "population " + labels[name].split(" (")[0]
        _band(axes[1], m, name, "delta_V", star=False, color=c,
              label=f"‖Δ_V‖: {labels[name].split(' (')[0]} − {ref}")
        _band(axes[1], m, name, "delta_A", star=False, color=c, ls="--",
              label=f"‖Δ_A‖: {labels[name].split(' (')[0]} − {ref}")
        _band(axes[2], m, name, "resid_V", star=False, color=c,
              label=f"‖V − α_V P‖_Σ, {labels[name].split(' (')[0]}")
        _band(axes[2], m, name, "resid_A", star=False, color=c, ls="--",
              label=f"‖ΠA − α_A ΠQ*‖_μ, {labels[name].split(' (')[0]}")
    for ax in axes:
        ax.axvline(tau, color="0.5", ls=":", lw=1)
        ax.legend(fontsize=6.5, loc="best")
        ax.set(xlabel="iteration")
    axes[0].set(title="signals α (1 = aligned with the truth)", ylabel="α")
    axes[1].set(yscale="log", title="Δ: distance to the method's own population process",
                ylabel="‖·‖_μ")
    axes[2].set(yscale="log", title="off-signal residuals (ours; exactly 0 at init)",
                ylabel="norm", ylim=(1e-4, 1))
    fig.suptitle("Fig. 3 (arXiv:2410.23438v1): signals, and each method minus its population "
                 "process (exact gradients, same start, in lockstep)", fontsize=10)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_signals", show))

    norms = [n for n in m["methods"] if n == "proposed" or n.startswith("norm_")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, title in ((axes[0], "sim_V", "V against P"), (axes[1], "sim_A", "A against Q*")):
        for name in list(norms) + sgd_main:
            if f"{name}/{key}" in m:
                gap = {f"{name}/step": m[f"{name}/step"], f"{name}/gap": 1.0 - m[f"{name}/{key}"]}
                _band(ax, gap, name, "gap", ls="--" if name.startswith("sgd_") else "-",
                      label=labels[name])
        ax.axvline(tau, color="0.5", ls=":", lw=1)
        ax.set(xlabel="iteration", yscale="log", title=title,
               ylabel="1 − ⟨M, M*⟩_μ / (‖M‖_μ ‖M*‖_μ)")
    fig.suptitle("Fig. 4 (arXiv:2410.23438v1): similarity with the ground truth per "
                 "normalization, SGD dashed\n(cosine in the μ-weighted inner product, our "
                 "reading; plotted as 1 − similarity on a log scale: lower is better)",
                 fontsize=10)
    _common.legend_below(fig, axes[0], ncol=4)
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_normalization", show))

    panels = [("true Q*", inst.Q_star)] + [(labels[n], m[f"{n}/A"][0]) for n in main[:2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 5), sharey=True)
    vmax = float(np.max(inst.Q_star))
    for ax, (title, A) in zip(axes, panels):
        im = ax.imshow(A, aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="last token k")
        if inst.N <= 20:
            ax.set_xticks(range(inst.N))
    axes[0].set_ylabel("position t")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(f"Learned attention A at step {cfg.steps} (seed 0) next to the truth "
                 f"(ours; no figure of arXiv:2410.23438v1)", fontsize=11)
    paths.append(_common.save_figure(fig, out, "sparse_bigrams_attention", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
