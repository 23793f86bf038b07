"""Transfer: finetuning from a task with the same attention pattern skips the sample-intensive
first stage (Ren, Wang, Lee 2024, arXiv:2410.23438v1, Sec. 5; at sampled batches).

Draws a downstream SCB task and two correlated pretraining tasks: one shares the attention
pattern Q* (new transition P with the same stationary distribution), one shares P (new Q').
Pretrains the two-stage method on each, then finetunes on the downstream task from the
pretrained weights with one balance step and stage 2 only (tau = 0), and compares with training
from scratch on the same batches.

    python -m minitheory.demos.bigram_transfer [--out DIR] [--show] [--help]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..sparse_bigrams import data, model, training
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "bigram_transfer"
CASES = {"Q": "shared attention Q*, new P", "P": "shared transition P, new Q'"}


@dataclass(frozen=True)
class Config:
    """Defaults [project choice]: T = 100 makes stage 1 from scratch last ~600 steps; batch
    128 keeps the sampling-noise floor of ||A - Q*||_mu (about 0.06) below the 0.1 level."""

    seed: int = field(default=0, metadata={"help": "tasks and batches from SeedSequence(seed)"})
    N: int = field(default=10, metadata={"help": "vocabulary size"})
    T: int = field(default=100, metadata={"help": "context length"})
    Q: int = field(default=2, metadata={"help": "non-zeros per attention column"})
    batch: int = field(default=128, metadata={"help": "batch size"})
    pretrain_steps: int = field(default=2000, metadata={"help": "two-stage steps on each "
                                                                "pretraining task"})
    steps: int = field(default=2000, metadata={"help": "finetuning and from-scratch steps"})
    tau: int = field(default=400, metadata={"help": "stage switch of pretraining and scratch"})
    log_every: int = field(default=10, metadata={"help": "log metrics every k steps"})
    level: float = field(default=0.1, metadata={"help": "distance counted as recovery"})

    def __post_init__(self):
        check_types(self)
        check_int("seed", self.seed, low=0)
        data.check_sizes(self.N, self.T, self.Q)
        for name in ("batch", "pretrain_steps", "steps", "log_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("tau", self.tau, low=0)
        check_float("level", self.level, low=0.0, low_open=True)


def correlations(params: dict, inst: data.Instance):
    r"""Cosines of the pretrained weights with the downstream truth:
    :math:`\langle \hat A, Q^*\rangle_\mu / \|\hat A\|_\mu\|Q^*\|_\mu` and
    :math:`\langle \hat V, P\rangle_\Sigma / \|\hat V\|_\Sigma\|P\|_\Sigma`."""
    mu = inst.mu
    cos_A = np.einsum("tk,tk,k->", params["A"], inst.Q_star, mu) / np.sqrt(
        model.mu_norm2(params["A"], mu) * model.mu_norm2(inst.Q_star, mu))
    cos_V = model.sigma_inner(params["V"], inst.P, mu) / np.sqrt(
        model.sigma_inner(params["V"], params["V"], mu) * model.sigma_inner(inst.P, inst.P, mu))
    return float(cos_A), float(cos_V)


def run(cfg: Config, progress=None):
    """Pretrain, finetune and train from scratch; returns ``(metrics, None, error)``."""
    ss = np.random.SeedSequence(cfg.seed).spawn(5)
    rng = np.random.default_rng(ss[0])
    task = data.make_instance(rng, cfg.N, cfg.T, cfg.Q)
    two_stage = training.Method(tau=cfg.tau)
    m = {"P": task.P, "Q_star": task.Q_star, "mu": task.mu}
    runs = [("scratch", task, two_stage, None, ss[1])]
    for i, share in enumerate(CASES):
        pre = data.related_instance(rng, task, share)
        (p, _), err = outcome(training.train, pre, two_stage, [ss[2 + i]],
                              steps=cfg.pretrain_steps, batch=cfg.batch,
                              log_every=cfg.pretrain_steps,
                              progress=_common.Progress(f"pretrain ({CASES[share]})"))
        if err is not None:
            return m, None, err
        V, A = training.normalize(p["V"], p["A"], task.mu, "balance")   # one balance step
        init = {"V": V[0], "A": A[0]}
        m[f"finetune_{share}/cos_A"], m[f"finetune_{share}/cos_V"] = correlations(init, task)
        m[f"finetune_{share}/pre_dist_A"] = float(np.sqrt(model.mu_norm2(init["A"] - pre.Q_star, pre.mu)))
        runs.append((f"finetune_{share}", task, training.Method(tau=0), init, ss[1]))
    for name, inst, method, init, seed in runs:      # same batches (seed ss[1]) for all three
        (_, hist), err = outcome(training.train, inst, method, [seed], steps=cfg.steps,
                                 batch=cfg.batch, init=init, log_every=cfg.log_every,
                                 progress=_common.Progress(name))
        m.update({f"{name}/{k}": v for k, v in hist.items()})
        if err is not None:
            return m, None, err
    return m, None, None


def report(cfg: Config, m: dict, _context=None) -> str:
    """Correlations, starting and final distances, and samples to reach ``level``."""
    rows = []
    for name in ("scratch", "finetune_Q", "finetune_P"):
        h = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(name + "/")}
        case = "from scratch" if name == "scratch" else CASES[name[-1]]
        cos = ("-", "-") if name == "scratch" else (f"{h['cos_A']:.2f}", f"{h['cos_V']:.2f}")
        reach = [training.first_reach(h, key, cfg.level)[1][0] for key in ("dist_A", "dist_V")]
        rows.append([case, *cos, f"{h['dist_V'][0, 0]:.3f} / {h['dist_A'][0, 0]:.3f}",
                     f"{h['dist_V'][-1, 0]:.3f} / {h['dist_A'][-1, 0]:.3f}",
                     float(reach[0]), float(reach[1])])
    return _common.format_table(
        ["start", "cos(A, Q*)", "cos(V, P)", "start ||V-P|| / ||A-Q*||",
         f"after {cfg.steps} steps", f"samples to ||A-Q*|| <= {cfg.level}",
         f"samples to ||V-P|| <= {cfg.level}"], rows)


def plot(cfg: Config, m: dict, _context, out, show: bool):
    """The figure: distances and the attention signal against samples, finetune vs scratch."""
    plt = _common.pyplot(show)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"scratch": ("k", "from scratch (two-stage)"),
              "finetune_Q": ("tab:blue", "finetune: " + CASES["Q"]),
              "finetune_P": ("tab:orange", "finetune: " + CASES["P"])}
    for name, (color, label) in styles.items():
        x = m[f"{name}/samples"]
        axes[0].plot(x, m[f"{name}/dist_V"][:, 0], color=color, label=label)
        axes[1].plot(x, m[f"{name}/dist_A"][:, 0], color=color, label=label)
        axes[2].plot(x, m[f"{name}/alpha_A"][:, 0], color=color, label=label)
    for ax, title in zip(axes, ("‖V − P‖_μ", "‖A − Q*‖_μ", "attention signal α_A")):
        ax.set(xlabel="samples", title=title)
        if ax is not axes[2]:
            ax.set_yscale("log")
            ax.axhline(cfg.level, color="0.8", lw=0.8)
        ax.axvline(cfg.tau * cfg.batch, color="0.6", ls=":", lw=1)
        ax.legend(fontsize=7)
    fig.suptitle(f"Sec. 5 of arXiv:2410.23438v1: a shared attention pattern skips the sample-intensive first stage; a shared "
                 f"P alone must unlearn Q' (N={cfg.N}, T={cfg.T}, batch {cfg.batch}; dotted: "
                 f"scratch's stage switch)", fontsize=10)
    fig.tight_layout()
    return [_common.save_figure(fig, out, NAME, show)]


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
