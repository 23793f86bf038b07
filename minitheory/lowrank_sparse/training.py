r"""Mini-batch SGD on the one-layer transformer, several seeds at once on a run axis.

.. code-block:: text

    rng_data, rng_init, rng_sgd = default_rng(seed).spawn(3)          # per run
    X_train, y_train = sample(N_train, rng_data);  X_test, ... = sample(N_test, rng_data)
    params = init(rng_init);  params0 = copy(params)
    for t in 1..steps:
        idx = rng_sgd.choice(N_train, B, replace=False)
        W -= lr * grad_W hinge(X_train[idx], y_train[idx])    for W in W_Q, W_K, W_V, W_O

Plain SGD, no momentum, no weight decay [paper; project choice]. After every step the test
hinge loss, the test 0/1 error and the attention mass on label-relevant tokens are logged, and
:math:`W_K^{(t)}` is kept for the update spectra (paper Fig. 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import loop
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import data, model
from .analysis import evaluate


@dataclass(frozen=True)
class ModelConfig:
    """Widths and initialization [project choice]: ``W_Q = W_K = 0.5 I``, ``W_V = I``,
    ``W_O`` entries ``N(0, xi^2 / m)``, ``a`` entries ``+-1/sqrt(m)`` (one row per query position,
    or one row shared by all if ``shared_a``). ``m_a = m_b = d`` (so the identities fit)."""

    m: int = 64
    xi: float = 0.1
    shared_a: bool = False

    def __post_init__(self):
        check_types(self)
        check_int("m", self.m, low=1)
        check_float("xi", self.xi, low=0.0, low_open=True)


@dataclass(frozen=True)
class SGDConfig:
    """Defaults: B = 16, lr = 3, 60 steps, 1000 train / 1000 test [project choice: the paper's
    values are not stated; these show its effects within seconds]."""

    batch: int = 16
    lr: float = 3.0
    steps: int = 60
    n_train: int = 1000
    n_test: int = 1000

    def __post_init__(self):
        check_types(self)
        check_int("batch", self.batch, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_int("steps", self.steps, low=0)
        check_int("n_train", self.n_train, low=self.batch)
        check_int("n_test", self.n_test, low=1)


def init_params(rng: np.random.Generator, dcfg: data.DataConfig, mcfg: ModelConfig) -> dict:
    """Initial parameters of one run (no run axis); see :class:`ModelConfig`."""
    d, m = dcfg.d, mcfg.m
    W_O = rng.standard_normal((m, d)) * mcfg.xi / np.sqrt(m)
    rows = 1 if mcfg.shared_a else dcfg.L
    a = rng.choice(np.array([-1.0, 1.0]), size=(rows, m)) / np.sqrt(m)
    return {"W_Q": 0.5 * np.eye(d), "W_K": 0.5 * np.eye(d), "W_V": np.eye(d), "W_O": W_O,
            "a": np.repeat(a, dcfg.L, axis=0) if mcfg.shared_a else a}


@dataclass
class TrainResult:
    """Everything a run produced; arrays carry the run axis ``R``.

    ``params``/``params0``: final and initial parameters. ``history``: ``step`` ``(T+1,)``,
    ``test_hinge``, ``test_error``, ``att_rel`` ``(T+1, R)``, ``W_K`` ``(T+1, R, m_b, d)`` at steps
    ``0..T``, and ``train_loss`` ``(T, R)``, the batch loss of update ``t`` (at the parameters of
    step ``t``). ``test``: ``(X, y, rel)`` of the fresh test set.
    """

    params: dict
    params0: dict
    history: dict
    test: tuple


def train(seeds, dcfg: data.DataConfig, mcfg: ModelConfig, scfg: SGDConfig,
          progress=None) -> TrainResult:
    """Train one run per seed, all on one run axis (see the module docstring).

    The update rule runs in :func:`minitheory.loop.run`. A diverging or interrupted run raises
    :class:`~minitheory.validation.DivergenceError` / :class:`~minitheory.validation.Interrupted`
    whose ``.partial`` is a :class:`TrainResult` of the last finite parameters and the steps
    logged before (``train_loss`` then has one entry per logged step).
    """
    seeds = [check_int("seed", s, low=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    mu = data.patterns(dcfg)
    runs = []
    for s in seeds:
        rng_data, rng_init, rng_sgd = np.random.default_rng(s).spawn(3)
        Xtr, ytr, _, _ = data.sample(rng_data, scfg.n_train, dcfg, mu)
        Xte, yte, _, rel = data.sample(rng_data, scfg.n_test, dcfg, mu)
        runs.append((Xtr, ytr, Xte, yte, rel, init_params(rng_init, dcfg, mcfg), rng_sgd))
    Xtr, ytr, Xte, yte, rel = (np.stack([r[i] for r in runs]) for i in range(5))
    params0 = {k: np.stack([r[5][k] for r in runs]) for k in model.KEYS}
    rngs = [r[6] for r in runs]

    def sgd_step(params, step):
        """``W <- W - lr grad_W`` on a fresh batch of ``B`` training samples per run."""
        idx = np.stack([g.choice(scfg.n_train, scfg.batch, replace=False) for g in rngs])
        Xb = np.take_along_axis(Xtr, idx[:, :, None, None], axis=1)   # (R, B, L, d)
        yb = np.take_along_axis(ytr, idx, axis=1)                     # (R, B)
        loss, grads = model.loss_and_grads_unchecked(params, Xb, yb)
        new = {k: params[k] - scfg.lr * grads[k] if k in grads else params[k] for k in params}
        return new, {"loss": loss}

    def observe(step, params, new, out):
        hinge, error, att = evaluate(params, Xte, yte, rel)
        loss = np.full(len(seeds), np.nan) if out is None else out["loss"]   # last: no batch
        return {"test_hinge": hinge, "test_error": error, "att_rel": att, "train_loss": loss,
                "W_K": params["W_K"].copy()}

    def result(params, history):
        return TrainResult(params=params, params0=params0, history=history, test=(Xte, yte, rel))

    try:
        params, history = loop.run(sgd_step, params0, steps=scfg.steps, observe=observe,
                                   lr=scfg.lr, progress=progress, label="SGD")
    except TrainingStopped as exc:
        exc.partial = result(*exc.partial)
        raise
    history["train_loss"] = history["train_loss"][:-1]        # the last step has no batch
    return result(params, history)
