"""Numerical checks of the two assumptions behind the incremental-learning limit (Boix-Adsera
et al. 2023, Assumptions 4.4 and 4.5), by the paper's own protocol (App. A; its Fig. 3 of
arXiv:2306.07042 v2, Fig. 2 of v1).

Both checks perturb one reference run at alpha = 1e-32 and continue training from the perturbed
state (solid) next to the unperturbed run (dashed); only coordinates with |w_i| > 1e-5 are
perturbed (``analysis.perturb_nonnegligible``), negligible ones are never touched.
(a) Stability (4.4): at five random epochs, N(0, 0.05^2) noise on every non-negligible
coordinate, then ``--epochs`` more epochs (the paper: 1000): the run returns to the plateau.
(b) Robustness (4.5): at each epoch where a coordinate first exceeds 1e-5, N(0, 0.01^2) noise on
the non-negligible coordinates: the next jump and the plateau it lands on are unchanged.
(c) [project choice] counter-example of ours: adding 0.1 N(0, 1) to *all* weights inside a
plateau lifts inactive coordinates from ~alpha to ~0.1, which is not small on the log scale,
and skips stages. Full-batch GD: one epoch is one step [project choice; the paper used SGD].

With ``--paper-toy`` the same checks run on the paper's App. A toy (1000 samples, d = 50).

    python -m minitheory.demos.rank_growth_assumptions [--paper-toy] [--out DIR] [--show]
"""
from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field

import numpy as np

from ..rank_growth import analysis, data, incremental, training
from ..rank_growth.model import DIAG_KEYS
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import _common

NAME = "rank_growth_assumptions"
KINDS = ("4.4 stability", "4.5 robustness", "counter-example (ours)")


@dataclass(frozen=True)
class Config:
    """Defaults: the diagonal toy at alpha = 1e-32 with the paper's protocol (App. A)."""

    seed: int = field(default=0, metadata={"help": "data from default_rng(seed), init from "
                                                   "seed + 1, perturbations from seed + 2"})
    n_seq: int = field(default=256, metadata={"help": "number of sequences"})
    n_tokens: int = field(default=8, metadata={"help": "tokens per sequence"})
    d: int = field(default=len(data.A_STAR), metadata={
        "help": "embedding dimension (the default toy's teacher fixes it to 4)"})
    alpha: float = field(default=1e-32, metadata={"help": "init scale, in (0, 1) (the paper: "
                                                          "1e-32)"})
    eta: float = field(default=0.02, metadata={"help": "gradient-descent step"})
    tbar_max: float = field(default=2.6, metadata={"help": "train to t/log(1/alpha)"})
    epochs: int = field(default=1000, metadata={"help": "epochs (= full-batch steps) trained "
                                                        "after each perturbation (the paper: 1000)"})
    n_stability: int = field(default=5, metadata={"help": "random epochs perturbed for 4.4"})
    std_stability: float = field(default=0.05, metadata={"help": "noise std of 4.4 (paper: 0.05)"})
    std_robustness: float = field(default=0.01, metadata={"help": "noise std of 4.5 (paper: "
                                                                  "0.01)"})
    negligible: float = field(default=1e-5, metadata={"help": "|w_i| at or below which a "
                                                              "coordinate is never perturbed"})
    plateau: int = field(default=2, metadata={"help": "counter-example: perturb inside the "
                                                      "plateau after this stage (1-based)"})
    sigma: float = field(default=0.1, metadata={"help": "counter-example: std of the noise "
                                                        "added to all weights"})
    threshold: float = field(default=0.05, metadata={"help": "|w_i| above which a coordinate "
                                                             "is plotted and counted active"})
    paper_toy: bool = field(default=False, metadata={
        "help": "the paper's App. A toy (changes the defaults of the options above)"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        check_int("n_seq", self.n_seq, low=1)
        check_int("n_tokens", self.n_tokens, low=1)
        check_int("d", self.d, low=1)
        if not self.paper_toy and self.d != len(data.A_STAR):
            raise ValueError(f"d must be {len(data.A_STAR)} for the default toy (its teacher), "
                             f"got {self.d}; use --paper-toy for another d")
        check_float("alpha", self.alpha, low=0.0, high=1.0, low_open=True, high_open=True)
        check_float("eta", self.eta, low=0.0, low_open=True)
        check_float("tbar_max", self.tbar_max, low=0.0, low_open=True, high=1000.0)
        check_int("epochs", self.epochs, low=1)
        check_int("n_stability", self.n_stability, low=1)
        check_float("std_stability", self.std_stability, low=0.0, low_open=True, high=1.0)
        check_float("std_robustness", self.std_robustness, low=0.0, low_open=True, high=1.0)
        check_float("negligible", self.negligible, low=0.0, low_open=True, high=1.0)
        check_int("plateau", self.plateau, low=1)
        check_float("sigma", self.sigma, low=0.0, low_open=True, high=1.0)
        check_float("threshold", self.threshold, low=0.0, low_open=True)


#: ``--paper-toy``: the App. A toy (arXiv v2); GD as in ``rank_growth --paper-toy`` [project
#: choice]; 300 epochs after each perturbation instead of 1000, to fit the time budget.
PAPER_TOY = dict(paper_toy=True, n_seq=data.PAPER_N_SEQ, n_tokens=data.PAPER_N_TOKENS,
                 d=data.PAPER_D, eta=1.0, tbar_max=15.0, epochs=300, threshold=0.01)


def config_class(argv) -> type:
    """``Config`` with the ``--paper-toy`` defaults when ``argv`` asks for them."""
    if "--paper-toy" not in argv:
        return Config
    base = {f.name: f for f in dataclasses.fields(Config)}
    return dataclasses.make_dataclass(
        "Config", [(k, bool if k == "paper_toy" else type(v),
                    field(default=v, metadata=base[k].metadata)) for k, v in PAPER_TOY.items()],
        bases=(Config,), frozen=True)


def toy(cfg):
    """``X, Y`` of the chosen toy."""
    if cfg.paper_toy:
        X, Y, _, _ = data.paper_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d)
        return X, Y
    return data.diagonal_toy(cfg.seed, cfg.n_seq, cfg.n_tokens, cfg.d)


def run(cfg: Config, progress=None):
    """The reference run, then every perturbed branch on one run axis; ``(metrics, result, error)``."""
    X, Y = toy(cfg)
    result = incremental.incremental_learning(X, Y, euler_step=5.0 if cfg.paper_toy else 0.05)
    if cfg.plateau >= len(result.times):
        raise ValueError(f"plateau must be < the number of stages ({len(result.times)}), "
                         f"got {cfg.plateau}")
    rng = np.random.default_rng(cfg.seed + 2)
    log_inv = np.log(1.0 / cfg.alpha)
    n_steps = int(training.steps_for([cfg.alpha], cfg.tbar_max, cfg.eta)[0])
    p0 = data.init_diagonal(np.random.default_rng(cfg.seed + 1), cfg.d, [cfg.alpha])
    error = None
    try:
        _, ref = training.train_diagonal(p0, X, Y, eta=cfg.eta, n_steps=n_steps,
                                         progress=progress)
    except TrainingStopped as exc:
        return {"stage": "reference"}, result, exc
    w_ref = np.concatenate([ref["a"][:, 0], ref["b"][:, 0]], axis=-1)          # (K, p)
    # Perturbation epochs: 4.4 at n_stability random epochs, 4.5 where a coordinate first
    # exceeds `negligible`, the counter-example inside the chosen plateau.
    last = n_steps - 1
    stab = np.sort(rng.choice(np.arange(1, last), cfg.n_stability, replace=False))
    above = np.abs(w_ref) > cfg.negligible
    first = np.where(above.any(0), np.argmax(above, axis=0), -1)
    rob = np.unique(first[(first > 0) & (first < last)])
    t_lo, t_hi = result.times[cfg.plateau - 1], result.times[cfg.plateau]
    t_c = rng.uniform(t_lo + 0.25 * (t_hi - t_lo), t_lo + 0.75 * (t_hi - t_lo))
    counter = min(int(round(t_c * log_inv / cfg.eta)), last)
    starts = np.concatenate([stab, rob, [counter]]).astype(int)
    kind = np.concatenate([np.zeros(len(stab)), np.ones(len(rob)), [2]]).astype(int)
    windows = np.minimum(np.where(kind == 2, n_steps, cfg.epochs), n_steps - starts)
    # The state at each start, rebuilt from the logged products and conserved quantities.
    state = {}
    for (u_k, v_k, w_key, c_key) in (("w_K", "w_Q", "a", "c_KQ"), ("w_V", "w_O", "b", "c_VO")):
        sp = np.sign(p0[u_k][0] + p0[v_k][0])
        sm = np.sign(p0[u_k][0] - p0[v_k][0])
        u, v = analysis.factors_from_products(ref[w_key][starts, 0], ref[c_key][starts, 0], sp, sm)
        state[u_k], state[v_k] = u, v
    branches = {k: state[k].copy() for k in DIAG_KEYS}
    masks = np.zeros((len(starts), 2 * cfg.d), dtype=bool)
    for std, sel in ((cfg.std_stability, kind == 0), (cfg.std_robustness, kind == 1)):
        pert, mask = analysis.perturb_nonnegligible({k: v[sel] for k, v in state.items()}, rng,
                                                    std, cfg.negligible)
        for k in DIAG_KEYS:
            branches[k][sel] = pert[k]
        masks[sel] = mask
    noise = rng.standard_normal((4, cfg.d))
    for i, k in enumerate(DIAG_KEYS):                       # counter-example: all weights
        branches[k][-1] = state[k][-1] + cfg.sigma * noise[i]
    masks[-1] = True
    m = {"tbar_ref": analysis.rescaled_time(ref["step"], cfg.eta, [cfg.alpha])[:, 0],
         "loss_ref": ref["loss"][:, 0], "w_ref": w_ref, "starts": starts, "kind": kind,
         "windows": windows, "perturbed": masks, **result.to_metrics()}
    try:
        _, hb = training.train_diagonal(branches, X, Y, eta=cfg.eta, n_steps=windows,
                                        progress=progress)
    except TrainingStopped as exc:
        error, hb = exc, exc.partial[1]
    m["w_branch"] = np.concatenate([hb["a"], hb["b"]], axis=-1)                  # (Kb, B, p)
    m["loss_branch"] = hb["loss"]
    m["w_start_branch"] = np.concatenate([branches["w_K"] * branches["w_Q"],
                                          branches["w_V"] * branches["w_O"]], axis=-1)
    return m, result, error


def context(m: dict):
    """Algorithm 1's result, rebuilt from saved metrics (for ``--replot``)."""
    return incremental.IncrementalResult.from_metrics(m)


def branch_rows(cfg: Config, m: dict, result):
    """Per branch: kind, epoch, t, #perturbed, max|w - w_ref| after the perturbation and at the
    end of its window, whether the same coordinates are active at the end, next activation."""
    rows = []
    for j, (s, kd, win) in enumerate(zip(m["starts"], m["kind"], m["windows"])):
        ref = m["w_ref"][s:s + win + 1]
        br = m["w_branch"][:win + 1, j]
        dev0 = np.max(np.abs(m["w_start_branch"][j] - m["w_ref"][s]))
        dev1 = np.max(np.abs(br[-1] - ref[-1]))
        same = np.array_equal(np.abs(br[-1]) > cfg.threshold, np.abs(ref[-1]) > cfg.threshold)
        rows.append([KINDS[kd], int(s), float(m["tbar_ref"][s]),
                     int(m["perturbed"][j].sum()), f"{dev0:.2e}", f"{dev1:.2e}",
                     "yes" if same else "no", f"{m['loss_branch'][win, j]:.3g} vs "
                     f"{m['loss_ref'][s + win]:.3g}"])
    return rows


def report(cfg: Config, m: dict, result) -> str:
    """Numbers behind the checks (compare the paper's Fig. 3 of arXiv v2)."""
    return "\n".join([
        f"Assumption checks by the paper's protocol (App. A; its Fig. 3 of arXiv v2), "
        f"{'paper toy' if cfg.paper_toy else 'default toy'}, alpha = {cfg.alpha:.0e}; only "
        f"coordinates with |w_i| > {cfg.negligible:g} perturbed; {cfg.epochs} epochs after each:",
        _common.format_table(["check", "epoch", "t/log(1/a)", "#perturbed", "max|dw| after",
                              "max|dw| at end", "same active set", "loss at end vs ref"],
                             branch_rows(cfg, m, result))])


def plot(cfg: Config, m: dict, result, out, show: bool):
    """(a) 4.4 and (b) 4.5: entries, solid perturbed over dashed reference; (c) ours: loss."""
    plt = _common.pyplot(show)
    t, w = m["tbar_ref"], m["w_ref"]
    p = w.shape[1]
    names = [incremental.coordinate_name(i, p // 2) for i in range(p)]
    shown = [i for i in range(p) if np.max(np.abs(w[:, i])) > cfg.threshold]
    colors = {i: plt.cm.tab20(k % 20) for k, i in enumerate(shown)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, kd, title in ((axes[0], 0, f"(a) Assumption 4.4: N(0, {cfg.std_stability}²) at "
                                       f"{cfg.n_stability} random epochs"),
                          (axes[1], 1, f"(b) Assumption 4.5: N(0, {cfg.std_robustness}²) at each "
                                       f"first |w_i| > {cfg.negligible:g}")):
        for i in shown:
            ax.plot(t, w[:, i], color=colors[i], ls="--", lw=1.0, label=names[i])
        for j in np.flatnonzero(m["kind"] == kd):
            s, win = m["starts"][j], m["windows"][j]
            for i in shown:
                ax.plot(t[s:s + win + 1], m["w_branch"][:win + 1, j, i], color=colors[i],
                        lw=1.8, alpha=0.8)
            ax.axvline(t[s], color="r", lw=0.6, ls=":")
        ax.set(title=title, xlabel="t / log(1/α)", ylabel="entries of a and b")
        ax.legend(fontsize=6, ncol=3, title="solid: perturbed, dashed: unperturbed",
                  title_fontsize=7, loc="lower left")         # entries are 0 there: off the data
    ax = axes[2]
    j = int(np.flatnonzero(m["kind"] == 2)[0])
    s, win = m["starts"][j], m["windows"][j]
    ax.plot(t, m["loss_ref"], "k--", lw=1.2, label="unperturbed")
    ax.plot(t[s:s + win + 1], m["loss_branch"][:win + 1, j], color="C3", lw=1.6,
            label=f"all weights + {cfg.sigma} N(0, 1)")
    ax.plot([], [], " ", label="(not in the paper)")
    ax.plot(t, result.staircase(t), color="0.5", ls=":", lw=1, label="Algorithm 1")
    ax.axvline(t[s], color="r", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_ylim(max(1e-20, 0.1 * min(np.min(m["loss_ref"]),
                                     np.min(m["loss_branch"][:win + 1, j]))), None)
    ax.set(title=f"(c) ours [project choice]: all weights + {cfg.sigma} N(0, 1) skips stages",
           xlabel="t / log(1/α)", ylabel="loss")
    ax.legend(fontsize=7)
    fig.suptitle(f"Assumption checks, paper's protocol (App. A; reproduces its Fig. 3, arXiv v2 "
                 f"= Fig. 2 of v1), "
                 f"{f'paper toy, {cfg.n_seq} samples' if cfg.paper_toy else 'default toy'}, "
                 f"α = {cfg.alpha:.0e}")
    fig.tight_layout()
    name = NAME + ("_paper_toy" if cfg.paper_toy else "")
    return [_common.save_figure(fig, out, name, show)]


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cls = config_class(argv)
    if cls is Config:
        return _common.demo_main(sys.modules[__name__], argv)
    demo = types.SimpleNamespace(NAME=NAME, Config=cls, run=run, report=report, plot=plot,
                                 context=context, __doc__=__doc__)
    return _common.demo_main(demo, argv)


if __name__ == "__main__":
    sys.exit(main())
