"""Sparse contextual bigrams at T = 100000: population dynamics with Gaussian gradient noise
(Ren, Wang, Lee 2024, arXiv:2410.23438v1, Sec. 7).

Runs the closed-form preconditioned dynamics with noise of the variance a batch would have,
at N = 100 and N = 500, for the two-stage l1-proximal method and for SGD, each beside its own
population process (the same schedule without noise, same start, in lockstep): the distance
to it is the paper's Delta_V, Delta_A (Figs. 3 and 5). With --comparisons also: (i) without
l1, (iv) stage 1 at the small batch, (v) transfer from (P', Q*), each against its own process
too. --quick runs a small version.

    python -m minitheory.demos.bigram_scale [--quick] [--comparisons] [--out DIR] [--help]
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..sparse_bigrams import population as pop
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "bigram_scale"


@dataclass(frozen=True)
class Config:
    """Defaults [paper: T = 1e5, N in {100, 500}; schedules project choice].
    Per-N learning rates and batch sizes follow :func:`population.defaults_for`; SGD uses
    ``eta = N`` (100 at N = 100; its stability limit grows like N)."""

    seed: int = field(default=0, metadata={"help": "tasks and noise from SeedSequence(seed)"})
    Ns: tuple[int, ...] = field(default=(100, 500), metadata={"help": "vocabulary sizes"})
    T: int = field(default=100_000, metadata={"help": "context length"})
    Q: int = field(default=2, metadata={"help": "non-zeros per attention column"})
    steps: int = field(default=0, metadata={"help": "steps (0: 200 for N <= 100, else 100)"})
    tau: int = field(default=60, metadata={"help": "stage switch"})
    comparisons: bool = field(default=False, metadata={"help": "also runs (i) no l1, (iv) small "
                                                               "stage-1 batch, (v) transfer"})
    quick: bool = field(default=False, metadata={"help": "small version: N = 20, T = 2000"})
    level: float = field(default=0.1, metadata={"help": "distance counted as recovery"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        if not self.Ns:
            raise ValueError("Ns must hold at least one vocabulary size")
        for i, N in enumerate(self.Ns):
            check_int(f"Ns[{i}]", N, low=2)
        check_int("Q", self.Q, low=1)
        if check_int("T", self.T, low=1) < self.Q:
            raise ValueError(f"T must be >= Q = {self.Q} (Q of the T positions carry "
                             f"attention), got {self.T}")
        check_int("steps", self.steps, low=0)
        check_int("tau", self.tau, low=0)
        if self.quick:
            given = [f"--{name} {_common._plain(getattr(self, name))}" for name in ("Ns", "T")
                     if getattr(self, name) != type(self).__dataclass_fields__[name].default]
            if given:
                raise ValueError(f"quick runs N = 20, T = 2000 only; it cannot be combined "
                                 f"with {' '.join(given)} (drop --quick to run those sizes)")
        check_float("level", self.level, low=0.0, low_open=True)

    def sizes(self):
        """``[(N, T, steps)]`` to run."""
        if self.quick:
            return [(20, 2000, self.steps or 120)]
        return [(N, self.T, self.steps or pop.defaults_for(N)["steps"]) for N in self.Ns]


def memory_estimate(cfg: Config):
    """Bytes the largest lockstep group needs, and what sets it: about six float64 arrays of
    T x N per noisy run plus the noiseless reference (measured: 2.4 GB at N = 500, T = 1e5)."""
    runs = 4 if cfg.comparisons else 3              # a group's runs plus the reference
    N, T, _ = max(cfg.sizes(), key=lambda s: s[0] * s[1])
    what = (f"--Ns {N} x --T {T}" if not cfg.quick else "--quick") + \
        f" ({runs} runs of T x N float64 arrays{' with --comparisons' if cfg.comparisons else ''})"
    return 16 * runs * T * N, what


def schedules(N: int, tau: int):
    """The runs of one N: the main comparison and the extra comparisons
    (:func:`population.simulate` builds every run's population process itself)."""
    d = pop.defaults_for(N)
    two = pop.Schedule(eta_A=d["eta_A"], B1=d["B1"], B2=d["B2"], lam=d["lam"], tau=tau)
    main = {"two_stage": two,
            "sgd": pop.Schedule(kind="sgd", B1=d["B1"], B2=d["B2"], tau=tau, eta_sgd=float(N))}
    extra = {"no_l1": pop.Schedule(eta_A=d["eta_A"], B1=d["B1"], B2=d["B2"], lam=0.0,
                                   balance=False, tau=tau),
             "small_stage1_batch": pop.Schedule(eta_A=d["eta_A"], B1=d["B2"], B2=d["B2"],
                                                lam=d["lam"], tau=tau),
             "transfer": pop.Schedule(eta_A=d["eta_A"], B1=d["B2"], B2=d["B2"], lam=d["lam"],
                                      tau=0)}
    return main, extra


def samples_used(s: pop.Schedule, steps: np.ndarray) -> np.ndarray:
    """Samples a run has consumed after each step: ``B1`` per stage-1 step, ``B2`` after."""
    return s.B1 * np.minimum(steps, s.tau) + s.B2 * np.maximum(steps - s.tau, 0)


def run(cfg: Config, progress=None):
    """Simulate every N; returns ``(metrics, timings, error)``."""
    m, timings = {}, {}
    ss = np.random.SeedSequence(cfg.seed).spawn(len(cfg.sizes()))
    for (N, T, steps), seq in zip(cfg.sizes(), ss):
        r_task, r_noise, r_transfer = (np.random.default_rng(x) for x in seq.spawn(3))
        inst = pop.make_large_instance(r_task, N, T, cfg.Q)
        main, extra = schedules(N, min(cfg.tau, steps))
        groups = [main]
        if cfg.comparisons:                       # a second lockstep group keeps memory bounded
            groups.append(extra)
        for g, runs in enumerate(groups):
            inits = None
            if "transfer" in runs:
                pre = pop.with_attention(inst, r_transfer)        # pretrained at (P', Q*)
                inits = {"transfer": {"V": pre.P, "A": inst.q.dense()}}
            t0 = time.perf_counter()
            hist, err = outcome(pop.simulate, inst, runs, steps=steps, rng=r_noise,
                                inits=inits, progress=_common.Progress(f"N={N} group {g + 1}"),
                                population=True)
            timings[f"N{N}/group{g + 1}_s_per_step"] = (time.perf_counter() - t0) / max(steps, 1)
            for name, h in hist.items():
                for k, v in h.items():
                    m[f"N{N}/{name}/{k}"] = v
                m[f"N{N}/{name}/samples"] = samples_used(runs[name], h["step"])
            if err is not None:
                return m, timings, err
        m[f"N{N}/tau"] = min(cfg.tau, steps)
    timings["peak_rss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    m.update({f"timing/{k}": v for k, v in timings.items()})
    return m, timings, None


def context(m: dict):
    """The timings, from saved metrics (for ``--replot``)."""
    return {k[len("timing/"):]: float(v) for k, v in m.items() if k.startswith("timing/")}


def report(cfg: Config, m: dict, timings) -> str:
    """Per N and run: distances at the switch and at the end, steps and samples to recovery."""
    rows = []
    for N, _, _ in cfg.sizes():
        tau = int(m[f"N{N}/tau"])
        names = sorted({k.split("/")[1] for k in m if k.startswith(f"N{N}/") and k.count("/") == 2},
                       key=lambda n: ["two_stage", "sgd", "no_l1", "small_stage1_batch",
                                      "transfer"].index(n))
        for name in names:
            h = {k.split("/", 2)[2]: v for k, v in m.items() if k.startswith(f"N{N}/{name}/")}
            hit = np.flatnonzero(h["dist_A"] <= cfg.level)
            reach = (int(h["step"][hit[0]]), float(h["samples"][hit[0]])) if hit.size else \
                (np.inf, np.inf)
            rows.append([N, name, f"{h['dist_V'][tau]:.3f} / {h['dist_A'][tau]:.3f}",
                         f"({h['alpha_V'][tau]:.2f}, {h['alpha_A'][tau]:.2f})",
                         f"{h['dist_V'][-1]:.3f} / {h['dist_A'][-1]:.3f}",
                         f"{h['delta_V'][-1]:.3f} / {h['delta_A'][-1]:.3f}",
                         f"{h['sim_V'][-1]:.3f} / {h['sim_A'][-1]:.3f}",
                         float(reach[0]), float(reach[1])])
    table = _common.format_table(
        ["N", "run", "at tau: ||V-P|| / ||A-Q*||", "(alpha_V, alpha_A) at tau", "final",
         "final Delta_V / Delta_A (own population process)", "final sim(V,P) / sim(A,Q*)",
         f"steps to ||A-Q*|| <= {cfg.level}", "samples"], rows)
    times = ", ".join(f"{k}: {v:.3f}" for k, v in timings.items())
    return table + f"\ntimings: {times}"


def plot(cfg: Config, m: dict, _timings, out, show: bool):
    r"""Distances to the truth, and each run's distance to its own population process
    (:math:`\Delta_V, \Delta_A`), per N."""
    plt = _common.pyplot(show)
    sizes = cfg.sizes()
    fig, axes = plt.subplots(len(sizes), 4, figsize=(19, 4.4 * len(sizes)), squeeze=False)
    labels = {"two_stage": "two-stage (l1 proximal)", "sgd": "SGD", "no_l1": "(i) without l1",
              "small_stage1_batch": "(iv) stage 1 at the small batch",
              "transfer": "(v) transfer from (P', Q*)"}
    short = {"two_stage": "two-stage", "sgd": "SGD", "no_l1": "(i)", "small_stage1_batch": "(iv)",
             "transfer": "(v)"}
    for row, (N, T, _) in zip(axes, sizes):
        for name, label in labels.items():
            key = f"N{N}/{name}/"
            if key + "step" not in m:
                continue
            x = m[key + "step"]
            line, = row[0].plot(x, m[key + "dist_V"], label=label)
            row[1].plot(x, m[key + "dist_A"], label=label, color=line.get_color())
            proc = f"{short[name]} − population {short[name]}"
            row[2].plot(x, m[key + "delta_V"], color=line.get_color(), label=proc)
            row[3].plot(x, m[key + "delta_A"], color=line.get_color(), label=proc)
        titles = ("‖V − P‖_μ", "‖A − Q*‖_μ", "‖Δ_V‖_μ: V minus its population process",
                  "‖Δ_A‖_μ: A minus its population process")
        for ax, title in zip(row, titles):
            ax.set(yscale="log", xlabel="iteration", ylabel=title.split(":")[0],
                   title=f"N = {N}, T = {T}: {title}")
            ax.title.set_fontsize(9)
            ax.axvline(m[f"N{N}/tau"], color="0.6", ls=":", lw=1)
    for ax, where in ((axes[0, 0], "lower left"), (axes[0, 2], "lower right")):
        handles, names = ax.get_legend_handles_labels()
        fig.legend(handles, names, loc=where, ncol=3, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.02 if where == "lower left" else 0.98, 0.0))
    fig.suptitle("Large T (arXiv:2410.23438v1, Sec. 7): population dynamics with gradient noise; "
                 "only the two-stage method recovers (P, Q*). Δ as in the paper's Figs. 3 and 5: "
                 "each run against its own noiseless process")
    fig.tight_layout(rect=(0, 0.16 / len(sizes), 1, 1))
    return [_common.save_figure(fig, out, NAME, show)]


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
