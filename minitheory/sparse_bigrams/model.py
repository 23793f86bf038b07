r"""One-layer linear transformer for sparse contextual bigrams (Ren, Wang, Lee 2024, Sec. 3).

.. math::
    f(X, k; V, A) = V X A e_k = \sum_t A_{t,k}\, V e_{x_t}, \qquad
    \ell = \tfrac12 \|e_{x_o} - f\|^2,

with :math:`V \in \mathbb R^{N \times N}` (value block, reads the token) and
:math:`A \in \mathbb R^{T \times N}` (key-query block, pairs position :math:`t` with last token
:math:`k`; :math:`a_k := A e_k`). The ground truth :math:`(V, A) = (P, Q^*)` gives
:math:`f = \mathbb E[e_{x_o} \mid X, k]`, and :math:`(cV, A/c)` gives the same :math:`f`.

Sample side (keys ``"V"`` ``(N, N)``, ``"A"`` ``(T, N)``, optional leading run axis ``R``; batches
``xs`` ``(B, T)``, ``k`` ``(B,)``, ``xo`` ``(B,)`` of token ids, with ``R`` leading if the
parameters have it): :func:`loss_and_grads`. Tokens repeat inside a sequence and last tokens
repeat inside a batch, so sums are accumulated with ``np.bincount`` and one-hot products, never
with fancy-index ``+=`` (which applies a repeated index once).

Population side (one run, :math:`x_t \overset{iid}\sim \mu`): :func:`population_loss`,
:func:`population_grads`, :func:`preconditioned_grads`, in the norms

.. math::
    D = \mathrm{diag}(\mu),\quad \Sigma = D - \mu\mu^\top,\quad
    \|M\|_\mu^2 = \sum_k \mu_k \|M e_k\|^2,\quad \langle V, V' \rangle_\Sigma = \mathrm{tr}(V \Sigma V'^\top).
"""
from __future__ import annotations

import numpy as np

from ..primitives import softmax, softmax_vjp
from ..validation import check_array
from .data import Instance

KEYS = ("V", "A")


# --------------------------------------------------------------------------------------------
# Sample loss: forward and backward side by side
# --------------------------------------------------------------------------------------------
def forward(params: dict, xs, k):
    r"""``f`` ``(R, B, N)`` and the weighted histograms ``Xa`` ``(R, B, N)``, :math:`Xa_b = X_b a_{k_b}`.

    :math:`Xa_b = \sum_t A_{t, k_b} e_{x_{b,t}}` by one ``bincount`` over (run, sample, token).
    """
    V, A = params["V"], params["A"]
    R, T, N = A.shape
    B = xs.shape[1]
    w = np.take_along_axis(A, k[:, None, :], axis=2).swapaxes(1, 2)      # (R, B, T) = A[t, k_b]
    idx = (np.arange(R * B).reshape(R, B, 1) * N + xs).ravel()
    Xa = np.bincount(idx, weights=w.ravel(), minlength=R * B * N).reshape(R, B, N)
    return Xa @ V.swapaxes(1, 2), Xa


def backward(params: dict, xs, k, r, Xa):
    r"""Gradients of the batch-mean loss from the residual :math:`r_b = e_{x_o} - f_b` ``(R, B, N)``.

    .. math::
        \nabla_V = -\tfrac1B \sum_b r_b (X_b a_{k_b})^\top,\qquad
        (\nabla_A)_{t,k} = -\tfrac1B \sum_{b: k_b = k} (V^\top r_b)_{x_{b,t}} .

    The second sum runs over the samples sharing last token ``k``: a one-hot product.
    """
    V = params["V"]
    R, B, N = r.shape
    g_V = -(r.swapaxes(1, 2) @ Xa) / B                                     # (R, N, N)
    ux = np.take_along_axis(r @ V, xs, axis=2)                             # (R, B, T)
    onehot = (k[:, :, None] == np.arange(N)).astype(np.float64)            # (R, B, N)
    g_A = -(ux.swapaxes(1, 2) @ onehot) / B                                # (R, T, N)
    return {"V": g_V, "A": g_A}


def loss_and_grads_unchecked(params, xs, k, xo):
    r"""Unchecked :func:`loss_and_grads` on the run axis (inputs already validated).

    :math:`L = \tfrac12 \operatorname{mean}_b \|e_{x_o} - V X A e_k\|^2` per run: ``xs``
    ``(R, B, T)``, ``k, xo`` ``(R, B)``; returns loss ``(R,)`` and ``{"V", "A"}`` grads.
    """
    f, Xa = forward(params, xs, k)
    r = -f
    R, B, N = f.shape
    r[np.arange(R)[:, None], np.arange(B)[None], xo] += 1.0                # e_xo - f (no repeats)
    loss = 0.5 * np.einsum("rbn,rbn->r", r, r) / B
    return loss, backward(params, xs, k, r, Xa)


def loss_and_grads(params: dict, xs, k, xo):
    r"""Batch-mean loss :math:`\tfrac12 \operatorname{mean}_b \|e_{x_o} - V X A e_k\|^2` and gradients.

    Parameters
    ----------
    params : ``"V"`` ``(N, N)``, ``"A"`` ``(T, N)`` (``(R, ., .)`` with a run axis).
    xs : int ``(B, T)``; k, xo : int ``(B,)`` (``R`` leading with a run axis); ids in ``[0, N)``.

    Returns
    -------
    loss : float or ``(R,)``;  grads : ``{"V", "A"}`` with the shapes of ``params``.
    """
    runs, xs, k, xo, squeeze = check_inputs(params, xs, k, xo)
    loss, grads = loss_and_grads_unchecked(runs, xs, k, xo)
    if squeeze:
        return float(loss[0]), {kk: v[0] for kk, v in grads.items()}
    return loss, grads


def softmax_loss_and_grads_unchecked(params, xs, k, xo):
    r"""Unchecked :func:`softmax_loss_and_grads` on the run axis: the linear core at
    :math:`A = \mathrm{softmax}(W)` (over positions), then :math:`\bar W` by the softmax VJP."""
    S = softmax(params["W"], axis=-2)                                      # (R, T, N)
    loss, g = loss_and_grads_unchecked({"V": params["V"], "A": S}, xs, k, xo)
    return loss, {"V": g["V"], "W": softmax_vjp(S, g["A"], axis=-2)}


def softmax_loss_and_grads(params: dict, xs, k, xo):
    r"""The softmax-attention model :math:`f = V X\,\mathrm{softmax}(W e_k)` (spec E4).

    It is the linear model at :math:`A = \mathrm{softmax}(W)` (softmax over positions, per
    column), so its gradients are the linear ones pulled back through the softmax:

    .. math::
        \nabla_V = -\tfrac1B\sum_b r_b (X_b s_{k_b})^\top,\qquad
        \nabla_{w_k} = s_k \odot (g_k - (s_k^\top g_k)\mathbf 1),\quad g_k = (\nabla_A)_{:,k}.

    ``params``: ``"V"`` ``(N, N)``, ``"W"`` ``(T, N)`` (optional run axis); batches as in
    :func:`loss_and_grads`. Returns ``(loss, {"V", "W"})``.
    """
    runs, xs, k, xo, squeeze = check_inputs(params, xs, k, xo, second="W")
    loss, grads = softmax_loss_and_grads_unchecked(runs, xs, k, xo)
    if squeeze:
        return float(loss[0]), {kk: v[0] for kk, v in grads.items()}
    return loss, grads


def check_inputs(params, xs, k, xo, second: str = "A"):
    """Validate; returns ``(params, xs, k, xo, squeeze)`` with a run axis added. ``second`` is
    the name of the attention parameter: ``"A"`` (linear) or ``"W"`` (softmax)."""
    if not isinstance(params, dict) or any(key not in params for key in ("V", second)):
        raise ValueError(f"params must be a dict with keys ['V', '{second}']")
    V = check_array("params['V']", params["V"], ndim=(2, 3))
    squeeze = V.ndim == 2
    A = check_array(f"params['{second}']", params[second], ndim=(2, 3))
    if A.ndim != V.ndim:
        raise ValueError(f"params['V'] {V.shape} and params['{second}'] {A.shape} must both have "
                         f"a run axis or neither: V is (N, N) or (R, N, N), {second} is (T, N) "
                         f"or (R, T, N)")
    V, A = (V[None], A[None]) if squeeze else (V, A)
    R, N = V.shape[0], V.shape[-1]
    if V.shape != (R, N, N) or A.shape[0] != R or A.shape[-1] != N:
        raise ValueError(f"params['V'] must be (N, N) and params['{second}'] (T, N) with the same "
                         f"N (and run axis); got {np.shape(params['V'])} and "
                         f"{np.shape(params[second])}")
    T = A.shape[1]
    lead = () if squeeze else (R,)
    arrays = []
    for name, arr, shape in (("xs", xs, lead + (None, T)), ("k", k, lead + (None,)),
                             ("xo", xo, lead + (None,))):
        arr = np.asarray(arr)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
        if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape)):
            raise ValueError(f"{name} must have shape "
                             f"{tuple('B' if s is None else s for s in shape)}, got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= N):
            raise ValueError(f"{name} holds token ids outside [0, N) = [0, {N})")
        arrays.append(arr[None] if squeeze else arr)
    xs, k, xo = arrays
    if not (xs.shape[1] == k.shape[1] == xo.shape[1] >= 1):
        raise ValueError(f"xs, k and xo must hold the same number B >= 1 of samples, got "
                         f"{xs.shape[1]}, {k.shape[1]}, {xo.shape[1]}")
    return {"V": V, second: A}, xs, k, xo, squeeze


# --------------------------------------------------------------------------------------------
# Population (closed form) side; every function accepts leading run axes on V and A
# --------------------------------------------------------------------------------------------
def sigma_inner(V: np.ndarray, W: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r""":math:`\langle V, W \rangle_\Sigma = \mathrm{tr}(V \Sigma W^\top) = \sum_{ij} V_{ij}W_{ij}\mu_j - (V\mu)^\top(W\mu)`, O(N²)."""
    return np.einsum("...ij,...ij,j->...", V, W, mu) - np.einsum("...i,...i->...", V @ mu, W @ mu)


def mu_norm2(M: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r""":math:`\|M\|_\mu^2 = \sum_k \mu_k \|M e_k\|^2` for ``M`` of shape ``(..., ., N)``."""
    return np.einsum("...tk,...tk,k->...", M, M, mu)


def _column_stats(A, inst: Instance):
    r"""Per last token :math:`k`: :math:`\|a_k\|^2`, :math:`a_k^\top q_k`, :math:`c_k = \mathbf 1^\top a_k`."""
    return (np.einsum("...tk,...tk->...k", A, A), np.einsum("...tk,tk->...k", A, inst.Q_star),
            A.sum(-2))


def bayes_error(inst: Instance) -> float:
    r""":math:`L_{irr} = \tfrac12 (1 - \sum_k \mu_k(\|q_k\|^2 \|P\|_\Sigma^2 + \|\mu\|^2))`, the loss of the truth."""
    mu = inst.mu
    qq = np.einsum("tk,tk->k", inst.Q_star, inst.Q_star)
    return float(0.5 * (1.0 - mu @ (qq * sigma_inner(inst.P, inst.P, mu) + mu @ mu)))


def population_loss(params: dict, inst: Instance):
    r"""Closed-form :math:`L = \mathbb E \ell` (spec (d)):

    .. math::
        L = L_{irr} + \tfrac12 \sum_k \mu_k \big[\|a_k\|^2\|V\|_\Sigma^2 - 2(a_k^\top q_k)\langle V,P\rangle_\Sigma
        + \|q_k\|^2\|P\|_\Sigma^2 + c_k^2\|V\mu\|^2 - 2c_k (V\mu)^\top\mu + \|\mu\|^2\big].

    The first three terms are a rank-one fit in the :math:`\Sigma` metric; the last three the
    unigram part, zero when :math:`c_k = 1` and :math:`V\mu = \mu`. Cost O(N² + TN).
    Returns a float, or one value per run for stacked ``(R, ., .)`` parameters.
    """
    V, A, mu = params["V"], params["A"], inst.mu
    aa, aq, c = _column_stats(A, inst)
    qq = np.einsum("tk,tk->k", inst.Q_star, inst.Q_star)
    Vmu = V @ mu
    col = lambda x: np.asarray(x)[..., None]  # noqa: E731  per-run scalar against (.., N)
    per_k = (aa * col(sigma_inner(V, V, mu)) - 2 * aq * col(sigma_inner(V, inst.P, mu))
             + qq * sigma_inner(inst.P, inst.P, mu) + c**2 * col(np.einsum("...i,...i->...", Vmu, Vmu))
             - 2 * c * col(Vmu @ mu) + mu @ mu)
    out = bayes_error(inst) + 0.5 * (per_k @ mu)
    return float(out) if np.ndim(out) == 0 else out


def population_grads(params: dict, inst: Instance) -> dict:
    r"""Gradients of :func:`population_loss` (spec (d); uses :math:`P\mu = \mu`, :math:`\mathbf 1^\top q_k = 1`):

    .. math::
        \nabla_V L = \sum_k \mu_k\big[-(a_k^\top q_k) P\Sigma - c_k \mu\mu^\top + \|a_k\|^2 V\Sigma
        + c_k^2 (V\mu)\mu^\top\big],\\
        \nabla_{a_k} L = -\mu_k\big[\langle V,P\rangle_\Sigma q_k + ((V\mu)^\top\mu)\mathbf 1
        - \|V\|_\Sigma^2 a_k - \|V\mu\|^2 c_k \mathbf 1\big].

    :math:`M\Sigma = M D - (M\mu)\mu^\top` is formed without ``Sigma``: O(N² + TN).
    """
    V, A, mu = params["V"], params["A"], inst.mu
    aa, aq, c = _column_stats(A, inst)
    Vmu = V @ mu
    s = lambda x: np.asarray(x)[..., None, None]  # noqa: E731  per-run scalar against matrices
    times_sigma = lambda M: M * mu - (M @ mu)[..., :, None] * mu  # noqa: E731  M Sigma
    g_V = (-s(aq @ mu) * times_sigma(inst.P) - s(c @ mu) * np.outer(mu, mu)
           + s(aa @ mu) * times_sigma(V) + s((c**2) @ mu) * Vmu[..., :, None] * mu)
    g_A = -mu * (s(sigma_inner(V, inst.P, mu)) * inst.Q_star + s(Vmu @ mu)
                 - s(sigma_inner(V, V, mu)) * A
                 - s(np.einsum("...i,...i->...", Vmu, Vmu)) * c[..., None, :])
    return {"V": g_V, "A": g_A}


def preconditioned_grads(params: dict, inst: Instance) -> dict:
    r"""Population gradients times :math:`D^{-1}` on the right (column :math:`j` divided by
    :math:`\mu_j`): a step in the :math:`\mu` metric, so rare last tokens learn as fast as common
    ones. :math:`(P, Q^*)` is a zero of both."""
    g = population_grads(params, inst)
    return {key: v / inst.mu for key, v in g.items()}
