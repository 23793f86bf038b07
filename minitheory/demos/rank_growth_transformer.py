"""Trained transformers learn low-rank, gradually growing attention perturbations
(Boix-Adsera et al. 2023, Sec. 5).

Trains a small pre-LayerNorm transformer whose every gradient is written by hand, with Adam,
warmup and cosine decay, no weight decay and no dropout: a ViT on the 8x8 handwritten digits
(``--task vision``) or a character-level causal model on the CPython documentation
(``--task language``). At log-spaced steps it measures, in every head of every layer, the
singular values and stable rank of the perturbations ``ΔW_K W_Q^T`` and ``ΔW_V W_O^T``
(arXiv 2306.07042 v2, Sec. 5 and App. B). ``--scales`` repeats the run with every layer's
initialization multiplied by each factor except the embedding, the paper's init-scale study.

    python -m minitheory.demos.rank_growth_transformer [--task vision|language] [--scales 0.1 0.3 1]
                                                       [--quick] [--out DIR] [--help]
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field

import numpy as np

from ..loop import outcome
from ..transformer import analysis, data, training
from ..validation import check_float, check_int, check_types
from . import _common

NAME = "rank_growth_transformer"
TASKS = ("vision", "language")
#: Updates when ``--steps`` is 0: the task's default and its ``--quick`` value.
DEFAULT_STEPS = {"vision": 1000, "language": 1200}
QUICK_STEPS = {"vision": 80, "language": 60}
#: Minibatch size when ``--batch`` is 0 (images; windows of ``--context`` characters).
DEFAULT_BATCH = {"vision": 64, "language": 16}
#: Peak learning rate when ``--lr`` is 0 (tuned once each: language at 1e-3 reached 2.08
#: nats/char after 1200 steps, at 3e-3 1.65).
DEFAULT_LR = {"vision": 1e-3, "language": 3e-3}


@dataclass(frozen=True)
class Config:
    """Defaults: a laptop-scale ViT and character model [project choice: the paper's ViT has
    6 layers of 8 heads with d_h = 128 on CIFAR-10; see the module docstring]."""

    task: str = field(default="vision", metadata={"help": "vision (8x8 digits) or language "
                                                          "(pydoc characters)"})
    seed: int = field(default=0, metadata={"help": "init from default_rng(seed), data split "
                                                   "and minibatches from default_rng(seed + 1)"})
    scales: tuple[float, ...] = field(default=(1.0,), metadata={
        "help": "init-scale factors (every layer but the embedding), each in (0, 10]"})
    quick: bool = field(default=False, metadata={"help": "a short run (seconds) to try the "
                                                         "demo: fewer steps and evaluations"})
    steps: int = field(default=0, metadata={
        "help": f"Adam/SGD updates; 0 = the task's default {DEFAULT_STEPS} (--quick: "
                f"{QUICK_STEPS})"})
    batch: int = field(default=0, metadata={"help": f"minibatch; 0 = {DEFAULT_BATCH}"})
    optimizer: str = field(default="adam", metadata={"help": "adam or sgd"})
    lr: float = field(default=0.0, metadata={"help": f"peak learning rate; 0 = {DEFAULT_LR}"})
    warmup: int = field(default=100, metadata={"help": "linear-warmup updates (cut to the "
                                                       "number of steps)"})
    d: int = field(default=64, metadata={"help": "embedding width"})
    heads: int = field(default=4, metadata={"help": "heads per layer"})
    d_h: int = field(default=16, metadata={"help": "head width (rank bound of W_K W_Q^T)"})
    depth: int = field(default=4, metadata={"help": "layers"})
    d_mlp: int = field(default=128, metadata={"help": "MLP hidden width"})
    patch: int = field(default=2, metadata={"help": "vision: patch side, divides 8"})
    n_test: int = field(default=300, metadata={"help": "vision: held-out images"})
    context: int = field(default=64, metadata={"help": "language: characters per window"})
    test_fraction: float = field(default=0.1, metadata={"help": "language: held-out tail"})
    n_log: int = field(default=30, metadata={"help": "log-spaced measurement steps"})
    detail_layer: int = field(default=1, metadata={"help": "layer (0-based) of the "
                                                           "singular-value evolution figure"})
    detail_head: int = field(default=0, metadata={"help": "head of that figure"})

    def __post_init__(self):
        check_types(self)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.optimizer not in training.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {training.OPTIMIZERS}, "
                             f"got {self.optimizer!r}")
        check_int("seed", self.seed, low=0)
        if not self.scales:
            raise ValueError("scales must hold at least one factor")
        for i, s in enumerate(self.scales):
            check_float(f"scales[{i}]", s, low=0.0, high=10.0, low_open=True)
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct, got {list(self.scales)}")
        check_int("steps", self.steps, low=0)
        check_int("batch", self.batch, low=0)
        check_float("lr", self.lr, low=0.0)
        check_int("warmup", self.warmup, low=0)
        for name in ("d", "heads", "d_h", "depth", "d_mlp"):
            check_int(name, getattr(self, name), low=1)
        check_int("detail_layer", self.detail_layer, low=0, high=self.depth - 1)
        check_int("detail_head", self.detail_head, low=0, high=self.heads - 1)
        check_int("n_log", self.n_log, low=2, high=1000)
        check_int("patch", self.patch, low=1, high=data.SIDE)
        if data.SIDE % self.patch:
            raise ValueError(f"patch must divide {data.SIDE} (1, 2, 4 or 8), got {self.patch}")
        check_int("n_test", self.n_test, low=1, high=data.N_DIGITS - 1)
        check_float("test_fraction", self.test_fraction, low=0.0, high=0.5, low_open=True)
        check_int("context", self.context, low=1)
        if self.task == "language":
            n_test = max(1, int(round(self.test_fraction * len(data.pydoc_text()))))
            data.check_context(self.context, n_test)
        self.model_config(n_in=2, n_out=2)           # the model's own checks, before training

    @property
    def n_steps(self) -> int:
        return self.steps or (QUICK_STEPS if self.quick else DEFAULT_STEPS)[self.task]

    @property
    def peak_lr(self) -> float:
        return self.lr or DEFAULT_LR[self.task]

    @property
    def batch_size(self) -> int:
        return self.batch or DEFAULT_BATCH[self.task]

    def model_config(self, n_in: int, n_out: int):
        from ..transformer.model import TransformerConfig
        n_tokens = (data.SIDE // self.patch) ** 2 + 1 if self.task == "vision" else self.context
        return TransformerConfig(task=self.task, n_tokens=n_tokens, n_in=n_in, n_out=n_out,
                                 d=self.d, heads=self.heads, d_h=self.d_h, depth=self.depth,
                                 d_mlp=self.d_mlp, activation="gelu",
                                 causal=True if self.task == "language" else None)


# --------------------------------------------------------------------------------------------
# Data and evaluation of one task
# --------------------------------------------------------------------------------------------
def resolved(cfg: Config) -> dict:
    """What ``--steps``, ``--batch`` and ``--lr`` (0 = the task's default) resolved to; saved
    in ``config.json`` beside the options as given."""
    return {"steps": cfg.n_steps, "batch": cfg.batch_size, "lr": cfg.peak_lr}


def log_softmax_xent(z: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy (nats) of logits ``z (..., V)`` against integer ``targets (...)``."""
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, targets[..., None], -1).mean())


def chunked_logits(params, inputs, mcfg, chunk: int = 256) -> np.ndarray:
    """The model's logits on ``inputs`` in chunks of ``chunk`` samples (bounded memory)."""
    from ..transformer.model import logits
    return np.concatenate([logits(params, inputs[i:i + chunk], mcfg)
                           for i in range(0, len(inputs), chunk)])


def setup(cfg: Config):
    """The task: ``(model config, batch(step), evaluate(params), final(params), info)``.

    ``evaluate`` runs at every measured step (vision: train/test accuracy; language: loss on
    fixed windows of both splits, at most 64 held-out windows); ``final`` evaluates after
    training on the whole held-out split.
    """
    rng = np.random.default_rng(cfg.seed + 1)
    B, steps = cfg.batch_size, cfg.n_steps
    if cfg.task == "vision":
        split = data.digits_split(cfg.seed, cfg.n_test)
        x_train = data.patchify(split["x_train"], cfg.patch)
        x_test = data.patchify(split["x_test"], cfg.patch)
        y_train, y_test = split["y_train"], split["y_test"]
        mcfg = cfg.model_config(n_in=cfg.patch**2, n_out=10)
        n = len(x_train)
        order = np.concatenate([rng.permutation(n) for _ in range((steps + 1) * B // n + 1)])
        n_eval = min(n, 100 if cfg.quick else 300)         # training accuracy on a fixed subset

        def batch(step):
            idx = order[step * B:(step + 1) * B]
            return x_train[idx], y_train[idx]

        def evaluate(p):
            z_tr = chunked_logits(p, x_train[:n_eval], mcfg)
            z_te = chunked_logits(p, x_test, mcfg)
            return {"train_acc": np.mean(z_tr.argmax(-1) == y_train[:n_eval]),
                    "test_acc": np.mean(z_te.argmax(-1) == y_test),
                    "test_loss": log_softmax_xent(z_te, y_test)}

        def final(p):
            z_te = chunked_logits(p, x_test, mcfg)
            return {"final_test_acc": np.mean(z_te.argmax(-1) == y_test),
                    "final_test_loss": log_softmax_xent(z_te, y_test)}

        info = {"n_train": n, "n_test": len(x_test), "data": data.DIGITS_PROVENANCE,
                "data_sha256": data.DIGITS_SHA256}
        return mcfg, batch, evaluate, final, info

    corpus = data.char_corpus(test_fraction=cfg.test_fraction)
    V = len(corpus.vocab)
    mcfg = cfg.model_config(n_in=V, n_out=V)
    starts = rng.integers(0, len(corpus.train) - cfg.context, size=(steps + 1, B))
    n_eval = 8 if cfg.quick else 64
    eval_te = data.tiled_windows(corpus.test, cfg.context, n_eval)
    eval_tr = data.tiled_windows(corpus.train, cfg.context, n_eval)
    full_te = data.tiled_windows(corpus.test, cfg.context, 64 if cfg.quick else None)

    def batch(step):
        return data.char_windows(corpus.train, starts[step], cfg.context)

    def evaluate(p):
        return {"train_loss": log_softmax_xent(chunked_logits(p, eval_tr[0], mcfg), eval_tr[1]),
                "test_loss": log_softmax_xent(chunked_logits(p, eval_te[0], mcfg), eval_te[1])}

    def final(p):
        return {"final_test_loss": log_softmax_xent(chunked_logits(p, full_te[0], mcfg),
                                                    full_te[1])}

    info = {"n_train": len(corpus.train), "n_test": len(corpus.test), "vocab": V,
            "unigram_entropy": data.unigram_entropy(corpus.test, V),
            "unigram_entropy_train": data.unigram_entropy(corpus.train, V),
            "n_final_windows": len(full_te[0]),
            "data": f"pydoc_data.topics of Python {platform.python_version()}",
            "data_sha256": corpus.sha256}
    return mcfg, batch, evaluate, final, info


# --------------------------------------------------------------------------------------------
# Run, report, plot
# --------------------------------------------------------------------------------------------
def run(cfg: Config, progress=None):
    """Train once per init scale (same init directions and minibatches); returns
    ``(metrics, None, error)`` with ``error`` a :class:`TrainingStopped` or ``None``.

    Metrics carry a leading scale axis ``S``: ``loss, lr (S, steps + 1)``; ``sv_KQ, sv_VO
    (S, K, layers, heads, min(d, 2 d_h))``; ``srank_KQ, srank_VO (S, K, layers, heads)`` at the
    measured steps ``log_step (K,)``; the init spectra ``sv_KQ_init ... (S, layers, heads, k)``;
    the evaluations ``(S, K)`` and the final ones ``(S,)``. A stopped run keeps the scales
    finished before it; when the first scale stopped, its steps up to there.
    """
    from ..transformer.model import init_params
    mcfg, batch, evaluate, final, info = setup(cfg)
    steps = cfg.n_steps
    log_at = analysis.log_steps(steps, cfg.n_log)
    warmup = min(cfg.warmup, steps)
    runs = []
    for i, scale in enumerate(cfg.scales):
        params0 = init_params(np.random.default_rng(cfg.seed), mcfg, scale=scale)
        label = f"scale {scale:g} ({i + 1}/{len(cfg.scales)})"
        prog = None if progress is None else _common.Progress(f"{cfg.task}, {label}")
        (params, hist), error = outcome(training.train, params0, mcfg, batch, steps=steps,
                                        lr=cfg.peak_lr, warmup=warmup,
                                        optimizer_name=cfg.optimizer, log_at=log_at,
                                        evaluate=evaluate, progress=prog)
        if error is not None:
            error.args = (f"{label}: {error}",)
            if i == 0:                                # keep the steps of the first scale
                runs.append((hist, analysis.init_spectra(params0), {}))
            break
        runs.append((hist, analysis.init_spectra(params0), final(params)))
    metrics = {"scales": np.asarray(cfg.scales[:len(runs)], dtype=np.float64),
               "log_step": log_at, **{k: np.asarray(v) for k, v in info.items()}}
    if runs:
        n = min(len(r[0]["step"]) for r in runs)
        k = min(len(r[0]["log_step"]) for r in runs)
        metrics["log_step"] = log_at[:k]
        metrics["step"] = runs[0][0]["step"][:n]
        for key in set(runs[0][0]) - {"step", "log_step"}:
            cut = n if key in ("loss", "lr") else k        # per step, or per measured step
            metrics[key] = np.stack([r[0][key][:cut] for r in runs])
        for key in runs[0][1]:
            metrics[key] = np.stack([r[1][key] for r in runs])
        for key in runs[0][2]:
            if all(key in r[2] for r in runs):
                metrics[key] = np.asarray([r[2][key] for r in runs], dtype=np.float64)
    return metrics, None, error


def default_index(scales) -> int:
    """The run closest to the default init (scale 1 on a log axis)."""
    return int(np.argmin(np.abs(np.log(np.asarray(scales)))))


def _pm(x) -> str:
    mean, std = analysis.head_mean_std(x)
    return f"{float(mean):.2f} ± {float(std):.2f}"


def report(cfg: Config, m: dict, context=None) -> str:
    """The claims' numbers: stable ranks per layer (mean ± std over heads) against d_h and
    against the products at init, their growth over training, the scale study, and whether the
    model learned (test accuracy; held-out nats/char against the unigram entropy)."""
    scales, d0 = m["scales"], default_index(m["scales"])
    L = m["srank_KQ"].shape[2]
    lines = [f"{cfg.task}: {cfg.depth} layers x {cfg.heads} heads, d = {cfg.d}, d_h = {cfg.d_h} "
             f"(ΔW has rank <= {min(cfg.d, 2 * cfg.d_h)}), {cfg.n_steps} {cfg.optimizer} steps, "
             f"batch {cfg.batch_size}, lr {cfg.peak_lr:g}"]
    if cfg.task == "vision":
        lines.append(f"digits: {int(m['n_train'])} train / {int(m['n_test'])} test images, "
                     f"{cfg.patch}x{cfg.patch} patches")
    else:
        lines.append(f"characters: {int(m['n_train'])} train / {int(m['n_test'])} held out, "
                     f"vocabulary {int(m['vocab'])}, context {cfg.context}")
    rows = []
    for s, scale in enumerate(scales):
        if cfg.task == "vision":
            learned = [f"{100 * float(m['final_test_acc'][s]):.1f}%",
                       f"{100 * float(m['train_acc'][s, -1]):.1f}%"]
        else:
            learned = [f"{float(m['final_test_loss'][s]):.3f}",
                       f"{float(m['unigram_entropy']):.3f}"]
        rows.append([f"{scale:g}"] + learned + [f"{float(m['loss'][s, -1]):.3f}"])
    head = (["scale", "test acc", "train acc"] if cfg.task == "vision"
            else ["scale", "held-out nats/char", "unigram entropy"]) + ["last batch loss"]
    lines += ["", "Did the model learn?", _common.format_table(head, rows)]

    rows = []
    for l in range(L):
        rows.append([l + 1, _pm(m["srank_KQ"][d0, -1, l]), _pm(m["srank_VO"][d0, -1, l]),
                     _pm(m["srank_KQ_init"][d0, l]), _pm(m["srank_VO_init"][d0, l]), cfg.d_h])
    lines += ["", f"Claims 1-2: stable rank after training (scale {scales[d0]:g}), mean ± std "
                  f"over {cfg.heads} heads",
              _common.format_table(["layer", "ΔW_K W_Q^T", "ΔW_V W_O^T", "W_K W_Q^T at init",
                                    "W_V W_O^T at init", "d_h"], rows)]
    sv, sv0 = m["sv_KQ"][d0, -1], m["sv_KQ_init"][d0]
    r_now = np.mean(sv[..., 3] / sv[..., 0])
    r_init = np.mean(sv0[..., 3] / sv0[..., 0])
    lines.append(f"σ_4/σ_1 of ΔW_K W_Q^T after training {r_now:.3f} vs of W_K W_Q^T at init "
                 f"{r_init:.3f} (mean over all heads)")

    steps = m["log_step"]
    pick = np.searchsorted(steps, np.geomspace(1, max(steps[-1], 1), 6).round())
    pick = np.unique(pick.clip(0, len(steps) - 1))
    rows = [[int(steps[k]), _pm(m["srank_KQ"][d0, k].ravel()), _pm(m["srank_VO"][d0, k].ravel())]
            for k in pick]
    lines += ["", "Claim 3: stable rank over training (mean ± std over all heads and layers)",
              _common.format_table(["step", "ΔW_K W_Q^T", "ΔW_V W_O^T"], rows)]
    if len(scales) > 1:
        rows = [[f"{scale:g}"] + [f"{_pm(m['srank_KQ'][s, -1, l])} | {_pm(m['srank_VO'][s, -1, l])}"
                                  for l in range(L)] for s, scale in enumerate(scales)]
        lines += ["", "Claim 4: stable rank after training per init scale, ΔW_K W_Q^T | "
                      "ΔW_V W_O^T (mean ± std over heads)",
                  _common.format_table(["scale"] + [f"layer {l + 1}" for l in range(L)], rows)]
    return "\n".join(lines)


KQ_COLOR, VO_COLOR = "tab:blue", "tab:orange"       # as the paper's Fig. 4
ERROR_FLOOR = 0.1                                   # percent: where an error of 0 is drawn


def _layout(fig, **spacing):
    """Fixed subplot spacing (``save_figure`` crops the margins): cheaper than
    ``tight_layout``, which lays out every tick label once more."""
    fig.subplots_adjust(**spacing)


def plot(cfg: Config, m: dict, context, out, show: bool):
    """The figures of arXiv v2 Figs. 4-7 at this scale, and the training curves."""
    plt = _common.pyplot(show)
    scales, d0 = m["scales"], default_index(m["scales"])
    steps = m["log_step"]
    L, H = m["srank_KQ"].shape[2:4]
    task = cfg.task
    name = {"vision": "ViT on 8x8 digits", "language": "character model on pydoc text"}[task]
    x = np.maximum(steps, 1)
    paths = []

    # v2 Fig. 4: stable rank against step, mean ± std over the heads of each layer
    fig, axes = plt.subplots(1, L, figsize=(3.2 * L, 3.4), sharey=True, squeeze=False)
    for l, ax in enumerate(axes[0]):
        for which, color in (("KQ", KQ_COLOR), ("VO", VO_COLOR)):
            mean, std = analysis.head_mean_std(m[f"srank_{which}"][d0, :, l])
            label = "ΔW_K W_Q^T" if which == "KQ" else "ΔW_V W_O^T"
            ax.plot(x[1:], mean[1:], color=color, lw=1.8, label=label)
            ax.fill_between(x[1:], (mean - std)[1:], (mean + std)[1:], color=color, alpha=0.25,
                            lw=0)
        ax.set(xscale="log", xlabel="step", title=f"layer {l + 1}")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"stable rank (d_h = {cfg.d_h})")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{name}: stable rank of the perturbations, mean ± std over {H} heads "
                 f"(cf. arXiv v2 Fig. 4)", fontsize=10)
    _layout(fig, wspace=0.12, top=0.80)
    paths.append(_common.save_figure(fig, out, f"{task}_srank", show))

    # v2 Fig. 5: spectrum after training against that at init, one head per layer
    heads = [l % H for l in range(L)]
    fig, axes = plt.subplots(2, L, figsize=(3.2 * L, 6.0), sharex=True, squeeze=False)
    k = m["sv_KQ"].shape[-1]
    idx = np.arange(1, k + 1)
    for row, which in enumerate(("KQ", "VO")):
        pair = "W_K W_Q^T" if which == "KQ" else "W_V W_O^T"
        for l, ax in enumerate(axes[row]):
            h = heads[l]
            after = m[f"sv_{which}"][d0, -1, l, h]
            init = m[f"sv_{which}_init"][d0, l, h]
            ax.semilogy(idx, after / after[0], "o-", ms=3, color=KQ_COLOR if row == 0 else VO_COLOR,
                        label=f"Δ{pair}, trained")
            keep = init > 1e-12 * init[0]
            ax.semilogy(idx[keep], init[keep] / init[0], "s-", ms=3, color="0.5",
                        label=f"{pair} at init")
            ax.set(title=f"layer {l + 1}, head {h + 1}", ylim=(1e-3, 1.5))
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("singular value index")
        axes[row, 0].set_ylabel(f"σ_i / σ_1 ({'ΔW_K W_Q^T' if row == 0 else 'ΔW_V W_O^T'})")
        axes[row, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{name}: normalized spectrum after training vs at init "
                 f"(cf. arXiv v2 Fig. 5)", fontsize=10)
    _layout(fig, wspace=0.3, hspace=0.3, top=0.88)
    paths.append(_common.save_figure(fig, out, f"{task}_spectrum", show))

    # v2 Fig. 6: singular values in one head of layer detail_layer, for up to three scales
    show_s = (np.arange(len(scales)) if len(scales) <= 3
              else np.unique(np.linspace(0, len(scales) - 1, 3).round().astype(int)))
    l, h = cfg.detail_layer, cfg.detail_head
    n_sv = min(8, k)
    fig, axes = plt.subplots(2, len(show_s), figsize=(3.6 * len(show_s) + 0.6, 6.0),
                             sharex=True, squeeze=False)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, n_sv))
    for col, s in enumerate(show_s):
        for row, which in enumerate(("KQ", "VO")):
            ax = axes[row, col]
            sv = m[f"sv_{which}"][s, :, l, h, :n_sv]
            for i in range(n_sv):
                ax.plot(x[1:], sv[1:, i], color=colors[i], lw=1.5, label=f"σ_{i + 1}")
            ax.set(xscale="log", yscale="log", title=f"init scale {scales[s]:g}")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel(f"singular values of {'ΔW_K W_Q^T' if row == 0 else 'ΔW_V W_O^T'}")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{name}: top {n_sv} singular values in layer {l + 1}, head {h + 1} "
                 f"(cf. arXiv v2 Fig. 6)", fontsize=10)
    _layout(fig, wspace=0.35, hspace=0.25, top=0.9)
    paths.append(_common.save_figure(fig, out, f"{task}_evolution", show))

    # v2 Fig. 7: post-training stable rank against init scale
    if len(scales) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), sharey=True)
        lcolors = plt.cm.plasma(np.linspace(0.0, 0.8, L))
        for ax, which in zip(axes, ("KQ", "VO")):
            mean, std = analysis.head_mean_std(m[f"srank_{which}"][:, -1])   # (S, L)
            for li in range(L):
                ax.errorbar(scales * (1 + 0.04 * (li - (L - 1) / 2)), mean[:, li], std[:, li],
                            marker="o", ms=4, capsize=3, color=lcolors[li], label=f"layer {li + 1}")
            ax.set(xscale="log", xlabel="init scale (all layers but the embedding)",
                   title="ΔW_K W_Q^T" if which == "KQ" else "ΔW_V W_O^T")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"stable rank after training (d_h = {cfg.d_h})")
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{name}: stable rank after {cfg.n_steps} steps against init scale, "
                     f"mean ± std over heads (cf. arXiv v2 Fig. 7)", fontsize=10)
        _layout(fig, wspace=0.1, top=0.84)
        paths.append(_common.save_figure(fig, out, f"{task}_scales", show))

    # training curves: a rank claim on a model that did not learn is empty
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    scolors = plt.cm.viridis(np.linspace(0.0, 0.85, len(scales)))
    step_all = np.maximum(m["step"], 1)
    ax = axes[0]
    for s, scale in enumerate(scales):
        loss = m["loss"][s]
        w = max(1, len(loss) // 100)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(step_all[w - 1:], smooth, color=scolors[s], lw=1.3, label=f"scale {scale:g}")
    ax.set(xscale="log", yscale="log", xlabel="step",
           ylabel="minibatch loss (nats, running mean)", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[1]
    for s, scale in enumerate(scales):
        if task == "vision":                     # an error of 0 is drawn at the floor
            ax.plot(x, np.maximum(100 * (1 - m["test_acc"][s]), ERROR_FLOOR), color=scolors[s],
                    lw=1.6)
            ax.plot(x, np.maximum(100 * (1 - m["train_acc"][s]), ERROR_FLOOR), color=scolors[s],
                    lw=1.0, ls="--")
        else:
            ax.plot(x, m["test_loss"][s], color=scolors[s], lw=1.6)
            ax.plot(x, m["train_loss"][s], color=scolors[s], lw=1.0, ls="--")
    if task == "vision":
        ax.axhline(5.0, color="0.4", lw=0.8, ls=":")
        ax.set(yscale="log", ylabel="error (%): test solid, train dashed",
               title=f"digits classification error (dotted: 5%; 0 drawn at {ERROR_FLOOR:g}%)")
    else:
        ax.axhline(float(m["unigram_entropy"]), color="0.4", lw=1.0, ls=":")
        ax.set(ylabel="nats/char: held-out solid, train dashed",
               title=f"loss on fixed windows (dotted: unigram entropy "
                     f"{float(m['unigram_entropy']):.2f})")
    ax.set(xscale="log", xlabel="step")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{name}: training curves", fontsize=10)
    _layout(fig, wspace=0.3, top=0.84)
    paths.append(_common.save_figure(fig, out, f"{task}_training", show))
    return paths


def main(argv=None) -> int:
    """Command-line entry (``--help`` lists the options); returns the exit status."""
    return _common.demo_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
