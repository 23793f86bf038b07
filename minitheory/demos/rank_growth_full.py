"""Full softmax attention learns low-rank updates, one direction at a time (Boix-Adsera et al.
2023, Sec. 5; a planted-teacher analogue [project choice] of the paper's Figs. 4 and 7 of
arXiv v2, which measure ViT and GPT-2).

A full attention head (W_K, W_Q, W_V of shape d x d_h, W_O of shape d_out x d_h) trained by
gradient descent from small initialization on a planted teacher with low-rank key-query and
value-output products (by default rank 2 and rank 3; ``--m-singular`` / ``--n-singular`` set
the singular values, their count is the rank; ``--d-h``, ``--d-out`` the widths).
Tracks the stable rank and singular values of the learned perturbations dM = M(t) - M(0),
M = W_K W_Q^T, and dN = N(t) - N(0), N = W_V W_O^T, for several init scales at once.

    python -m minitheory.demos.rank_growth_full [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..rank_growth import analysis, data, training
from ..spectral import singular_values
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import _common

NAME = "rank_growth_full"


@dataclass(frozen=True)
class Config:
    """Defaults: the non-diagonal toy of ``data.full_toy`` [project choice]."""

    seed: int = field(default=0, metadata={"help": "data and teacher from default_rng(seed), "
                                                   "init from default_rng(seed + 1)"})
    n_seq: int = field(default=256, metadata={"help": "number of sequences (full batch)"})
    n_tokens: int = field(default=8, metadata={"help": "tokens per sequence"})
    d: int = field(default=6, metadata={"help": "token dimension d; >= 3"})
    d_h: int = field(default=0, metadata={"help": "head dimension of the student W_K, W_Q, W_V, "
                                                  "W_O (0: d); >= the teacher's ranks"})
    d_out: int = field(default=0, metadata={"help": "output dimension (0: d)"})
    m_singular: tuple[float, ...] = field(default=data.M_SINGULAR, metadata={
        "help": "singular values of the teacher's M* = W_K W_Q^T, each > 0 (count = rank)"})
    n_singular: tuple[float, ...] = field(default=data.N_SINGULAR, metadata={
        "help": "singular values of the teacher's N* = W_V W_O^T, each > 0 (count = rank)"})
    alphas: tuple[float, ...] = field(default=(1.0, 1e-1, 1e-2, 1e-4, 1e-8, 1e-16),
                                      metadata={"help": "init scales, each in (0, 1]"})
    eta: float = field(default=0.02, metadata={"help": "gradient-descent step"})
    tbar_max: float = field(default=4.0, metadata={"help": "train to t/log(1/alpha)"})
    steps_alpha_one: int = field(default=3000, metadata={"help": "steps of the alpha = 1 run"})
    detail_alpha: float = field(default=1e-8, metadata={"help": "alpha of the singular-value "
                                                                "panels (one of --alphas)"})
    rank_threshold: float = field(default=0.05, metadata={"help": "numerical rank: #sigma > this"})
    log_every: int = field(default=1, metadata={"help": "log the singular values every k steps"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("n_seq", self.n_seq, low=1)
        check_int("n_tokens", self.n_tokens, low=1)
        check_int("d", self.d, low=3)
        d_h, d_out = check_int("d_h", self.d_h, low=0), check_int("d_out", self.d_out, low=0)
        d_h, d_out = d_h or self.d, d_out or self.d
        for name, sv, most in (("m_singular", self.m_singular, min(self.d, d_h)),
                               ("n_singular", self.n_singular, min(self.d, d_h, d_out))):
            if len(sv) == 0 or len(sv) > most or any(not np.isfinite(v) or v <= 0 for v in sv):
                raise ValueError(f"{name} must hold 1 to {most} singular values (rank <= d, d_h"
                                 f"{', d_out' if name == 'n_singular' else ''}), each finite and "
                                 f"> 0, got {list(sv)}")
        if len(self.alphas) == 0:
            raise ValueError("alphas must hold at least one init scale")
        for i, al in enumerate(self.alphas):
            check_float(f"alphas[{i}]", al, low=0.0, high=1.0, low_open=True)
        check_float("eta", self.eta, low=0.0, low_open=True)
        check_float("tbar_max", self.tbar_max, low=0.0, low_open=True, high=100.0)
        check_int("steps_alpha_one", self.steps_alpha_one, low=1)
        check_float("rank_threshold", self.rank_threshold, low=0.0, low_open=True)
        check_int("log_every", self.log_every, low=1)
        if self.detail_alpha not in self.alphas:
            raise ValueError(f"detail_alpha must be one of alphas {list(self.alphas)}, "
                             f"got {self.detail_alpha}")


def run(cfg: Config, progress=None):
    """Train all init scales on one run axis; returns ``(metrics, None, error)``."""
    d_h, d_out = cfg.d_h or cfg.d, cfg.d_out or cfg.d
    X, Y, M_star, N_star = data.full_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d, d_out=d_out,
                                         m_singular=cfg.m_singular, n_singular=cfg.n_singular)
    alphas = np.asarray(cfg.alphas, dtype=np.float64)
    params0 = data.init_full(np.random.default_rng(cfg.seed + 1), cfg.d, d_h, d_out, alphas)
    n_steps = np.where(alphas < 1, training.steps_for(alphas, cfg.tbar_max, cfg.eta),
                       cfg.steps_alpha_one)
    error = None
    try:
        _, hist = training.train_full(params0, X, Y, eta=cfg.eta, n_steps=n_steps,
                                      log_every=cfg.log_every, rank_threshold=cfg.rank_threshold,
                                      progress=progress)
    except TrainingStopped as exc:
        error, hist = exc, exc.partial[1]
    tbar = analysis.rescaled_time(hist["step"], cfg.eta, alphas)
    metrics = {"alphas": alphas, "n_steps": n_steps, "tbar": tbar,
               "sv_M_star": singular_values(M_star), "sv_N_star": singular_values(N_star),
               **hist}
    if len(hist["step"]):      # first time sigma_k > threshold, per run and k (inf: never)
        metrics["events_dM"] = analysis.activation_times(tbar, hist["sv_dM"], cfg.rank_threshold)
        metrics["events_dN"] = analysis.activation_times(tbar, hist["sv_dN"], cfg.rank_threshold)
    return metrics, None, error


def report(cfg: Config, m: dict, _context=None) -> str:
    """Per alpha: the order in which singular directions appear, final spectra, stable ranks."""
    rows = []
    for r, al in enumerate(m["alphas"]):
        ev = [(t, f"VO{k + 1}") for k, t in enumerate(m["events_dN"][r]) if np.isfinite(t)]
        ev += [(t, f"KQ{k + 1}") for k, t in enumerate(m["events_dM"][r]) if np.isfinite(t)]
        ev.sort()
        events = ", ".join(f"{name} {t:.2f}" for t, name in ev[:6])
        rows.append([f"{al:.0e}" + (" (t)" if al == 1 else ""), events,
                     " ".join(f"{v:.2f}" for v in m["sv_dM"][-1, r][:4]),
                     " ".join(f"{v:.2f}" for v in m["sv_dN"][-1, r][:4]),
                     f"{m['srank_dM'][-1, r]:.2f} / {m['srank_dN'][-1, r]:.2f}",
                     float(m["loss"][-1, r])])
    rows.append(["teacher", "-", " ".join(f"{v:.2f}" for v in m["sv_M_star"][:4]),
                 " ".join(f"{v:.2f}" for v in m["sv_N_star"][:4]), "", ""])
    return _common.format_table(
        ["alpha", f"first sigma > {cfg.rank_threshold} at t/log(1/alpha)", "final sigma(dM)",
         "final sigma(dN)", "srank dM / dN", "final loss"], rows)


def plot(cfg: Config, m: dict, _context, out, show: bool):
    """The figure: stable rank, singular values and numerical rank of dM and dN over time."""
    plt = _common.pyplot(show)
    alphas, tbar = m["alphas"], m["tbar"]
    small = np.flatnonzero(alphas < 1)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(alphas)))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    # Stable rank is noise while the perturbation is tiny: mask until ||dM||_F > 1e-3.
    norm_dM = np.sqrt(np.sum(m["sv_dM"] ** 2, axis=-1))
    norm_dN = np.sqrt(np.sum(m["sv_dN"] ** 2, axis=-1))
    teacher = {k: np.sum(m[k] ** 2) / m[k][0] ** 2 for k in ("sv_M_star", "sv_N_star")}
    for ax, key, nrm, star, title in (
            (axes[0, 0], "srank_dM", norm_dM, "sv_M_star", "stable rank of ΔM = Δ(W_K W_Q^T)"),
            (axes[0, 1], "srank_dN", norm_dN, "sv_N_star", "stable rank of ΔN = Δ(W_V W_O^T)")):
        for r in small:
            keep = (tbar[:, r] <= cfg.tbar_max) & (nrm[:, r] > 1e-3)
            ax.plot(tbar[keep, r], m[key][keep, r], color=colors[r], label=f"α = {alphas[r]:.0e}")
        ax.axhline(teacher[star], color="0.5", ls=":", lw=1, label="teacher")
        ax.set(title=title, xlabel="t / log(1/α)")
        ax.legend(fontsize=7)
    ax = axes[0, 2]
    for r in np.flatnonzero(alphas == 1):
        t = tbar[:, r]           # at alpha = 1 "tbar" holds the step t itself
        for key, nrm, color, name in (("dM", norm_dM, "tab:blue", "ΔM"),
                                      ("dN", norm_dN, "tab:orange", "ΔN")):
            live = nrm[:, r] > 1e-3
            ax.plot(t[live], m[f"srank_{key}"][live, r], color=color, label=f"stable rank {name}")
            ax.step(t[live], m[f"rank_{key}"][live, r], where="post", color=color, ls="--",
                    label=f"numerical rank {name} (σ > {cfg.rank_threshold})")
        ax.set_xscale("log")
        ax.set_ylim(0, cfg.d + 2.6)                 # headroom for the legend above the data
        _common.integer_ticks(ax.yaxis)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.set_title(f"α = 1 (large init): numerical rank {int(m['rank_dM'][-1, r])} (ΔM), "
                     f"{int(m['rank_dN'][-1, r])} (ΔN) of d = {cfg.d}", fontsize=11)
    ax.set(xlabel="step t (log)", ylabel="rank")
    r = int(np.flatnonzero(alphas == cfg.detail_alpha)[0])
    keep = tbar[:, r] <= cfg.tbar_max
    for ax, key, title in ((axes[1, 0], "sv_dM", "singular values of Δ(W_K W_Q^T)"),
                           (axes[1, 1], "sv_dN", "singular values of Δ(W_V W_O^T)")):
        sv = np.maximum(m[key][keep, r], 1e-20)
        for k in range(sv.shape[-1]):
            ax.plot(tbar[keep, r], sv[:, k], label=f"σ_{k + 1}")
        ax.axhline(cfg.rank_threshold, color="k", ls=":", lw=1,
                   label=f"rank threshold {cfg.rank_threshold}")
        ax.set_yscale("log")
        ax.set_ylim(1e-16, 5)   # below: float64 rounding noise
        ax.set(title=f"{title}, α = {alphas[r]:.0e}", xlabel="t / log(1/α)")
        ax.legend(fontsize=7, ncol=2, loc="center right")
    ax = axes[1, 2]
    for r in small:
        keep = tbar[:, r] <= cfg.tbar_max
        ax.step(tbar[keep, r], m["rank_dM"][keep, r], where="post", color=colors[r], ls="--")
        ax.step(tbar[keep, r], m["rank_dN"][keep, r], where="post", color=colors[r],
                label=f"α = {alphas[r]:.0e}")
    ax.set(title=f"numerical rank (σ > {cfg.rank_threshold}); solid ΔN, dashed ΔM",
           xlabel="t / log(1/α)", ylabel="rank")
    _common.integer_ticks(ax.yaxis)
    ax.legend(fontsize=7)
    fig.suptitle(f"Full attention head, planted rank-{len(cfg.m_singular)} (KQ) / "
                 f"rank-{len(cfg.n_singular)} (VO) teacher: directions are learned one at a time "
                 f"from small init (cf. paper Figs. 4 and 7, arXiv v2)")
    fig.tight_layout()
    paths = [_common.save_figure(fig, out, NAME, show)]
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
