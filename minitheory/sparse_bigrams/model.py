r"""One-layer linear transformer for sparse contextual bigrams (Ren, Wang, Lee 2024, Sec. 3):
the fast twins. Read :mod:`~minitheory.sparse_bigrams.reference` first: it holds the same
functions written as the paper writes them, and each function here names its reference twin and
the speed it gains over it (the training loops call these). Input checks live in
:mod:`~minitheory.sparse_bigrams.checks`.

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
from .checks import check_inputs, drop_run_axis
from .data import Instance
from .reference import bayes_error  # noqa: F401  (the fast twin gained < 1.5x and was deleted)

KEYS = ("V", "A")


# --------------------------------------------------------------------------------------------
# Sample loss: forward and backward side by side
# --------------------------------------------------------------------------------------------
def forward(params: dict, xs, k):
    r"""``f`` ``(R, B, N)`` and the weighted histograms ``Xa`` ``(R, B, N)``, :math:`Xa_b = X_b a_{k_b}`.

    Fast twin of :func:`reference.forward` (one run, one-hot matrices and ``einsum``):
    :math:`Xa_b = \sum_t A_{t, k_b} e_{x_{b,t}}` by one ``bincount`` over (run, sample, token),
    for all runs at once. Measured gain (B = 64, T = 50, N = 10; two timeit runs on a loaded
    machine): 1.8-2.1x at R = 1, 3.4-3.5x at R = 6.
    """
    V, A = params["V"], params["A"]
    R, T, N = A.shape
    B = xs.shape[1]
    w = np.take_along_axis(A, k[:, None, :], axis=2).swapaxes(1, 2)      # (R, B, T) = A[t, k_b]
    idx = (np.arange(R * B).reshape(R, B, 1) * N + xs).ravel()
    Xa = np.bincount(idx, weights=w.ravel(), minlength=R * B * N).reshape(R, B, N)
    return Xa @ V.swapaxes(1, 2), Xa


def backward(params: dict, xs, k, resid, Xa):
    r"""Gradients of the batch-mean loss from the residual :math:`\mathrm{resid}_b = e_{x_o} - f_b`
    ``(R, B, N)``:

    .. math::
        \nabla_V = -\tfrac1B \sum_b \mathrm{resid}_b (X_b a_{k_b})^\top,\qquad
        (\nabla_A)_{t,k} = -\tfrac1B \sum_{b: k_b = k} (V^\top \mathrm{resid}_b)_{x_{b,t}} .

    Fast twin of :func:`reference.backward`: the gather ``(resid @ V)[x_t]`` replaces
    :math:`X_b^\top V^\top \mathrm{resid}_b`, and the sum over the samples sharing last token
    ``k`` is a one-hot product; all runs at once (gain: see :func:`loss_and_grads_unchecked`).
    """
    V = params["V"]
    R, B, N = resid.shape
    g_V = -(resid.swapaxes(1, 2) @ Xa) / B                                 # (R, N, N)
    ux = np.take_along_axis(resid @ V, xs, axis=2)                         # (R, B, T)
    onehot = (k[:, :, None] == np.arange(N)).astype(np.float64)            # (R, B, N)
    g_A = -(ux.swapaxes(1, 2) @ onehot) / B                                # (R, T, N)
    return {"V": g_V, "A": g_A}


def loss_and_grads_unchecked(params, xs, k, xo):
    r"""Unchecked :func:`loss_and_grads` on the run axis (inputs already validated).

    :math:`L = \tfrac12 \operatorname{mean}_b \|e_{x_o} - V X A e_k\|^2` per run: ``xs``
    ``(R, B, T)``, ``k, xo`` ``(R, B)``; returns loss ``(R,)`` and ``{"V", "A"}`` grads.
    Fast twin of :func:`reference.loss_and_grads` (which loops over runs); measured gain
    (B = 64, T = 50, N = 10): 4.4-9.3x at R = 1, 16-20x at R = 6.
    """
    f, Xa = forward(params, xs, k)
    N = f.shape[-1]
    resid = (xo[..., None] == np.arange(N)) - f                            # e_{x_o} - f
    loss = 0.5 * np.einsum("rbn,rbn->r", resid, resid) / f.shape[1]
    return loss, backward(params, xs, k, resid, Xa)


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
    return drop_run_axis(loss_and_grads_unchecked(runs, xs, k, xo), squeeze)


def softmax_loss_and_grads_unchecked(params, xs, k, xo):
    r"""Unchecked :func:`softmax_loss_and_grads` on the run axis: the linear core at
    :math:`A = \mathrm{softmax}(W)` (over positions), then :math:`\bar W` by the softmax VJP.
    Fast twin of :func:`reference.softmax_loss_and_grads`; measured gain (B = 64, T = 50,
    N = 10): 4.1-4.6x at R = 1, 9.7-11x at R = 6."""
    S = softmax(params["W"], axis=-2)                                      # (R, T, N)
    loss, g = loss_and_grads_unchecked({"V": params["V"], "A": S}, xs, k, xo)
    return loss, {"V": g["V"], "W": softmax_vjp(S, g["A"], axis=-2)}


def softmax_loss_and_grads(params: dict, xs, k, xo):
    r"""The softmax-attention model :math:`f = V X\,\mathrm{softmax}(W e_k)` that the paper
    compares with the linear one.

    It is the linear model at :math:`A = \mathrm{softmax}(W)` (softmax over positions, per
    column), so its gradients are the linear ones pulled back through the softmax:

    .. math::
        \nabla_V = -\tfrac1B\sum_b \mathrm{resid}_b (X_b s_{k_b})^\top,\qquad
        \nabla_{w_k} = s_k \odot (g_k - (s_k^\top g_k)\mathbf 1),\quad g_k = (\nabla_A)_{:,k}.

    ``params``: ``"V"`` ``(N, N)``, ``"W"`` ``(T, N)`` (optional run axis); batches as in
    :func:`loss_and_grads`. Returns ``(loss, {"V", "W"})``.
    """
    runs, xs, k, xo, squeeze = check_inputs(params, xs, k, xo, second="W")
    return drop_run_axis(softmax_loss_and_grads_unchecked(runs, xs, k, xo), squeeze)


# --------------------------------------------------------------------------------------------
# Population (closed form) side; every function accepts leading run axes on V and A.
# bayes_error is the reference's (imported above): its fast twin gained only 1.2-1.35x.
# Gains: python timeit, best of 7 repeats, two runs on a shared 2-core machine (load ~10).
# --------------------------------------------------------------------------------------------
def sigma_inner(V: np.ndarray, W: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r""":math:`\langle V, W \rangle_\Sigma = \mathrm{tr}(V \Sigma W^\top) = \sum_{ij} V_{ij}W_{ij}\mu_j - (V\mu)^\top(W\mu)`, O(N²).

    Fast twin of :func:`reference.sigma_inner` (which forms :math:`\Sigma`, O(N³), one run):
    measured gain 1.4x at N = 10 (one run), 7-8x at N = 10 with R = 6, 57-93x at N = 500 (the
    large-T step)."""
    return np.einsum("...ij,...ij,j->...", V, W, mu) - np.einsum("...i,...i->...", V @ mu, W @ mu)


def mu_norm2(M: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r""":math:`\|M\|_\mu^2 = \sum_k \mu_k \|M e_k\|^2` for ``M`` of shape ``(..., ., N)``.

    Fast twin of :func:`reference.mu_norm2` (one run): one ``einsum`` over all runs; measured
    gain at (T, N) = (50, 10): 2.0-2.4x for one run, 7-9x for R = 6."""
    return np.einsum("...tk,...tk,k->...", M, M, mu)


def _column_stats(A, inst: Instance):
    r"""Per last token :math:`k`: :math:`\|a_k\|^2`, :math:`a_k^\top q_k`, :math:`c_k = \mathbf 1^\top a_k`."""
    return (np.einsum("...tk,...tk->...k", A, A), np.einsum("...tk,tk->...k", A, inst.Q_star),
            A.sum(-2))


def population_loss(params: dict, inst: Instance):
    r"""Closed-form :math:`L = \mathbb E \ell` for :math:`x_t \overset{iid}\sim \mu`:

    .. math::
        L = L_{irr} + \tfrac12 \sum_k \mu_k \big[\|a_k\|^2\|V\|_\Sigma^2 - 2(a_k^\top q_k)\langle V,P\rangle_\Sigma
        + \|q_k\|^2\|P\|_\Sigma^2 + c_k^2\|V\mu\|^2 - 2c_k (V\mu)^\top\mu + \|\mu\|^2\big].

    The first three terms are a rank-one fit in the :math:`\Sigma` metric; the last three the
    unigram part, zero when :math:`c_k = 1` and :math:`V\mu = \mu`. Cost O(N² + TN).
    Returns a float, or one value per run for stacked ``(R, ., .)`` parameters.

    Fast twin of :func:`reference.population_loss` (one run at a time, :math:`\Sigma` formed):
    all runs in one pass. Measured gain at N = 10, T = 50: none for one run (0.7-1.0x), 3.4-5.6x
    for R = 6 (kept for the run axis).
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
    r"""Gradients of :func:`population_loss` (uses :math:`P\mu = \mu`, :math:`\mathbf 1^\top q_k = 1`):

    .. math::
        \nabla_V L = \sum_k \mu_k\big[-(a_k^\top q_k) P\Sigma - c_k \mu\mu^\top + \|a_k\|^2 V\Sigma
        + c_k^2 (V\mu)\mu^\top\big],\\
        \nabla_{a_k} L = -\mu_k\big[\langle V,P\rangle_\Sigma q_k + ((V\mu)^\top\mu)\mathbf 1
        - \|V\|_\Sigma^2 a_k - \|V\mu\|^2 c_k \mathbf 1\big].

    Fast twin of :func:`reference.population_grads`: :math:`M\Sigma = M D - (M\mu)\mu^\top` is
    formed without ``Sigma`` (O(N² + TN)), all runs at once. Measured gain at N = 10, T = 50:
    1.6x for one run, 2.8-4.9x for R = 6.
    """
    V, A, mu = params["V"], params["A"], inst.mu
    aa, aq, c = _column_stats(A, inst)
    Vmu = V @ mu
    per_run = lambda x: np.asarray(x)[..., None, None]  # noqa: E731  per-run scalar vs matrices
    times_sigma = lambda M: M * mu - (M @ mu)[..., :, None] * mu  # noqa: E731  M Sigma
    g_V = (-per_run(aq @ mu) * times_sigma(inst.P) - per_run(c @ mu) * np.outer(mu, mu)
           + per_run(aa @ mu) * times_sigma(V) + per_run((c**2) @ mu) * Vmu[..., :, None] * mu)
    g_A = -mu * (per_run(sigma_inner(V, inst.P, mu)) * inst.Q_star + per_run(Vmu @ mu)
                 - per_run(sigma_inner(V, V, mu)) * A
                 - per_run(np.einsum("...i,...i->...", Vmu, Vmu)) * c[..., None, :])
    return {"V": g_V, "A": g_A}


def preconditioned_grads(params: dict, inst: Instance) -> dict:
    r"""Population gradients times :math:`D^{-1}` on the right (column :math:`j` divided by
    :math:`\mu_j`): a step in the :math:`\mu` metric, so rare last tokens learn as fast as common
    ones. :math:`(P, Q^*)` is a zero of both.

    Fast twin of :func:`reference.preconditioned_grads` through the fast
    :func:`population_grads`; measured gain at N = 10, T = 50: 1.3x for one run, 2.9-5.0x for
    R = 6.
    """
    g = population_grads(params, inst)
    return {key: v / inst.mu for key, v in g.items()}
