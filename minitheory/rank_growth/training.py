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
identity at every step.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..spectral import numerical_rank, singular_values, stable_rank
from ..validation import DivergenceError, Interrupted, check_float, check_int
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

    Parameters
    ----------
    loss_and_grads : ``(params, X, Y) -> (loss (R,), grads)``, unchecked core with a run axis.
    params : dict of ``(R, ...)`` float64 arrays (not modified).
    eta : learning rate, > 0.
    n_steps : int or ``(R,)`` ints: run ``r`` takes ``n_steps[r]`` updates, then stays frozen.
    observe : ``(params, grads, new_params, lr) -> dict of arrays with leading axis R``: what
        to log. ``new_params`` is the state after this step's update and ``lr`` ``(R,)`` the step
        each run took (0 once frozen); both are ``None`` at the last step.
    log_every : log at steps ``0, log_every, 2 log_every, ...`` and at the last step.
    progress : optional ``progress(step, total)`` callback.

    Returns
    -------
    params : final parameters.
    history : ``{"step": (K,), "loss": (K, R), **observed stacked to (K, R, ...)}``.

    Raises
    ------
    DivergenceError
        When a run's loss turns non-finite; ``.partial`` holds ``(params, history)`` up to the
        last finite step.
    Interrupted
        On Ctrl-C, with the same ``.partial``.
    """
    eta = check_float("eta", eta, low=0.0, low_open=True)
    log_every = check_int("log_every", log_every, low=1)
    R = next(iter(params.values())).shape[0]
    n_steps = np.broadcast_to(np.asarray(n_steps), (R,))
    if n_steps.dtype.kind not in "iu" or np.any(n_steps < 0):
        raise ValueError(f"n_steps must be non-negative integers, got {n_steps}")
    total = int(n_steps.max())
    logs: dict[str, list] = {"step": [], "loss": []}

    def history():
        return {k: np.asarray(v) for k, v in logs.items()}

    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    loss = np.zeros(R)
    step_shape = lambda p: (R,) + (1,) * (p.ndim - 1)  # noqa: E731  per-run lr broadcast
    # A diverging run overflows on its way to inf; the loop detects the non-finite loss itself
    # and raises DivergenceError, so NumPy's warnings would only be noise.
    step = 0
    good = params                        # the last parameters with a finite loss
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for step in range(total + 1):
                # Runs past their budget are frozen: evaluate only the runs still moving (or
                # at their last step).
                live = np.flatnonzero(step <= n_steps)
                if live.size == R:
                    loss, grads = loss_and_grads(params, X, Y)
                else:
                    loss = loss.copy()
                    loss[live], g_live = loss_and_grads({k: v[live] for k, v in params.items()},
                                                        X, Y)
                    grads = {k: np.zeros_like(v) for k, v in params.items()}
                    for k in grads:
                        grads[k][live] = g_live[k]
                if not np.all(np.isfinite(loss)):
                    bad = np.flatnonzero(~np.isfinite(loss)).tolist()
                    raise DivergenceError(
                        f"loss became non-finite at step {step} (runs {bad}) with learning rate "
                        f"eta={eta}; reduce eta", step=step, lr=eta, partial=(good, history()))
                good = params
                last = step == total
                new = lr = None
                if not last:
                    lr = np.where(step < n_steps, eta, 0.0)      # frozen runs take no step
                    new = {k: p - lr.reshape(step_shape(p)) * grads[k] for k, p in params.items()}
                if step % log_every == 0 or last:
                    logs["step"].append(step)
                    logs["loss"].append(loss)
                    for k, v in observe(params, grads, new, lr).items():
                        logs.setdefault(k, []).append(v)
                if progress is not None:
                    progress(step, total)
                if not last:
                    params = new
    except KeyboardInterrupt:
        # keep what was logged; drop a half-logged step so every array has the same length
        n = min(len(v) for v in logs.values())
        for v in logs.values():
            del v[n:]
        raise Interrupted(step=step, lr=eta, partial=(params, history())) from None
    return params, history()


# --------------------------------------------------------------------------------------------
# Diagonal head
# --------------------------------------------------------------------------------------------
def conservation(params: dict) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`c = u^2 - v^2` for the pairs :math:`(w_K, w_Q)` and :math:`(w_V, w_O)`, each ``(.., d)``."""
    return (params["w_K"] ** 2 - params["w_Q"] ** 2, params["w_V"] ** 2 - params["w_O"] ** 2)


def conservation_residual(params, grads, new_params, lr) -> np.ndarray:
    r"""Worst relative violation of :math:`c_i' = c_i(1 - \eta^2 g_i^2)` over one step, per run.

    :math:`g_i = \partial_i\tilde L` is recovered from the factor gradients as
    :math:`g_i = (u_i \nabla u_i + v_i \nabla v_i)/(u_i^2 + v_i^2)` (exact, since
    :math:`\nabla u = v g`, :math:`\nabla v = u g`). The violation is measured relative to
    :math:`u_i^2 + v_i^2 + u_i'^2 + v_i'^2`, the scale of its rounding error: :math:`c_i \sim
    \alpha^2` lies far below the rounding of :math:`u_i^2` once a coordinate is active (spec
    pitfall), and a large step makes :math:`|1 - \eta^2 g_i^2| \gg 1`.
    ``lr`` ``(R,)`` is the step each run took. Returns ``(R,)``.
    """
    lr2 = (np.asarray(lr, dtype=np.float64) ** 2)[:, None]
    worst = np.zeros(lr2.shape[0])
    for u_k, v_k in (("w_K", "w_Q"), ("w_V", "w_O")):
        u, v, nu, nv = params[u_k], params[v_k], new_params[u_k], new_params[v_k]
        size = u * u + v * v
        g = np.divide(v * grads[u_k] + u * grads[v_k], size, out=np.zeros_like(size),
                      where=size > 0)
        resid = np.abs((nu * nu - nv * nv) - (u * u - v * v) * (1 - lr2 * g * g))
        scale = size + nu * nu + nv * nv
        rel = np.divide(resid, scale, out=np.zeros_like(scale), where=scale > 0)
        worst = np.maximum(worst, rel.max(axis=-1))
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
    r"""Gradient descent on the full head; logs the spectra of the learned perturbations.

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
        M, Nm = model.full_products(p)
        dM, dN = M - M0, Nm - N0
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
