"""Numerical checks of the two assumptions behind the incremental-learning limit (Boix-Adsera
et al. 2023, Assumptions 4.4 and 4.5; figure R3).

(a) Stability (4.4): inside a plateau, multiply the *active* weights by (1 + 0.1 N(0, 1)) each
and continue training: they return to the same plateau point. Adding 0.1 N(0, 1) to *all* weights
instead lifts inactive coordinates from ~alpha to ~0.1 ~ alpha^0.1, which is not small on the
log scale, and skips stages (shown as a counter-example).
(b) Robustness (4.5): at t/log(1/alpha) = 0.9 add N(0, alpha^2) noise to every weight: the next
jump happens at the same time and lands on the same plateau point.

All runs (reference and perturbed) train together on one run axis.

    python -m minitheory.demos.rank_growth_assumptions [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..rank_growth import analysis, data, incremental, training
from ..rank_growth.model import DIAG_KEYS
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import _common

NAME = "rank_growth_assumptions"
D = len(data.A_STAR)                                # the toy's teacher fixes the dimension
RUNS = ("reference", "stability: active weights x (1 + s N)", "all weights + s N",
        "robustness: all weights + N(0, alpha^2)")


@dataclass(frozen=True)
class Config:
    """Defaults: the diagonal toy of the spec at alpha = 1e-8 [project choice]."""

    seed: int = field(default=0, metadata={"help": "data from default_rng(seed), init from "
                                                   "seed + 1, perturbations from seed + 2"})
    n_seq: int = field(default=256, metadata={"help": "number of sequences"})
    n_tokens: int = field(default=8, metadata={"help": "tokens per sequence"})
    alpha: float = field(default=1e-8, metadata={"help": "init scale, in (0, 1)"})
    eta: float = field(default=0.02, metadata={"help": "gradient-descent step"})
    tbar_max: float = field(default=2.6, metadata={"help": "train to t/log(1/alpha)"})
    plateau: int = field(default=2, metadata={"help": "stability check inside the plateau after "
                                                      "this stage of Algorithm 1 (1-based)"})
    sigma: float = field(default=0.1, metadata={"help": "relative size of the stability "
                                                        "perturbation"})
    robustness_tbar: float = field(default=0.9, metadata={"help": "t/log(1/alpha) of the "
                                                                  "N(0, alpha^2) perturbation"})
    threshold: float = field(default=0.05, metadata={"help": "|w_i| above which a coordinate "
                                                             "is active"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("n_seq", self.n_seq, low=1)
        check_int("n_tokens", self.n_tokens, low=1)
        check_float("alpha", self.alpha, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("eta", self.eta, low=0.0, low_open=True)
        check_float("tbar_max", self.tbar_max, low=0.0, low_open=True, high=100.0)
        check_int("plateau", self.plateau, low=1, high=4)
        check_float("sigma", self.sigma, low=0.0, low_open=True, high=1.0)
        check_float("robustness_tbar", self.robustness_tbar, low=0.0, low_open=True,
                    high=self.tbar_max, high_open=True)
        check_float("threshold", self.threshold, low=0.0, low_open=True)


def train_with_events(params, X, Y, *, eta, n_steps, events, progress=None):
    """Gradient descent on the run axis, applying ``events`` ``[(step, fn)]`` in step order.

    ``fn(params) -> params`` perturbs the state at that step (before its update). The histories
    of the segments are joined so every step appears once (the state after the event).
    """
    hists, step0 = [], 0

    def joined(parts):
        return {k: np.concatenate([h[k] for h in parts]) for k in parts[0]}

    for step, fn in sorted(events, key=lambda e: e[0]) + [(n_steps, None)]:
        if step > step0:
            try:
                params, h = training.train_diagonal(params, X, Y, eta=eta,
                                                    n_steps=step - step0, progress=progress)
            except TrainingStopped as exc:              # keep the earlier segments too
                part = dict(exc.partial[1], step=exc.partial[1]["step"] + step0)
                exc.step += step0
                exc.partial = (exc.partial[0], joined(hists + [part]) if len(part["step"])
                               else joined(hists) if hists else part)
                raise
            h["step"] = h["step"] + step0
            hists.append({k: v[:-1] for k, v in h.items()} if fn is not None else h)
            step0 = step
        if fn is not None:
            params = fn(params)
    return params, joined(hists)


def run(cfg: Config, progress=None):
    """Run the reference and the three perturbed runs; returns ``(metrics, result, error)``."""
    X, Y = data.diagonal_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, D)
    result = incremental.incremental_learning(X, Y)
    if cfg.plateau >= len(result.times):
        raise ValueError(f"plateau must be < the number of stages ({len(result.times)}), "
                         f"got {cfg.plateau}")
    rng = np.random.default_rng(cfg.seed + 2)
    log_inv = np.log(1.0 / cfg.alpha)
    t_lo, t_hi = result.times[cfg.plateau - 1], result.times[cfg.plateau]
    t_stab = rng.uniform(t_lo + 0.25 * (t_hi - t_lo), t_lo + 0.75 * (t_hi - t_lo))
    step_stab = int(round(t_stab * log_inv / cfg.eta))
    step_rob = int(round(cfg.robustness_tbar * log_inv / cfg.eta))
    n_steps = int(training.steps_for([cfg.alpha], cfg.tbar_max, cfg.eta)[0])

    one = data.init_diagonal(np.random.default_rng(cfg.seed + 1), D, [cfg.alpha])
    params0 = {k: np.repeat(v, len(RUNS), axis=0) for k, v in one.items()}
    noise = {"active": rng.standard_normal((4, D)), "all": rng.standard_normal((4, D)),
             "robust": rng.standard_normal((4, D))}
    info = {}

    def stability(p):
        a, b = np.abs(p["w_K"][0] * p["w_Q"][0]), np.abs(p["w_V"][0] * p["w_O"][0])
        active = {"w_K": a, "w_Q": a, "w_V": b, "w_O": b}
        info["active"] = np.concatenate([a, b]) > cfg.threshold
        out = {k: v.copy() for k, v in p.items()}
        for i, k in enumerate(DIAG_KEYS):
            mask = active[k] > cfg.threshold
            out[k][1] = np.where(mask, p[k][1] * (1 + cfg.sigma * noise["active"][i]), p[k][1])
            out[k][2] = p[k][2] + cfg.sigma * noise["all"][i]
        return out

    def robustness(p):
        out = {k: v.copy() for k, v in p.items()}
        for i, k in enumerate(DIAG_KEYS):
            out[k][3] = p[k][3] + cfg.alpha * noise["robust"][i]
        return out

    error = None
    try:
        _, hist = train_with_events(params0, X, Y, eta=cfg.eta, n_steps=n_steps,
                                    events=[(step_stab, stability), (step_rob, robustness)],
                                    progress=progress)
    except TrainingStopped as exc:
        error, hist = exc, exc.partial[1]
    tbar = analysis.rescaled_time(hist["step"], cfg.eta, [cfg.alpha] * len(RUNS))
    w = np.concatenate([hist["a"], hist["b"]], axis=-1)
    m = {"tbar": tbar, "loss": hist["loss"], "w": w, **result.to_metrics(),
         "t_stability": t_stab,
         "t_robustness": cfg.robustness_tbar, "active_at_perturbation": info.get("active", [])}
    if error is not None:
        return m, result, error
    m["activation_times"] = analysis.activation_times(tbar, w, cfg.threshold)
    dev = np.max(np.abs(w - w[:, :1]), axis=-1)                       # (K, R) vs reference
    i_stab, i_end = (np.searchsorted(hist["step"], s) for s in (step_stab, step_rob))
    m["deviation"] = dev
    # End of the stability plateau: the last logged step before any run's next activation.
    nxt = int(result.coordinate[cfg.plateau])
    t_next = m["activation_times"][:2, nxt].min()
    m["i_before_next"] = int(np.searchsorted(tbar[:, 0], t_next) - 1)
    m["i_stab"], m["i_rob"] = int(i_stab), int(i_end)
    return m, result, None


def context(m: dict):
    """Algorithm 1's result, rebuilt from saved metrics (for ``--replot``)."""
    return incremental.IncrementalResult.from_metrics(m)


def report(cfg: Config, m: dict, result) -> str:
    """Numbers behind the two checks."""
    names = result.names()
    nxt_stab = names[cfg.plateau]
    k_rob = int(np.searchsorted(result.times, cfg.robustness_tbar))
    nxt_rob = names[k_rob] if k_rob < len(names) else None
    i_nxt_stab = result.coordinate[cfg.plateau]
    t, dev, loss, act = m["tbar"][:, 0], m["deviation"], m["loss"], m["activation_times"]
    j_rob_end = np.searchsorted(t, result.times[k_rob + 1]) if k_rob + 1 < len(result.times) \
        else len(t) - 1
    i13 = min(np.searchsorted(t, 1.3), len(t) - 1)
    rows = [
        ["(a) stability", f"t = {m['t_stability']:.3f}", f"{dev[m['i_stab'], 1]:.3g}",
         f"{dev[m['i_before_next'], 1]:.2e} (before {nxt_stab})",
         f"{nxt_stab}: {act[0, i_nxt_stab]:.3f} vs {act[1, i_nxt_stab]:.3f}"],
        ["all weights (counter-ex.)", f"t = {m['t_stability']:.3f}", f"{dev[m['i_stab'], 2]:.3g}",
         f"loss at t=1.3: {loss[i13, 2]:.3g} vs {loss[i13, 0]:.3g}", ""],
    ]
    if nxt_rob is not None:
        i_rob = result.coordinate[k_rob]
        rows.append(["(b) robustness", f"t = {cfg.robustness_tbar}", f"{dev[m['i_rob'], 3]:.1e}",
                     f"{dev[j_rob_end, 3]:.2e} (next plateau)",
                     f"{nxt_rob}: {act[0, i_rob]:.3f} vs {act[3, i_rob]:.3f}"])
    return _common.format_table(["check", "perturbed at", "max|w - w_ref| after",
                                 "max|w - w_ref| later", "next activation ref vs perturbed"],
                                rows)


def plot(cfg: Config, m: dict, result, out, show: bool):
    """Figure R3: entries around each perturbation (solid perturbed, dashed reference) and loss."""
    plt = _common.pyplot(show)
    t, w, names = m["tbar"][:, 0], m["w"], [incremental.coordinate_name(i, D)
                                              for i in range(2 * D)]
    colors = plt.cm.tab10(np.arange(2 * D))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, r, t0, title in ((axes[0], 1, m["t_stability"], "(a) stability: active weights perturbed"),
                             (axes[1], 3, cfg.robustness_tbar, "(b) robustness: N(0, α²) noise")):
        for i in range(2 * D):
            if np.max(np.abs(w[:, 0, i])) < cfg.threshold:
                continue
            ax.plot(t, w[:, 0, i], color=colors[i], ls="--", lw=1.2)
            ax.plot(t, w[:, r, i], color=colors[i], lw=1.6, alpha=0.8, label=names[i])
        ax.axvline(t0, color="r", lw=0.8, ls=":")
        ax.set(title=title, xlabel="t / log(1/α)", ylabel="entries of a and b")
        ax.legend(fontsize=8, ncol=2, title="solid: perturbed, dashed: reference",
                  title_fontsize=7)
    ax = axes[2]
    for r, label in enumerate(RUNS):
        ax.plot(t, m["loss"][:, r], lw=1.4, ls="--" if r == 0 else "-", label=label)
    ax.plot(t, result.staircase(t), "k:", lw=1, label="Algorithm 1")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 20)
    ax.set(title="loss; perturbing all weights skips stages", xlabel="t / log(1/α)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Assumption checks at α = {cfg.alpha:.0e}")
    fig.tight_layout()
    paths = [_common.save_figure(fig, out, NAME, show)]
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
