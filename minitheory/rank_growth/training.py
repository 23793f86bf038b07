r"""Full-batch gradient descent for the rank-growth heads, all init scales on one run axis.

Every run ``r`` is plain gradient descent with step :math:`\eta`, updated for ``n_steps[r]``
steps and then frozen, so that each init scale runs to the same *rescaled* time

.. math:: \bar t = \frac{t}{\log(1/\alpha)}, \qquad t = \eta \cdot \mathrm{step}

(paper Sec. 4; the step size must be in :math:`t`). All four factors are updated from gradients
computed before any of them changes.

**Conservation law** (paper Sec. 4, from :math:`\partial L/\partial u_i = v_i\,\partial_i\tilde L`,
:math:`\partial L/\partial v_i = u_i\,\partial_i\tilde L`): gradient flow conserves
:math:`c_i = u_i^2 - v_i^2` for each pair :math:`(u, v) = (w_K, w_Q)` and :math:`(w_V, w_O)`;
one gradient-descent step multiplies it by exactly :math:`(1 - \eta^2 g_i^2)`,
:math:`g_i = \partial_i \tilde L`. :func:`train_diagonal` logs :math:`c` and the residual of that
identity (:func:`conservation_residual`) at every logged step.

:func:`gradient_descent` is the update rule; :func:`minitheory.loop.run` runs it (logging,
progress, divergence, Ctrl-C).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import loop
from ..spectral import numerical_rank, singular_values, stable_rank
from ..validation import TrainingStopped, check_float, check_int
from . import model

Progress = Callable[[int, int], None]


def steps_for(alphas, tbar_max: float, eta: float) -> np.ndarray:
    r"""Steps each run needs to reach rescaled time ``tbar_max``: :math:`\lceil \bar t_{max}\log(1/\alpha)/\eta \rceil`.

    ``alphas`` in ``(0, 1]``; :math:`\alpha = 1` has no rescaled time and gets 0 steps.
    """
    return np.ceil(tbar_max * np.log(1.0 / np.asarray(alphas, dtype=np.float64)) / eta).astype(int)


def gradient_descent(loss_and_grads, params: dict, X, Y, *, eta: float, n_steps, observe,
                     log_every: int = 1, progress: Progress | None = None):
    r"""Run gradient descent :math:`\theta \leftarrow \theta - \eta \nabla L(\theta)` on ``R`` runs at once.

    The update rule for :func:`minitheory.loop.run`, which owns the loop, the logging, the
    divergence check and Ctrl-C. Run ``r`` is updated for ``n_steps[r]`` steps and then frozen:
    it is no longer evaluated, and its logged loss from then on is the loss of its final
    parameters (evaluated once, after the loop).

    Parameters
    ----------
    loss_and_grads : ``(params, X, Y) -> (loss (R,), grads)``, unchecked core with a run axis.
    params : dict of ``(R, ...)`` float64 arrays (not modified).
    eta : learning rate, > 0.
    n_steps : int or ``(R,)`` ints: run ``r`` takes ``n_steps[r]`` updates, then stays frozen.
    observe : ``(params, grads, new_params, lr) -> dict of arrays with leading axis R``: what
        to log. ``new_params`` is the state after this step's update and ``lr`` ``(R,)`` the step
        each run took (0 once frozen, with zero ``grads``); all three are ``None`` at the last step.
    log_every : log at steps ``0, log_every, 2 log_every, ...`` and at the last step.
    progress : optional ``progress(done, total)`` callback, after each update.

    Returns
    -------
    params : final parameters.
    history : ``{"step": (K,), "loss": (K, R), **observed stacked to (K, R, ...)}``.

    Raises
    ------
    DivergenceError
        When a run's loss or parameters turn non-finite; ``.partial`` holds ``(params, history)``:
        the last finite parameters and the steps logged before (the contract of
        :mod:`minitheory.loop`).
    Interrupted
        On Ctrl-C, with the same ``.partial``.
    """
    eta = check_float("eta", eta, low=0.0, low_open=True)
    log_every = check_int("log_every", log_every, low=1)
    R = next(iter(params.values())).shape[0]
    n_steps = np.broadcast_to(np.asarray(n_steps), (R,))
    if n_steps.dtype.kind not in "iu" or np.any(n_steps < 0):
        raise ValueError(f"n_steps must be non-negative integers, got {n_steps}")
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}

    def update(p, step):
        moving = np.flatnonzero(step < n_steps)            # frozen runs are not evaluated
        if moving.size == R:
            loss, grads = loss_and_grads(p, X, Y)
        else:
            loss, grads = np.zeros(R), {k: np.zeros_like(v) for k, v in p.items()}
            loss[moving], g_moving = loss_and_grads({k: v[moving] for k, v in p.items()}, X, Y)
            for k in grads:
                grads[k][moving] = g_moving[k]
        lr = np.where(step < n_steps, eta, 0.0)             # (R,): frozen runs take no step
        new = {k: v - lr.reshape((R,) + (1,) * (v.ndim - 1)) * grads[k] for k, v in p.items()}
        return new, {"loss": loss, "grads": grads, "lr": lr}

    def check(new, out):
        if np.isfinite(out["loss"]).all() and all(np.isfinite(v).all() for v in new.values()):
            return ""                                        # the fast path, every step
        bad = ~np.isfinite(out["loss"])
        for v in new.values():
            bad |= ~np.isfinite(v).reshape(R, -1).all(axis=1)
        return f"the loss or weights of runs {np.flatnonzero(bad).tolist()}"

    def observe_step(step, p, new, out):
        if out is None:                                      # last step: loss filled in below
            return {"loss": np.zeros(R), **observe(p, None, None, None)}
        return {"loss": out["loss"], **observe(p, out["grads"], new, out["lr"])}

    def with_frozen_loss(p, history):
        """Write the loss of each run's final parameters at the logged steps where it was frozen."""
        frozen = history["step"][:, None] >= n_steps          # (K, R)
        if frozen.any():
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                final_loss, _ = loss_and_grads(p, X, Y)
            history["loss"] = np.where(frozen, final_loss, history["loss"])
        return p, history

    try:
        params, history = loop.run(update, params, steps=int(n_steps.max()),
                                   observe=observe_step, lr=eta, lr_name="eta",
                                   log_every=log_every, progress=progress, check=check,
                                   label="gradient descent")
    except TrainingStopped as exc:
        if len(exc.partial[1]["step"]):
            exc.partial = with_frozen_loss(*exc.partial)
        raise
    return with_frozen_loss(params, history)


# --------------------------------------------------------------------------------------------
# Diagonal head
# --------------------------------------------------------------------------------------------
PAIRS = (("w_K", "w_Q"), ("w_V", "w_O"))   # (u, v): the two factors of a = w_K w_Q, b = w_V w_O


def conservation(params: dict) -> tuple[np.ndarray, np.ndarray]:
    r"""The quantities gradient flow conserves (paper Sec. 4): :math:`c_i = u_i^2 - v_i^2` for
    :math:`(u, v) = (w_K, w_Q)` and :math:`(w_V, w_O)`.

    Returns ``(c_KQ, c_VO)``, each of the shape of ``params["w_K"]`` (``(.., d)``).
    """
    w_K, w_Q, w_V, w_O = (params[k] for k in ("w_K", "w_Q", "w_V", "w_O"))
    c_KQ = w_K**2 - w_Q**2
    c_VO = w_V**2 - w_O**2
    return c_KQ, c_VO


def conservation_residual(params, grads, new_params, lr) -> np.ndarray:
    r"""How far one gradient-descent step is from the conservation law, per run (paper Sec. 4).

    For a pair :math:`(u, v)` with product :math:`w = u v`, the chain rule gives
    :math:`\nabla_u L = v\,g` and :math:`\nabla_v L = u\,g`, :math:`g = \partial_w \tilde L`.
    Gradient flow keeps :math:`c = u^2 - v^2` fixed; the step :math:`u' = u - \eta v g`,
    :math:`v' = v - \eta u g` multiplies it by exactly :math:`1 - \eta^2 g^2`:

    .. math:: c' = u'^2 - v'^2 = (u^2 - v^2)(1 - \eta^2 g^2).

    Here :math:`g` is recovered from the logged gradients, :math:`g = (v \nabla_u L + u
    \nabla_v L)/(u^2 + v^2)`, and the violation :math:`|c' - c(1 - \eta^2 g^2)|` is measured
    relative to :math:`u^2 + v^2 + u'^2 + v'^2`, the scale of its rounding error (:math:`c \sim
    \alpha^2` lies far below the rounding of :math:`u^2` once a coordinate is active, and a large
    step makes :math:`|1 - \eta^2 g^2| \gg 1`). A correct step gives ~1e-16.

    ``params``, ``grads``, ``new_params``: the state before the step, its gradients and the state
    after it, keys ``w_K, w_Q, w_V, w_O`` ``(R, d)``; ``lr`` ``(R,)`` the step each run took.
    Returns the worst violation over coordinates and both pairs, ``(R,)``.
    """
    eta = np.asarray(lr, dtype=np.float64)[:, None]          # (R, 1)
    worst = np.zeros(eta.shape[0])
    for u_key, v_key in PAIRS:
        u, v = params[u_key], params[v_key]
        u_new, v_new = new_params[u_key], new_params[v_key]
        grad_u, grad_v = grads[u_key], grads[v_key]
        size = u**2 + v**2
        g = np.divide(v * grad_u + u * grad_v, size, out=np.zeros_like(size), where=size > 0)
        c, c_new = u**2 - v**2, u_new**2 - v_new**2
        violation = np.abs(c_new - c * (1 - eta**2 * g**2))
        scale = size + u_new**2 + v_new**2
        relative = np.divide(violation, scale, out=np.zeros_like(scale), where=scale > 0)
        worst = np.maximum(worst, relative.max(axis=-1))
    return worst


def train_diagonal(params: dict, X, Y, *, eta: float, n_steps, log_every: int = 1,
                   progress: Progress | None = None):
    r"""Gradient descent on the diagonal head; logs ``a, b`` ``(K, R, d)``, the conserved
    quantities ``c_KQ, c_VO`` ``(K, R, d)`` and ``conservation_residual`` ``(K, R)``.

    ``params``: keys ``w_K, w_Q, w_V, w_O`` of shape ``(R, d)``. Inputs are checked once here.
    See :func:`gradient_descent` for the rest.
    """
    model.loss_and_grads(params, X, Y)                      # validates shapes and values once
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)

    def observe(p, g, new, lr):
        a, b = model.diag_products(p)
        c_kq, c_vo = conservation(p)
        res = np.zeros(a.shape[0]) if new is None else conservation_residual(p, g, new, lr)
        return {"a": a, "b": b, "c_KQ": c_kq, "c_VO": c_vo, "conservation_residual": res}

    data = {}                        # fixed data: computed once per number of live runs

    def loss_and_grads(p, X, Y):
        R = p["w_K"].shape[0]
        if R not in data:
            data[R] = model.diagonal_data(X, Y, R)
        return model.diag_loss_and_grads_unchecked(p, data[R])

    return gradient_descent(loss_and_grads, params, X, Y, eta=eta, n_steps=n_steps,
                            observe=observe, log_every=log_every, progress=progress)


# --------------------------------------------------------------------------------------------
# Full head
# --------------------------------------------------------------------------------------------
def train_full(params: dict, X, Y, *, eta: float, n_steps, log_every: int = 10,
               rank_threshold: float = 0.05, progress: Progress | None = None):
    r"""Gradient descent on the full head; logs the singular values of the learned perturbations.

    Logs, per run, the singular values of :math:`\Delta M = M(t) - M(0)` and
    :math:`\Delta N = N(t) - N(0)` (the change of the product, paper Sec. 5), their stable ranks
    and numerical ranks (#σ > ``rank_threshold``), and :math:`\|D_{KQ}(t) - D_{KQ}(0)\|_F`,
    :math:`D_{KQ} = W_K^\top W_K - W_Q^\top W_Q` (conserved by the flow; same for V/O).
    """
    model.full_loss_and_grads(params, X, Y)                 # validates once
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    rank_threshold = check_float("rank_threshold", rank_threshold, low=0.0, low_open=True)
    M0, N0 = model.full_products(params)
    D0 = _gram_differences(params)

    def observe(p, g, new, lr):
        M_t, N_t = model.full_products(p)
        dM, dN = M_t - M0, N_t - N0
        D = _gram_differences(p)
        return {"sv_dM": singular_values(dM), "sv_dN": singular_values(dN),
                "srank_dM": stable_rank(dM), "srank_dN": stable_rank(dN),
                "rank_dM": numerical_rank(dM, atol=rank_threshold),
                "rank_dN": numerical_rank(dN, atol=rank_threshold),
                "drift_KQ": np.linalg.norm(D[0] - D0[0], axis=(-2, -1)),
                "drift_VO": np.linalg.norm(D[1] - D0[1], axis=(-2, -1))}

    X1 = model.augment(X)                                   # fixed data: computed once

    def loss_and_grads(p, X, Y):
        return model.full_loss_and_grads_unchecked(p, X, Y, X1)

    return gradient_descent(loss_and_grads, params, X, Y, eta=eta, n_steps=n_steps,
                            observe=observe, log_every=log_every, progress=progress)


def _gram_differences(p):
    """:math:`D_{KQ} = W_K^T W_K - W_Q^T W_Q` and :math:`D_{VO} = W_V^T W_V - W_O^T W_O`."""
    gram = lambda W: W.swapaxes(-1, -2) @ W  # noqa: E731
    return gram(p["W_K"]) - gram(p["W_Q"]), gram(p["W_V"]) - gram(p["W_O"])
