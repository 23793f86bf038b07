r"""Training on sampled batches: the two-stage proximal method and the SGD baseline (spec (e)).

**Two-stage method** (E1; structure [paper], details [project choice]). From the uninformative
initialization :math:`V = \mu\mathbf 1^\top`, :math:`A = \mathbf 1\mathbf 1^\top / T`, with fresh
batches and gradients preconditioned by :math:`D^{-1}` (columns divided by :math:`\mu`):

.. code-block:: text

    stage 1 (it < tau):  V -= eta1 g_V;  A -= eta1 g_A
    stage 2:             V -= eta2 g_V;  A = SoftThr(A - eta2_A g_A, eta2_A * lam);  normalize(V, A)

:math:`\mathrm{SoftThr}_\theta(u) = \mathrm{sign}(u)\max(|u| - \theta, 0)` is the proximal map of
:math:`\theta\|\cdot\|_1`, so stage 2 is stochastic ISTA on
:math:`L + \lambda\sum_k \mu_k\|a_k\|_1` (with :math:`D^{-1}` preconditioning the threshold is the
same for every entry). Normalization (``balance``, the default) moves along the model's symmetry
:math:`(cV, A/c)`: the :math:`\ell_1` term is not invariant to it and would otherwise shrink
:math:`A` and inflate :math:`V` forever.

**SGD baseline** (E2): the same model, loss, initialization and batches; plain
:math:`V \leftarrow V - \eta g_V`, :math:`A \leftarrow A - \eta g_A`.

**Softmax attention** (E4): :math:`f = V X\,\mathrm{softmax}(W e_k)` from :math:`W = 0`,
:math:`V = \mu\mathbf 1^\top` by plain SGD with separate steps for ``V`` and ``W`` (under uniform
attention the ``W`` gradient is ~1/T of the linear ``A`` gradient, hence ``eta_W = 100``).

Several seeds train at once on a run axis; seed ``s`` (an int or a ``SeedSequence``) draws its
batches from ``default_rng(s)``, so two methods run with the same seeds see the same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..primitives import softmax
from .. import loop
from ..validation import check_float, check_int, check_types
from . import analysis, data, model

NORMALIZE = ("balance", "v_cols", "a_cols", "none")


@dataclass(frozen=True)
class Method:
    """A training method. ``kind="two_stage"`` (E1) uses ``tau, eta1, eta2, eta2_A, lam,
    normalize``; ``kind="sgd"`` (E2) uses ``eta``; ``kind="softmax"`` (E4) uses ``eta`` for V and
    ``eta_W`` for W. Defaults: the spec, section (e)."""

    kind: str = "two_stage"
    tau: int = 400
    eta1: float = 0.03
    eta2: float = 0.03
    eta2_A: float = 0.03
    lam: float = 0.01
    normalize: str = "balance"
    eta: float = 0.5
    eta_W: float = 100.0

    def __post_init__(self):
        check_types(self)
        if self.kind not in ("two_stage", "sgd", "softmax"):
            raise ValueError(f"kind must be 'two_stage', 'sgd' or 'softmax', got {self.kind!r}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        check_int("tau", self.tau, low=0)
        for name in ("eta1", "eta2", "eta2_A", "eta", "eta_W"):
            check_float(name, getattr(self, name), low=0.0, low_open=True)
        check_float("lam", self.lam, low=0.0)

    @property
    def label(self) -> str:
        if self.kind == "sgd":
            return f"SGD eta={self.eta:g}"
        if self.kind == "softmax":
            return f"softmax SGD eta_V={self.eta:g}, eta_W={self.eta_W:g}"
        return f"two-stage ({self.normalize})"


def soft_threshold(u: np.ndarray, theta: float) -> np.ndarray:
    r""":math:`\mathrm{SoftThr}_\theta(u) = \mathrm{sign}(u)\max(|u| - \theta, 0)`, the prox of
    :math:`\theta\|\cdot\|_1`: :math:`\arg\min_z \tfrac12\|z - u\|^2 + \theta\|z\|_1`."""
    return np.sign(u) * np.maximum(np.abs(u) - theta, 0.0)


def normalize(V: np.ndarray, A: np.ndarray, mu: np.ndarray, how: str):
    r"""Fix the scale symmetry after a proximal step (run axis leading).

    - ``balance``: :math:`c = \sum_k \mu_k \mathbf 1^\top a_k`; :math:`A \leftarrow A/c`,
      :math:`V \leftarrow cV` (skipped where :math:`|c| < 0.1`: no signal yet). Leaves :math:`f`
      unchanged and pins :math:`\sum_k \mu_k \mathbf 1^\top a_k = 1`, which the truth satisfies.
    - ``v_cols``: :math:`V \leftarrow V\,\mathrm{diag}(\mathbf 1^\top V)^{-1}` (columns of V sum to 1).
    - ``a_cols``: :math:`A \leftarrow \max(A, 0)`, columns renormalized to sum 1 (uniform if empty).
    - ``none``: unchanged.
    """
    if how == "balance":
        c = np.einsum("rtk,k->r", A, mu)
        c = np.where(np.abs(c) >= 0.1, c, 1.0)[:, None, None]
        return V * c, A / c
    if how == "v_cols":
        s = V.sum(axis=-2, keepdims=True)
        return V / np.where(np.abs(s) > 1e-12, s, 1.0), A
    if how == "a_cols":
        A = np.maximum(A, 0.0)
        s = A.sum(axis=-2, keepdims=True)
        return V, np.where(s > 0, A / np.where(s > 0, s, 1.0), 1.0 / A.shape[-2])
    return V, A


def uninformative_init(inst: data.Instance, R: int) -> dict:
    r""":math:`V_0 = \mu\mathbf 1^\top` (the unigram predictor), :math:`A_0 = \mathbf 1\mathbf 1^\top / T`."""
    return {"V": np.tile(np.outer(inst.mu, np.ones(inst.N)), (R, 1, 1)),
            "A": np.full((R, inst.T, inst.N), 1.0 / inst.T)}


def attention(params: dict) -> dict:
    """``{"V", "A"}`` of a parameter dict: ``A`` itself, or ``softmax(W)`` for the softmax model."""
    if "W" in params:
        return {"V": params["V"], "A": softmax(params["W"], axis=-2)}
    return params


def train(inst: data.Instance, method: Method, seeds, *, steps: int, batch: int = 64,
          init: dict | None = None, log_every: int = 10, progress=None):
    """Train one run per seed on one run axis.

    Parameters
    ----------
    init : ``{"V", "A"}`` without run axis to start from (finetuning); default: uninformative.
    log_every : log :func:`analysis.metrics` every this many steps (and at the last).

    Returns
    -------
    params : final ``{"V", "A"}`` (``{"V", "W"}`` for softmax) ``(R, ., .)``.
    history : ``{"step": (K,), "samples": (K,), <metric>: (K, R)}``.

    Raises
    ------
    DivergenceError, Interrupted
        With ``.partial = (params, history)``: the last finite parameters and the steps logged
        before (the contract of :mod:`minitheory.loop`, which runs the update rule).
    """
    rngs = [np.random.default_rng(s if isinstance(s, np.random.SeedSequence)
                                  else check_int("seed", s, low=0)) for s in seeds]
    steps = check_int("steps", steps, low=0)
    batch = check_int("batch", batch, low=1)
    log_every = check_int("log_every", log_every, low=1)
    R, mu = len(rngs), inst.mu
    if R == 0:
        raise ValueError("seeds must hold at least one seed")
    if method.kind == "softmax":
        if init is not None:
            raise ValueError("the softmax model starts from W = 0; init is for the linear model")
        params = {"V": uninformative_init(inst, R)["V"], "W": np.zeros((R, inst.T, inst.N))}
    elif init is None:
        params = uninformative_init(inst, R)
    else:
        V0 = np.asarray(init["V"], np.float64)
        A0 = np.asarray(init["A"], np.float64)
        if V0.shape != (inst.N, inst.N) or A0.shape != (inst.T, inst.N):
            raise ValueError(f"init has V {V0.shape} and A {A0.shape}, but the task needs "
                             f"V {(inst.N, inst.N)} and A {(inst.T, inst.N)}")
        params = {"V": np.tile(V0, (R, 1, 1)), "A": np.tile(A0, (R, 1, 1))}

    def update(params, it):
        batches = [data.sample(g, inst, batch) for g in rngs]
        xs, k, xo = (np.stack([b[i] for b in batches]) for i in range(3))
        loss, new = _step(params, xs, k, xo, it, method, mu)
        return new, {"loss": loss}

    def observe(it, params, new, out):
        return {"samples": it * batch, **analysis.metrics(attention(params), inst)}

    return loop.run(update, params, steps=steps, observe=observe,
                    lr=lambda it: learning_rate(method, it), log_every=log_every,
                    progress=progress, label=method.label)


def learning_rate(method: Method, it: int) -> float:
    """The step size of ``method`` at step ``it``: ``eta1`` then ``eta2`` (two-stage) or ``eta``."""
    if method.kind == "two_stage":
        return method.eta1 if it < method.tau else method.eta2
    return method.eta


def _step(params, xs, k, xo, it, method: Method, mu):
    """One update of ``method`` on a batch; returns ``(loss, new params)``."""
    if method.kind == "softmax":
        loss, g = model.softmax_loss_and_grads_unchecked(params, xs, k, xo)
        return loss, {"V": params["V"] - method.eta * g["V"],
                      "W": params["W"] - method.eta_W * g["W"]}
    loss, g = model.loss_and_grads_unchecked(params, xs, k, xo)
    V, A = params["V"], params["A"]
    if method.kind == "sgd":
        return loss, {"V": V - method.eta * g["V"], "A": A - method.eta * g["A"]}
    if it < method.tau:                                                # stage 1
        return loss, {"V": V - method.eta1 * g["V"] / mu,
                      "A": A - method.eta1 * g["A"] / mu}
    V = V - method.eta2 * g["V"] / mu                                  # stage 2: proximal
    A = soft_threshold(A - method.eta2_A * g["A"] / mu, method.eta2_A * method.lam)
    V, A = normalize(V, A, mu, method.normalize)
    return loss, {"V": V, "A": A}


def first_reach(history: dict, key: str = "dist_A", level: float = 0.1):
    """Per run: the first logged ``(step, samples)`` with ``history[key] <= level`` (inf: never)."""
    hit = history[key] <= level                                     # (K, R)
    first = np.argmax(hit, axis=0)
    ok = hit.any(axis=0)
    return (np.where(ok, history["step"][first], np.inf),
            np.where(ok, history["samples"][first], np.inf))
