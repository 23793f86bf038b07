r"""Adam and plain SGD with linear warmup and cosine decay, written out; the transformer trainer.

Boix-Adsera et al. (2023, arXiv v2, App. B) train their ViTs and GPT-2 with Adam after a linear
warmup, with no weight decay and no dropout (and one ViT with SGD). Both update rules are pure
functions over dicts of named arrays: ``update(params, grads, state, lr) -> (params, state)``;
nothing is changed in place.

**Learning-rate schedule** (update :math:`s = 0, 1, \dots, S-1`, warmup :math:`W`, peak
:math:`\eta`):

.. math::
    \eta_s = \eta\,\frac{s + 1}{W} \quad (s < W), \qquad
    \eta_s = \frac{\eta}{2}\Big(1 + \cos\frac{\pi (s - W)}{S - W}\Big) \quad (s \ge W),

so the warmup ends at :math:`\eta_{W-1} = \eta`, the cosine passes :math:`\eta/2` halfway
through the decay and reaches 0 at :math:`s = S` (one past the last update).

**Adam** (Kingma & Ba 2015, Algorithm 1; :math:`\beta_1 = 0.9, \beta_2 = 0.999,
\epsilon = 10^{-8}`), at its :math:`t`-th update (:math:`t = 1, 2, \dots`) for each array:

.. math::
    m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad v \leftarrow \beta_2 v + (1 - \beta_2) g^2,
    \quad \theta \leftarrow \theta - \eta_s \frac{m / (1 - \beta_1^t)}
    {\sqrt{v / (1 - \beta_2^t)} + \epsilon}.

**SGD**: :math:`\theta \leftarrow \theta - \eta_s g` (no momentum).
"""
from __future__ import annotations

import math

import numpy as np

from ..validation import TrainingStopped, check_float, check_int

#: Adam's constants (Kingma & Ba 2015; the paper's runs use the defaults).
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
OPTIMIZERS = ("adam", "sgd")


def lr_at(step: int, *, lr: float, warmup: int, total: int) -> float:
    r"""Learning rate of update ``step`` (0-based): linear warmup over ``warmup`` updates to
    ``lr``, then cosine decay to 0 at ``step == total`` (equation in the module docstring)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if total <= warmup:
        return lr
    frac = min((step - warmup) / (total - warmup), 1.0)
    return 0.5 * lr * (1.0 + math.cos(math.pi * frac))


def lr_schedule(*, lr: float, warmup: int, total: int) -> np.ndarray:
    """:func:`lr_at` for every update ``0 .. total - 1``: ``(total,)``. Checks its arguments."""
    lr = check_float("lr", lr, low=0.0, low_open=True)
    total = check_int("steps", total, low=1)
    warmup = check_int("warmup", warmup, low=0, high=total)
    return np.array([lr_at(s, lr=lr, warmup=warmup, total=total) for s in range(total)])


def adam_init(params: dict) -> dict:
    """Adam's state: zero moments ``m``, ``v`` shaped like ``params``, and ``t = 0`` updates."""
    return {"m": {k: np.zeros_like(v) for k, v in params.items()},
            "v": {k: np.zeros_like(v) for k, v in params.items()}, "t": 0}


def adam_update(params: dict, grads: dict, state: dict, lr: float, *, beta1: float = BETA1,
                beta2: float = BETA2, eps: float = EPS):
    r"""One Adam update (module docstring): returns ``(new_params, new_state)``; the inputs
    are not changed."""
    t = state["t"] + 1
    c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        m = beta1 * state["m"][k] + (1.0 - beta1) * g
        v = beta2 * state["v"][k] + (1.0 - beta2) * (g * g)
        new_p[k] = p - lr * (m / c1) / (np.sqrt(v / c2) + eps)
        new_m[k], new_v[k] = m, v
    return new_p, {"m": new_m, "v": new_v, "t": t}


def sgd_init(params: dict) -> dict:
    """Plain SGD keeps no state beyond the update count."""
    return {"t": 0}


def sgd_update(params: dict, grads: dict, state: dict, lr: float):
    r"""One SGD update :math:`\theta - \eta_s g`: returns ``(new_params, new_state)``."""
    return ({k: p - lr * grads[k] for k, p in params.items()}, {"t": state["t"] + 1})


def optimizer(name: str):
    """``(init, update)`` of ``"adam"`` or ``"sgd"``."""
    if name == "adam":
        return adam_init, adam_update
    if name == "sgd":
        return sgd_init, sgd_update
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


# --------------------------------------------------------------------------------------------
# The trainer: minibatch Adam or SGD on the transformer, spectra logged at chosen steps
# --------------------------------------------------------------------------------------------
def train(params: dict, cfg, batch, *, steps: int, lr: float, warmup: int,
          optimizer_name: str = "adam", log_at=None, evaluate=None, progress=None):
    r"""Train the transformer of ``cfg`` from ``params`` with minibatch Adam or SGD.

    The update rule is the only part written here; stepping, the divergence check, Ctrl-C and
    progress are :func:`minitheory.loop.run`'s.

    Parameters
    ----------
    params : the initial parameters (``init_params``); not modified.
    cfg : the model's ``TransformerConfig``.
    batch : ``step -> (inputs, targets)``, the minibatch of update ``step`` (0-based).
    steps, lr, warmup : number of updates, peak learning rate, warmup updates (module docstring).
    optimizer_name : ``"adam"`` or ``"sgd"``.
    log_at : steps at which to measure the perturbation spectra
        (:func:`~minitheory.transformer.analysis.spectra`) and call ``evaluate``; default
        about 30 log-spaced steps (:func:`~minitheory.transformer.analysis.log_steps`).
        The step after ``s`` updates is ``s``, so step 0 is the initialization.
    evaluate : optional ``params -> {name: float}`` (test accuracy, held-out loss, ...).

    Returns
    -------
    params : after ``steps`` updates.
    history : ``step, loss, lr`` ``(steps + 1,)``: the minibatch loss before each update (the
        last one on ``batch(steps)``) and the rate of that update (0 at the last);
        ``log_step`` ``(K,)``; ``sv_KQ, sv_VO`` ``(K, layers, heads, k)``; ``srank_KQ,
        srank_VO`` ``(K, layers, heads)``; and each ``evaluate`` output ``(K,)``.

    Raises
    ------
    DivergenceError, Interrupted
        As :func:`minitheory.loop.run`, with ``.partial = (params, history)`` in the form above
        holding every step before the one that stopped.
    """
    from .. import loop
    from . import analysis
    from .model import loss_and_grads, loss_and_grads_unchecked

    init, update = optimizer(optimizer_name)
    rates = lr_schedule(lr=lr, warmup=warmup, total=steps) if steps else np.zeros(0)
    log_at = analysis.log_steps(steps, 30) if log_at is None else np.asarray(log_at)
    log_at = set(int(s) for s in log_at if 0 <= s <= steps)
    params0 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    snaps: dict[str, list] = {"log_step": []}

    def step_rule(state, step):
        p, opt = state
        # the first minibatch goes through the checks (shapes, ids, finite values); later ones
        # come from the same arrays, so the unchecked core is enough
        core = loss_and_grads if step == 0 else loss_and_grads_unchecked
        loss, grads = core(p, *batch(step), cfg)
        new_p, new_opt = update(p, grads, opt, rates[step])
        return (new_p, new_opt), {"loss": np.float64(loss)}

    def check(new_state, out):
        bad = [k for k, v in new_state[0].items() if not np.all(np.isfinite(v))]
        return ", ".join((["loss"] if not np.isfinite(out["loss"]) else []) + bad[:3])

    def observe(step, state, new_state, out):
        p = state[0]
        if step in log_at:
            spec = analysis.spectra(p, params0)
            if evaluate is not None:
                spec.update({k: np.float64(v) for k, v in evaluate(p).items()})
            for k, v in spec.items():
                snaps.setdefault(k, []).append(v)
            snaps["log_step"].append(step)          # last: a Ctrl-C before it drops the step
        loss = out["loss"] if out is not None else np.float64(
            loss_and_grads_unchecked(p, *batch(step), cfg)[0])
        return {"loss": loss, "lr": np.float64(rates[step] if step < steps else 0.0)}

    def combined(hist):
        n = min(len(v) for v in snaps.values())
        return {**hist, **{k: np.asarray(v[:n]) for k, v in snaps.items()}}

    try:
        (params, _), hist = loop.run(step_rule, (params0, init(params0)), steps=steps,
                                     observe=observe,
                                     lr=lambda s: rates[min(s, steps - 1)] if steps else 0.0,
                                     lr_name="lr",
                                     progress=progress, check=check)
    except TrainingStopped as exc:
        state, hist = exc.partial
        exc.partial = (state[0], combined(hist))
        raise
    return params, combined(hist)
