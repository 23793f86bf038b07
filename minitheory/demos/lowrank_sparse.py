"""SGD on a one-layer transformer makes low-rank updates and a sparse W_O (Li, Wang, Zhang, Liu,
Chen 2024, Figs. 1-3).

Trains the one-layer softmax transformer with hinge loss by mini-batch SGD on data made of
orthonormal patterns (two label-relevant). Then: (1) truncates the updates of W_Q, W_K, W_V to
rank r and evaluates without retraining; (2) draws the singular values of the update of W_K
during training; (3) sorts the row norms of W_O and prunes rows by magnitude, at random and
largest first; (4) draws the training curves. With --seeds S, S seeds train together on one run
axis and the curves show their mean and range.

    python -m minitheory.demos.lowrank_sparse [--seeds S] [--out DIR] [--show] [--help]
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
    """Defaults: the spec, sections (b), (c), (e) [project choice]."""

    seed: int = field(default=0, metadata={"help": "first seed; run r uses seed + r"})
    seeds: int = field(default=1, metadata={"help": "number of seeds trained together"})
    d: int = field(default=20, metadata={"help": "token dimension (= m_a = m_b)"})
    M: int = field(default=10, metadata={"help": "number of orthonormal patterns, 2 <= M <= d"})
    L: int = field(default=20, metadata={"help": "tokens per sample"})
    n_rel: int = field(default=8, metadata={"help": "tokens of the label's pattern per sample"})
    n_conf: int = field(default=2, metadata={"help": "tokens of the other pattern (< n_rel)"})
    sigma: float = field(default=0.05, metadata={"help": "token noise standard deviation"})
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
    prune_rates: tuple[float, ...] = field(default=tuple(np.round(np.arange(0, 1, 0.1), 1)),
                                           metadata={"help": "pruning rates in [0, 1]"})
    n_random: int = field(default=5, metadata={"help": "random-pruning draws averaged"})
    cost: float = field(default=0.01, metadata={"help": "test-loss increase that counts as "
                                                        "a pruning cost"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("seeds", self.seeds, low=1, high=256)
        self.data_config(), self.model_config(), self.sgd_config()     # validate the parts
        if not self.ranks or not self.spectra_steps or not self.prune_rates:
            raise ValueError("ranks, spectra_steps and prune_rates must each be non-empty")
        for i, r in enumerate(self.ranks):
            check_int(f"ranks[{i}]", r, low=0, high=self.d)
        for i, t in enumerate(self.spectra_steps):
            check_int(f"spectra_steps[{i}]", t, low=1, high=max(self.steps, 1))
        for i, rate in enumerate(self.prune_rates):
            check_float(f"prune_rates[{i}]", rate, low=0.0, high=1.0)
        check_int("n_random", self.n_random, low=1)
        check_float("cost", self.cost, low=0.0, low_open=True)

    def data_config(self):
        return data.DataConfig(d=self.d, M=self.M, L=self.L, n_rel=self.n_rel,
                               n_conf=self.n_conf, sigma=self.sigma)

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
    p, p0, test = res.params, res.params0, res.test
    full = analysis.evaluate(p, *test)
    m["full_hinge"], m["full_att"] = full[0], full[2]
    trunc = [analysis.evaluate(analysis.truncated_params(p, p0, r), *test) for r in cfg.ranks]
    trunc_o = [analysis.evaluate(analysis.truncated_params(p, p0, r, keys=model.TRAINED), *test)
               for r in cfg.ranks]
    m["ranks"] = np.array(cfg.ranks)
    m["trunc_hinge"] = np.array([t[0] for t in trunc])                 # (n_ranks, R)
    m["trunc_att"] = np.array([t[2] for t in trunc])
    m["trunc_hinge_with_O"] = np.array([t[0] for t in trunc_o])
    m["spectra_steps"] = np.array(cfg.spectra_steps)
    m["sv_dWK_t"] = singular_values(h["W_K"][list(cfg.spectra_steps)] - h["W_K"][0])
    for k in model.TRAINED:
        m[f"sv_d{k}"] = singular_values(p[k] - p0[k])                  # (R, k)
        m[f"top2_share_d{k}"] = energy_share(p[k] - p0[k], 2)
    m["row_norms"] = np.sort(np.linalg.norm(p["W_O"], axis=-1), axis=-1)  # (R, m)
    m["init_row_scale"] = cfg.xi * np.sqrt(cfg.d / cfg.m)
    m["prune_rates"] = np.array(cfg.prune_rates)
    # Random pruning draws from a fourth child of the seed: the first three drive training.
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[3])
    for order in analysis.PRUNE_ORDERS:
        m[f"prune_{order}"] = analysis.pruning_curve(p, test, cfg.prune_rates, order, rng,
                                                     n_draws=cfg.n_random)
    return m, None, None


def first_costly_rate(curve: np.ndarray, rates: np.ndarray, cost: float) -> np.ndarray:
    """Per run, the first rate whose loss exceeds the unpruned loss by more than ``cost``
    (``inf`` if none). ``curve`` ``(n_rates, R)`` with ``rates[0] == 0`` as the reference."""
    bad = curve - curve[np.argmin(rates)] > cost
    return np.where(bad.any(0), rates[np.argmax(bad, axis=0)], np.inf)


def report(cfg: Config, m: dict, _context=None) -> str:
    """Tables of the numbers behind the three claims (mean [min, max] over seeds)."""
    rows = [[k, _common.format_spread(m[f"sv_d{k}"][:, 0]), _common.format_spread(m[f"sv_d{k}"][:, 1]), _common.format_spread(m[f"sv_d{k}"][:, 2]),
             _common.format_spread(m[f"sv_d{k}"][:, 1] / m[f"sv_d{k}"][:, 2]), _common.format_spread(m[f"top2_share_d{k}"])]
            for k in model.TRAINED]
    t1 = _common.format_table(["update", "sigma_1", "sigma_2", "sigma_3", "sigma_2/sigma_3",
                               "top-2 share of ||.||_F^2"], rows)
    rows = [[r, _common.format_spread(m["trunc_hinge"][i]), _common.format_spread(m["trunc_att"][i]),
             _common.format_spread(m["trunc_hinge_with_O"][i])] for i, r in enumerate(m["ranks"])]
    rows.append(["full", _common.format_spread(m["full_hinge"]), _common.format_spread(m["full_att"]), ""])
    t2 = _common.format_table(["rank r", "test hinge (Q, K, V truncated)", "att_*",
                               "test hinge (O truncated too)"], rows)
    small = np.sum(m["row_norms"] < 2 * m["init_row_scale"], axis=-1)
    orders = analysis.PRUNE_ORDERS
    rows = [[f"{rate:g}"] + [_common.format_spread(m[f"prune_{o}"][i]) for o in orders]
            for i, rate in enumerate(m["prune_rates"])]
    rows.append([f"first R costing > {cfg.cost}"] +
                [_common.format_spread(first_costly_rate(m[f"prune_{o}"], m["prune_rates"], cfg.cost))
                 for o in orders])
    t3 = _common.format_table(["pruning rate R"] + [f"test hinge, {o}" for o in orders], rows)
    return "\n\n".join([
        f"Updates W(T) - W(0) after {cfg.steps} steps ({cfg.seeds} seed(s)):", t1,
        "Rank-r truncation of the updates (Fig. 1):", t2,
        f"W_O rows still at init scale (< 2 x {m['init_row_scale']:.3f}): {_common.format_spread(small)} of {cfg.m}."
        " Pruning (Fig. 3):", t3])


def plot(cfg: Config, m: dict, _context, out, show: bool):
    """Figures 1-3 of the paper and the training curves (Fig. 4)."""
    plt = _common.pyplot(show)
    seeds = f" ({cfg.seeds} seeds: mean and range)" if cfg.seeds > 1 else ""
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, full, label in ((axes[0], "trunc_hinge", "full_hinge", "test hinge loss"),
                                 (axes[1], "trunc_att", "full_att", "att_* (label-relevant)")):
        _common.plot_band(ax, m["ranks"], m[key], marker="o", label="Q, K, V updates truncated to rank r")
        ax.axhline(m[full].mean(), color="k", ls="--", lw=1, label="untruncated")
        ax.set(xlabel="rank r", ylabel=label, xscale="log")
        ax.set_xticks(m["ranks"], [str(r) for r in m["ranks"]])
        ax.legend(fontsize=8)
    fig.suptitle("Fig. 1: the updates are rank 2, so rank-2 truncation costs nothing" + seeds)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_rank", show))

    fig, ax = plt.subplots(figsize=(6, 4))
    idx = np.arange(1, m["sv_dWK_t"].shape[-1] + 1)
    for j, t in enumerate(m["spectra_steps"]):
        _common.plot_band(ax, idx, np.maximum(m["sv_dWK_t"][j].T, 1e-12), marker=".", label=f"t = {t}")
    ax.set(yscale="log", xlabel="index i", ylabel="σ_i(ΔW_K^(t))",
           title="Fig. 2: two singular values of ΔW_K dominate" + seeds)
    ax.legend(fontsize=8)
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_spectra", show))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    norms = m["row_norms"]
    ax.bar(np.arange(1, norms.shape[-1] + 1), norms.mean(0), color="tab:blue")
    ax.axhline(m["init_row_scale"], color="k", ls="--", lw=1, label="init scale ξ√(m_a/m)")
    ax.set(xlabel="neuron (sorted)", ylabel="‖W_O[i, :]‖", title="(a) sorted row norms of W_O")
    ax.legend(fontsize=8)
    ax = axes[1]
    for order in analysis.PRUNE_ORDERS:
        _common.plot_band(ax, m["prune_rates"], m[f"prune_{order}"], marker="o", label=order)
    ax.set(xlabel="pruning rate R", ylabel="test hinge loss", title="(b) pruning rows of W_O")
    ax.legend(fontsize=8)
    fig.suptitle("Fig. 3: W_O is sparse, so magnitude pruning costs almost nothing" + seeds)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_pruning", show))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    t = np.arange(m["test_hinge"].shape[0])
    _common.plot_band(axes[0], t, m["test_hinge"], label="test hinge")
    _common.plot_band(axes[0], t, m["test_error"], label="test 0/1 error")
    _common.plot_band(axes[1], t, m["att_rel"], label="label-relevant tokens")
    _common.plot_band(axes[1], t, 1 - m["att_rel"], label="other tokens")
    axes[0].set(xlabel="SGD step t", title="test loss")
    axes[1].set(xlabel="SGD step t", title="attention mass of label-relevant queries")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Training curves" + seeds)
    fig.tight_layout()
    paths.append(_common.save_figure(fig, out, "lowrank_sparse_training", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
