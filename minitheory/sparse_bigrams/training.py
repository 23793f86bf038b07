r"""Training on sampled batches: the two-stage proximal method and the SGD baseline
(Ren, Wang, Lee 2024, arXiv:2410.23438v1, Fig. 1).

**Two-stage method** (structure [paper], details [project choice]). From the uninformative
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

**SGD baseline** (the paper's "vanilla SGD"): the same model, loss, initialization and batches; plain
:math:`V \leftarrow V - \eta g_V`, :math:`A \leftarrow A - \eta g_A`.

**Softmax attention** (the paper's comparison with softmax transformers): :math:`f = V X\,\mathrm{softmax}(W e_k)` from :math:`W = 0`,
:math:`V = \mu\mathbf 1^\top` by plain SGD with separate steps for ``V`` and ``W`` (under uniform
attention the ``W`` gradient is ~1/T of the linear ``A`` gradient, hence ``eta_W = 100``).

**Branching** (Fig. 1: "After stage 1 ends at :math:`\tau` = 400 ..., we use vanilla SGD and our
proximal gradient method"): :func:`stage_one` runs stage 1 and returns a :class:`Checkpoint`;
:func:`branch` continues it with any method on copies of its batch generators, so every branch
starts from the same stage-1 endpoint and sees the same batches after it.

**Population process** (Figs. 3 and 5, :math:`\Delta_V, \Delta_A`): with ``population=True`` each
run carries, in lockstep, the same update from the same start with the exact gradients of the
closed form (:func:`population_loss_and_grads`), and logs its distance to it.

Several seeds train at once on a run axis; seed ``s`` (an int or a ``SeedSequence``) draws its
batches from ``default_rng(s)``, so two methods run with the same seeds see the same samples.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..primitives import softmax, softmax_vjp
from .. import loop
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import analysis, data, model
from .reference import soft_threshold           # the prox of theta ||.||_1, written once

NORMALIZE = ("balance", "v_cols", "a_cols", "none")


@dataclass(frozen=True)
class Method:
    """A training method. ``kind="two_stage"`` uses ``tau, eta1, eta2, eta2_A, lam,
    normalize``; ``kind="sgd"`` uses ``eta``; ``kind="softmax"`` uses ``eta`` for V and
    ``eta_W`` for W. Defaults [project choice, except the switch
    tau = 400 of Fig. 1]: batch 64, eta1 = eta2 = eta2_A = 0.03, lam = 0.01; SGD eta = 0.5."""

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


@dataclass(frozen=True)
class Checkpoint:
    r"""A run stopped at step ``step``, for :func:`branch` to continue (Fig. 1: every method
    shares stage 1 and splits at :math:`\tau`).

    ``params`` ``(R, ., .)``; ``population`` the population process beside it (or ``None``);
    ``rngs`` the batch generators at ``step`` (each branch draws from copies, so every branch
    sees the same batches after ``step`` too); ``history`` the steps ``0..step`` logged so far.
    """

    step: int
    params: dict
    population: dict | None
    rngs: tuple
    batch: int
    exact: bool
    history: dict


def train(inst: data.Instance, method: Method, seeds, *, steps: int, batch: int = 64,
          init: dict | None = None, log_every: int = 10, progress=None,
          population: bool = False, exact: bool = False):
    r"""Train one run per seed on one run axis.

    Parameters
    ----------
    init : ``{"V", "A"}`` without run axis to start from (finetuning); default: uninformative.
    log_every : log :func:`analysis.metrics` every this many steps (and at the last).
    population : also run the method's *population process* in lockstep: the same update rule
        from the same start with the exact gradients of the closed form
        (:func:`model.population_grads`) in place of the batch gradients, and log the distances
        ``delta_V`` :math:`= \|V - V^{pop}\|_\mu`, ``delta_A`` :math:`= \|A - A^{pop}\|_\mu`
        (the :math:`\Delta_V, \Delta_A` of Ren, Wang, Lee 2024, Figs. 3 and 5; the
        :math:`\mu`-norm for both is a [project choice], the norm of the distances to the truth).
    exact : replace the batch gradients by the exact ones (the run *is* its population
        process; with ``population`` the logged distances are then exactly 0).

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
    rngs = _generators(seeds)
    steps = check_int("steps", steps, low=0)
    batch = check_int("batch", batch, low=1)
    log_every = check_int("log_every", log_every, low=1)
    params = _start(inst, method, len(rngs), init)
    pop = {k: v.copy() for k, v in params.items()} if population else None
    params, _, history = _run(inst, method, rngs, params, pop, first=0, last=steps, batch=batch,
                              log_every=log_every, progress=progress, exact=bool(exact))
    return params, history


def stage_one(inst: data.Instance, method: Method, seeds, *, batch: int = 64,
              log_every: int = 10, progress=None, population: bool = False,
              exact: bool = False) -> Checkpoint:
    r"""Run stage 1 of the two-stage ``method`` (steps ``0..tau``) from the uninformative
    initialization and return the :class:`Checkpoint` at :math:`\tau`, where the methods of
    Fig. 1 (Ren, Wang, Lee 2024) branch: "After stage 1 ends at :math:`\tau` = 400 ..., we use
    vanilla SGD and our proximal gradient method to train the transformer". Arguments as in
    :func:`train`; raises as :func:`train` does.
    """
    if method.kind != "two_stage":
        raise ValueError(f"stage_one needs a two-stage method, got kind={method.kind!r}")
    rngs = _generators(seeds)
    batch = check_int("batch", batch, low=1)
    log_every = check_int("log_every", log_every, low=1)
    params = _start(inst, method, len(rngs), None)
    pop = {k: v.copy() for k, v in params.items()} if population else None
    params, pop, history = _run(inst, method, rngs, params, pop, first=0, last=method.tau,
                                batch=batch, log_every=log_every, progress=progress,
                                exact=bool(exact))
    return Checkpoint(method.tau, params, pop, tuple(rngs), batch, bool(exact), history)


def branch(inst: data.Instance, method: Method, start: Checkpoint, *, steps: int,
           log_every: int = 10, progress=None):
    """Continue ``start`` with ``method`` up to step ``steps`` (the total count, stage 1
    included): the learning rate and stage are those of ``method`` at the absolute step, the
    batches continue from copies of ``start.rngs`` (so two branches of one checkpoint see the
    same batches), the population process (if any) continues beside it.

    Returns ``(params, history)`` like :func:`train`, the history joined to ``start.history``
    (steps ``0..steps``, step ``start.step`` once); raises like :func:`train`, ``.partial``
    joined the same way.
    """
    if method.kind == "softmax":
        raise ValueError("branch continues the linear model; the softmax model has no stage 1")
    steps = check_int("steps", steps, low=start.step)
    log_every = check_int("log_every", log_every, low=1)
    rngs = [copy.deepcopy(g) for g in start.rngs]
    params = {k: v.copy() for k, v in start.params.items()}
    pop = None if start.population is None else {k: v.copy() for k, v in start.population.items()}
    # log on the grid 0, log_every, 2 log_every, ... of the whole run: a first segment up to
    # the next multiple of log_every, then the rest
    aligned = min(steps, -(-start.step // log_every) * log_every)
    history = start.history
    for first, last, every in ((start.step, aligned, max(aligned - start.step, 1)),
                               (aligned, steps, log_every)):
        if last == first and first != start.step:
            continue
        try:
            params, pop, part = _run(inst, method, rngs, params, pop, first=first, last=last,
                                     batch=start.batch, log_every=every, progress=progress,
                                     exact=start.exact)
        except TrainingStopped as exc:
            exc.partial = (exc.partial[0], _joined(history, exc.partial[1]))
            raise
        history = _joined(history, part)
    return params, history


def _joined(before: dict, after: dict) -> dict:
    """``before`` then ``after`` without ``after``'s first entry when it repeats ``before``'s
    last step (a branch logs its starting point again)."""
    if len(after["step"]) and len(before["step"]) and after["step"][0] == before["step"][-1]:
        after = {k: v[1:] for k, v in after.items()}
    return {k: np.concatenate([before[k], after[k]]) for k in before}


def _generators(seeds) -> list:
    rngs = [np.random.default_rng(s if isinstance(s, np.random.SeedSequence)
                                  else check_int("seed", s, low=0)) for s in seeds]
    if not rngs:
        raise ValueError("seeds must hold at least one seed")
    return rngs


def _start(inst: data.Instance, method: Method, R: int, init) -> dict:
    """The parameters at step 0, with a run axis of ``R``."""
    if method.kind == "softmax":
        if init is not None:
            raise ValueError("the softmax model starts from W = 0; init is for the linear model")
        return {"V": uninformative_init(inst, R)["V"], "W": np.zeros((R, inst.T, inst.N))}
    if init is None:
        return uninformative_init(inst, R)
    V0 = np.asarray(init["V"], np.float64)
    A0 = np.asarray(init["A"], np.float64)
    if V0.shape != (inst.N, inst.N) or A0.shape != (inst.T, inst.N):
        raise ValueError(f"init has V {V0.shape} and A {A0.shape}, but the task needs "
                         f"V {(inst.N, inst.N)} and A {(inst.T, inst.N)}")
    return {"V": np.tile(V0, (R, 1, 1)), "A": np.tile(A0, (R, 1, 1))}


POP = "population/"        # prefix of the population process's keys in the loop's state


def _run(inst, method, rngs, params, pop, *, first, last, batch, log_every, progress, exact):
    """Steps ``first..last`` of ``method`` on :func:`loop.run`; returns ``(params, pop,
    history)`` with absolute steps. ``pop`` (or ``None``) is the population process."""
    mu = inst.mu
    state = dict(params, **({POP + k: v for k, v in pop.items()} if pop is not None else {}))

    def split(state):
        return ({k: v for k, v in state.items() if not k.startswith(POP)},
                {k[len(POP):]: v for k, v in state.items() if k.startswith(POP)} or None)

    def update(state, i):
        it = first + i
        cur, cur_pop = split(state)
        if exact:
            loss, g = population_loss_and_grads(cur, inst)
        else:
            batches = [data.sample(g, inst, batch) for g in rngs]
            xs, k, xo = (np.stack([b[j] for b in batches]) for j in range(3))
            loss, g = _loss_and_grads(cur, xs, k, xo)
        new = _apply(cur, g, it, method, mu)
        if cur_pop is not None:
            new.update({POP + key: v for key, v in
                        _apply(cur_pop, population_loss_and_grads(cur_pop, inst)[1], it,
                               method, mu).items()})
        return new, {"loss": loss}

    def observe(i, state, new, out):
        cur, cur_pop = split(state)
        logged = {"samples": (first + i) * batch, **analysis.metrics(attention(cur), inst)}
        if cur_pop is not None:
            logged.update(analysis.population_distance(attention(cur), attention(cur_pop), inst))
        return logged

    def shifted(history):
        return dict(history, step=history["step"] + first)

    try:
        state, history = loop.run(update, state, steps=last - first, observe=observe,
                                  lr=lambda i: learning_rate(method, first + i),
                                  log_every=log_every, progress=progress, label=method.label)
    except TrainingStopped as exc:
        exc.partial = (split(exc.partial[0])[0], shifted(exc.partial[1]))
        if first:                                   # the loop counts from 0: name the real step
            exc.args = (str(exc).replace(f"at step {exc.step}", f"at step {exc.step + first}",
                                         1),) + exc.args[1:]
            exc.step += first
        raise
    params, pop = split(state)
    return params, pop, shifted(history)


def learning_rate(method: Method, it: int) -> float:
    """The step size of ``method`` at step ``it``: ``eta1`` then ``eta2`` (two-stage) or ``eta``."""
    if method.kind == "two_stage":
        return method.eta1 if it < method.tau else method.eta2
    return method.eta


def _loss_and_grads(params, xs, k, xo):
    """Batch loss ``(R,)`` and gradients of the linear or the softmax model."""
    if "W" in params:
        return model.softmax_loss_and_grads_unchecked(params, xs, k, xo)
    return model.loss_and_grads_unchecked(params, xs, k, xo)


def population_loss_and_grads(params: dict, inst: data.Instance):
    r"""Closed-form loss :math:`L = \mathbb E\,\ell` ``(R,)`` and its exact gradients
    (:func:`model.population_loss`, :func:`model.population_grads`) of the linear model, or of
    the softmax model at :math:`A = \mathrm{softmax}(W)` through the softmax VJP: what a batch
    of infinite size would give."""
    att = attention(params)
    loss = model.population_loss(att, inst)
    g = model.population_grads(att, inst)
    if "W" in params:
        return loss, {"V": g["V"], "W": softmax_vjp(att["A"], g["A"], axis=-2)}
    return loss, g


def _step(params, xs, k, xo, it, method: Method, mu):
    """One update of ``method`` on a batch; returns ``(loss, new params)``."""
    loss, g = _loss_and_grads(params, xs, k, xo)
    return loss, _apply(params, g, it, method, mu)


def _apply(params, g, it, method: Method, mu):
    """The update of ``method`` at step ``it`` from gradients ``g``; returns new params."""
    if method.kind == "softmax":
        return {"V": params["V"] - method.eta * g["V"], "W": params["W"] - method.eta_W * g["W"]}
    V, A = params["V"], params["A"]
    if method.kind == "sgd":
        return {"V": V - method.eta * g["V"], "A": A - method.eta * g["A"]}
    if it < method.tau:                                                # stage 1
        return {"V": V - method.eta1 * g["V"] / mu, "A": A - method.eta1 * g["A"] / mu}
    V = V - method.eta2 * g["V"] / mu                                  # stage 2: proximal
    A = soft_threshold(A - method.eta2_A * g["A"] / mu, method.eta2_A * method.lam)
    V, A = normalize(V, A, mu, method.normalize)
    return {"V": V, "A": A}


def first_reach(history: dict, keys="dist_A", level: float = 0.1):
    """Per run: the first logged ``(step, samples)`` where *every* metric in ``keys`` (one name
    or several) is ``<= level`` (inf: never)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys:
        raise ValueError("keys must name at least one metric")
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"keys {missing} are not in the history (it has {sorted(history)})")
    hit = np.all([history[k] <= level for k in keys], axis=0)          # (K, R)
    first = np.argmax(hit, axis=0)
    ok = hit.any(axis=0)
    return (np.where(ok, history["step"][first], np.inf),
            np.where(ok, history["samples"][first], np.inf))
