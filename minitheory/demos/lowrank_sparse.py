"""SGD on a one-layer transformer makes low-rank updates and a sparse W_O (Li, Wang, Zhang, Liu,
Chen 2024, arXiv:2406.17167v1, Figs. 1-3).

Trains the one-layer softmax transformer with hinge loss by mini-batch SGD on data made of
orthonormal patterns (two label-relevant). Then: (1) truncates the updates of all trained
matrices W_Q, W_K, W_V, W_O to rank r and evaluates without retraining (Fig. 1; truncating
W_Q, W_K, W_V only is an extra curve); (2) draws the singular values of the update of W_K at
t = 1, 10, 20, 30, one panel each (Fig. 2 (A)-(D)); (3) sorts the row norms of W_O and prunes
rows by magnitude, at random and largest first (Fig. 3); (4) draws the training curves (no
figure of the paper). With --seeds S, S seeds train together on one run axis and the curves
show their mean and range. --pattern-set random trains on a random orthonormal pattern set
instead of the standard basis.

    python -m minitheory.demos.lowrank_sparse [--seeds S] [--pattern-set random] [--out DIR]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..lowrank_sparse import analysis, data, model, training
from ..spectral import energy_share, singular_values
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "lowrank_sparse"


@dataclass(frozen=True)
class Config:
    """Defaults [project choice]: the sizes of :class:`data.DataConfig`,
    :class:`training.ModelConfig` and :class:`training.SGDConfig`; the ranks, steps t and
    pruning rates of arXiv:2406.17167v1, Figs. 1-3."""

    seed: int = field(default=0, metadata={"help": "first seed; run r uses seed + r"})
    seeds: int = field(default=1, metadata={"help": "number of seeds trained together"})
    d: int = field(default=20, metadata={"help": "token dimension (= m_a = m_b)"})
    M: int = field(default=10, metadata={"help": "number of orthonormal patterns, 2 <= M <= d"})
    L: int = field(default=20, metadata={"help": "tokens per sample"})
    n_rel: int = field(default=8, metadata={"help": "tokens of the label's pattern per sample"})
    n_conf: int = field(default=2, metadata={"help": "tokens of the other pattern (< n_rel)"})
    sigma: float = field(default=0.05, metadata={"help": "token noise standard deviation"})
    pattern_set: str = field(default="standard", metadata={
        "help": "patterns mu_1..mu_M: 'standard' (e_j) or 'random' (random orthonormal set)"})
    pattern_seed: int = field(default=0, metadata={"help": "seed of the random pattern set "
                                                           "(shared by all seeds)"})
    m: int = field(default=64, metadata={"help": "neurons (rows of W_O)"})
    xi: float = field(default=0.1, metadata={"help": "W_O init scale: N(0, xi^2/m)"})
    shared_a: bool = field(default=False, metadata={"help": "one output vector a for all "
                                                            "positions"})
    batch: int = field(default=16, metadata={"help": "SGD batch size"})
    lr: float = field(default=3.0, metadata={"help": "SGD learning rate"})
    steps: int = field(default=60, metadata={"help": "SGD steps"})
    n_train: int = field(default=1000, metadata={"help": "training samples"})
    n_test: int = field(default=1000, metadata={"help": "fresh test samples"})
    ranks: tuple[int, ...] = field(default=(1, 2, 5, 10, 20),
                                   metadata={"help": "truncation ranks of Fig. 1 (<= d)"})
    spectra_steps: tuple[int, ...] = field(default=(1, 10, 20, 30),
                                           metadata={"help": "steps t of Fig. 2 (<= steps)"})
    prune_rates: tuple[float, ...] = field(default=tuple(i / 10 for i in range(10)),
                                           metadata={"help": "pruning rates in [0, 1]"})
    n_random: int = field(default=5, metadata={"help": "random-pruning draws averaged"})
    cost: float = field(default=0.01, metadata={"help": "test-loss increase that counts as "
                                                        "a pruning cost"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("seeds", self.seeds, low=1, high=256)
        check_int("steps", self.steps, low=1)       # before the options that depend on it
        self.data_config(), self.model_config(), self.sgd_config()     # validate the parts
        if not self.ranks or not self.spectra_steps or not self.prune_rates:
            raise ValueError("ranks, spectra_steps and prune_rates must each be non-empty")
        for i, r in enumerate(self.ranks):
            check_int(f"ranks[{i}]", r, low=1, high=self.d)
        if list(self.ranks) != sorted(set(self.ranks)):
            raise ValueError(f"ranks must be strictly increasing, got {list(self.ranks)}")
        for i, t in enumerate(self.spectra_steps):
            check_int(f"spectra_steps[{i}]", t, low=1, high=self.steps)
        for i, rate in enumerate(self.prune_rates):
            check_float(f"prune_rates[{i}]", rate, low=0.0, high=1.0)
        check_int("n_random", self.n_random, low=1)
        check_float("cost", self.cost, low=0.0, low_open=True)

    def data_config(self):
        return data.DataConfig(d=self.d, M=self.M, L=self.L, n_rel=self.n_rel,
                               n_conf=self.n_conf, sigma=self.sigma,
                               pattern_set=self.pattern_set, pattern_seed=self.pattern_seed)

    def model_config(self):
        return training.ModelConfig(m=self.m, xi=self.xi, shared_a=self.shared_a)

    def sgd_config(self):
        return training.SGDConfig(batch=self.batch, lr=self.lr, steps=self.steps,
                                  n_train=self.n_train, n_test=self.n_test)


def run(cfg: Config, progress=None):
    """Train, then truncate, take spectra, prune. Returns ``(metrics, None, error)``."""
    seeds = [cfg.seed + r for r in range(cfg.seeds)]
    res, error = outcome(training.train, seeds, cfg.data_config(), cfg.model_config(),
                         cfg.sgd_config(), progress=progress)
    h = res.history
    m = {"seeds": np.array(seeds), "test_hinge": h["test_hinge"], "test_error": h["test_error"],
         "att_rel": h["att_rel"], "train_loss": h["train_loss"]}
    if error is not None:
        return m, None, error
    with _common.keep_on_interrupt(m, "truncating, taking spectra and pruning after training",
                                   step=cfg.steps):
        _analyse(cfg, m, res, h)
    return m, None, None


def _analyse(cfg: Config, m: dict, res, h) -> None:
    """Fill ``m`` with the truncation, spectra and pruning metrics of the trained ``res``."""
    p, p0, test = res.params, res.params0, res.test
    full = analysis.evaluate(p, *test)
    m["full_hinge"], m["full_att"] = full[0], full[2]
    m["ranks"] = np.array(cfg.ranks)
    # Fig. 1 of arXiv:2406.17167v1: all trained matrices truncated; ours: W_Q, W_K, W_V only.
    m["rank_all_hinge"], m["rank_all_att"] = analysis.rank_r_curve(p, p0, test, cfg.ranks)
    m["rank_qkv_hinge"], m["rank_qkv_att"] = analysis.rank_r_curve(p, p0, test, cfg.ranks,
                                                                   keys=analysis.QKV)
    m["spectra_steps"] = np.array(cfg.spectra_steps)
    m["sv_dWK_t"] = analysis.update_spectra(h["W_K"], cfg.spectra_steps)   # (n_t, R, d)
    for k in model.TRAINED:
        m[f"sv_d{k}"] = singular_values(p[k] - p0[k])                  # (R, k)
        m[f"top2_share_d{k}"] = energy_share(p[k] - p0[k], 2)
    mu = data.patterns(cfg.data_config())                    # the patterns training used
    for k in analysis.QKV:
        m[f"relevant_share_d{k}"] = analysis.relevant_share(p[k] - p0[k], mu)
    m["row_norms"] = np.sort(np.linalg.norm(p["W_O"], axis=-1), axis=-1)  # (R, m)
    m["init_row_scale"] = cfg.xi * np.sqrt(cfg.d / cfg.m)
    m["prune_rates"] = np.array(cfg.prune_rates)
    # Random pruning draws from a fourth child of the seed: the first three drive training.
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[3])
    for order in analysis.PRUNE_ORDERS:
        m[f"prune_{order}"] = analysis.pruning_curve(p, test, cfg.prune_rates, order, rng,
                                                     n_draws=cfg.n_random)


def first_costly_rate(curve: np.ndarray, rates: np.ndarray, cost: float) -> np.ndarray:
    """Per run, the first rate whose loss exceeds the unpruned loss by more than ``cost``
    (``inf`` if none). ``curve`` ``(n_rates, R)`` with ``rates[0] == 0`` as the reference."""
    bad = curve - curve[np.argmin(rates)] > cost
    return np.where(bad.any(0), rates[np.argmax(bad, axis=0)], np.inf)


PAPER = "arXiv:2406.17167v1"


def report(cfg: Config, m: dict, _context=None) -> str:
    """Tables of the numbers behind the paper's Figs. 1-3 (mean [min, max] over seeds)."""
    spread = _common.format_spread
    rows = [[k] + [spread(m[f"sv_d{k}"][:, i]) for i in range(3)] +
            [spread(m[f"sv_d{k}"][:, 1] / m[f"sv_d{k}"][:, 2]), spread(m[f"top2_share_d{k}"]),
             spread(m[f"relevant_share_d{k}"]) if f"relevant_share_d{k}" in m else ""]
            for k in model.TRAINED]
    t0 = _common.format_table(["update", "sigma_1", "sigma_2", "sigma_3", "sigma_2/sigma_3",
                               "top-2 share of ||.||_F^2", "share on span(mu_1, mu_2)"], rows)
    same_att = np.array_equal(m["rank_all_att"], m["rank_qkv_att"])
    rows = [[r, spread(m["rank_all_hinge"][i]), spread(m["rank_all_att"][i]),
             spread(m["rank_qkv_hinge"][i])] + ([] if same_att else [spread(m["rank_qkv_att"][i])])
            for i, r in enumerate(m["ranks"])]
    rows.append(["untruncated", spread(m["full_hinge"]), spread(m["full_att"]), ""] +
                ([] if same_att else [""]))
    t1 = _common.format_table(
        ["rank r", "test hinge (all of W_Q, W_K, W_V, W_O)",
         "att_*" + (" (both; attention uses W_Q, W_K only)" if same_att else " (all)"),
         "test hinge (W_Q, W_K, W_V only; ours)"] + ([] if same_att else ["att_* (W_Q, W_K, W_V)"]),
        rows)
    sv = m["sv_dWK_t"]                                                # (n_t, R, d)
    rows = [[t] + [spread(sv[j, :, i]) for i in range(3)] +
            [spread(energy_share_from_sv(sv[j], 2))] for j, t in enumerate(m["spectra_steps"])]
    t2 = _common.format_table(["step t", "sigma_1", "sigma_2", "sigma_3",
                               "top-2 share of ||.||_F^2"], rows)
    small = np.sum(m["row_norms"] < 2 * m["init_row_scale"], axis=-1)
    orders = analysis.PRUNE_ORDERS
    rows = [[f"{rate:g}"] + [spread(m[f"prune_{o}"][i]) for o in orders]
            for i, rate in enumerate(m["prune_rates"])]
    rows.append([f"first R costing > {cfg.cost}"] +
                [spread(first_costly_rate(m[f"prune_{o}"], m["prune_rates"], cfg.cost))
                 for o in orders])
    t3 = _common.format_table(["pruning rate R"] + [f"test hinge, {o}" for o in orders], rows)
    return "\n\n".join([
        f"Updates W(T) - W(0) after {cfg.steps} steps ({cfg.seeds} seed(s), "
        f"{cfg.pattern_set} patterns):", t0,
        f"Rank-r truncation of the updates, no retraining ({PAPER}, Fig. 1):", t1,
        f"Singular values of dW_K(t) = W_K(t) - W_K(0) ({PAPER}, Fig. 2 (A)-(D)):", t2,
        f"W_O rows still at init scale (< 2 x {m['init_row_scale']:.3f}): {spread(small)} of "
        f"{cfg.m} ({PAPER}, Fig. 3). Pruning rows of W_O, no retraining ({PAPER}, Fig. 3):", t3])


def energy_share_from_sv(sv: np.ndarray, k: int) -> np.ndarray:
    """Share of the squared singular values ``sv`` ``(..., n)`` held by the top ``k``."""
    total = np.sum(sv ** 2, axis=-1)
    return np.divide(np.sum(sv[..., :k] ** 2, axis=-1), total, out=np.ones_like(total),
                     where=total > 0)


def plot(cfg: Config, m: dict, _context, out, show: bool):
    """The paper's Figs. 1-3 and the training curves (no paper figure)."""
    plt = _common.pyplot(show)
    seeds = f"; {cfg.seeds} seeds: mean and range" if cfg.seeds > 1 else ""
    pats = "" if cfg.pattern_set == "standard" else "; random orthonormal patterns"
    paths = []
    # The hinge loss spans 1 .. 1e-4 and is exactly 0 for some seeds: symmetric-log axes,
    # logarithmic above LIN and linear below, so a zero loss stays on the plot.
    lin = 1e-4

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    _common.plot_band(ax, m["ranks"], m["rank_all_hinge"], marker="o",
                      label="all of W_Q, W_K, W_V, W_O truncated (paper)")
    _common.plot_band(ax, m["ranks"], m["rank_qkv_hinge"], marker="s",
                      ls=":", label="W_Q, W_K, W_V only (ours)")
    ax.axhline(m["full_hinge"].mean(), color="k", ls="--", lw=1, label="untruncated")
    ax.set_yscale("symlog", linthresh=lin)
    ax.set(xlabel="rank r of every truncated update", ylim=(0, 1.5),
           ylabel=f"test hinge loss (log; linear below {lin:g})", title="(a) test loss")
    ax = axes[1]
    same = np.array_equal(m["rank_all_att"], m["rank_qkv_att"])
    _common.plot_band(ax, m["ranks"], m["rank_all_att"], marker="o",
                      label="all truncated" + (" (= W_Q, W_K, W_V only)" if same else ""))
    if not same:
        _common.plot_band(ax, m["ranks"], m["rank_qkv_att"], marker="s", ls=":",
                          label="W_Q, W_K, W_V only (ours)")
    ax.axhline(m["full_att"].mean(), color="k", ls="--", lw=1, label="untruncated")
    ax.set(xlabel="rank r of every truncated update",
           ylabel="att_*: attention on label-relevant tokens", title="(b) attention")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(m["ranks"], [str(r) for r in m["ranks"]])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{PAPER}, Fig. 1: rank-r truncation of the updates W(T) - W(0), no retraining"
                 + seeds + pats, fontsize=10)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_rank", show))

    sv = np.maximum(m["sv_dWK_t"], 1e-12)                              # (n_t, R, d)
    n_t = sv.shape[0]
    fig, axes = plt.subplots(1, n_t, figsize=(3.1 * n_t + 0.6, 3.6), sharey=True, squeeze=False)
    idx = np.arange(1, sv.shape[-1] + 1)
    for j, (ax, t) in enumerate(zip(axes[0], m["spectra_steps"])):
        _common.plot_band(ax, idx, sv[j].T, marker=".", color="tab:blue")
        ax.set(yscale="log", xlabel="index i", title=f"({chr(ord('A') + j)}) t = {t}")
        ax.set_xticks([1, 5, 10, 15, 20] if sv.shape[-1] >= 20 else idx[::max(1, len(idx) // 5)])
    axes[0, 0].set_ylabel("σ_i(ΔW_K^(t)) (log)")
    fig.suptitle(f"{PAPER}, Fig. 2: singular values of ΔW_K^(t) = W_K^(t) − W_K^(0)" + seeds
                 + pats, fontsize=10)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_spectra", show))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    ax = axes[0]
    norms = m["row_norms"]
    ax.bar(np.arange(1, norms.shape[-1] + 1), norms.mean(0), color="tab:blue")
    ax.axhline(m["init_row_scale"], color="k", ls="--", lw=1, label="init scale ξ√(m_a/m)")
    ax.set(xlabel="neuron i (sorted by row norm)", ylabel="‖W_O[i, :]‖ (log)", yscale="log",
           title="(a) sorted row norms of the trained W_O")
    _common.integer_ticks(ax.xaxis)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for order in analysis.PRUNE_ORDERS:
        _common.plot_band(ax, m["prune_rates"], m[f"prune_{order}"], marker="o", label=order)
    base = m["prune_magnitude"][np.argmin(m["prune_rates"])].mean()
    ax.axhline(base + cfg.cost, color="0.5", ls=":", lw=1,
               label=f"unpruned + {cfg.cost} (counted as a cost)")
    ax.set_yscale("symlog", linthresh=lin)             # seeds with hinge 0 stay on the axis
    ax.set(xlabel="pruning rate R (fraction of rows of W_O zeroed)",
           ylabel=f"test hinge loss (log; linear below {lin:g})", ylim=(0, 1.5),
           title="(b) pruning rows of W_O, no retraining")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # off the data
    fig.suptitle(f"{PAPER}, Fig. 3: W_O is sparse, so magnitude pruning costs little" + seeds
                 + pats, fontsize=10)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_pruning", show))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    t = np.arange(m["test_hinge"].shape[0])
    _common.plot_band(axes[0], t, m["test_hinge"])
    axes[0].set_yscale("symlog", linthresh=lin)
    axes[0].set(xlabel="SGD step t", ylabel=f"test hinge loss (log; linear below {lin:g})",
                ylim=(0, 1.5), title="(a) test hinge loss")
    _common.plot_band(axes[1], t, m["test_error"], color="tab:red")
    axes[1].set(xlabel="SGD step t", ylabel="test 0/1 error", title="(b) test 0/1 error")
    _common.plot_band(axes[2], t, m["att_rel"], label="on label-relevant tokens (att_*)")
    _common.plot_band(axes[2], t, 1 - m["att_rel"], label="on other tokens (1 − att_*)")
    axes[2].set(xlabel="SGD step t", ylabel="attention mass of label-relevant queries",
                title="(c) attention", ylim=(0, 1))
    axes[2].legend(fontsize=8, loc="center right")
    fig.suptitle("Training curves (no figure of " + PAPER + "; the attention claim is the "
                 "ICLR-2023 paper's, arXiv:2302.06015)" + seeds + pats, fontsize=10)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_training", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
