r"""The attention heads of Boix-Adsera, Littwin, Abbe, Bengio, Susskind (2023), written as the
paper writes them (arXiv:2306.07042 v2): the plain reference that :mod:`.model` speeds up.

One softmax attention head (Sec. 3, the model trained in Sec. 4-5),

.. math::
    f(X) = \mathrm{smax}(X W_K W_Q^\top X^\top)\, X W_V W_O^\top
         = \mathrm{smax}(X M X^\top)\, X N, \qquad M = W_K W_Q^\top,\quad N = W_V W_O^\top,

with the softmax taken row-wise over the ``n`` key positions and **no** :math:`1/\sqrt d` factor,
trained on the squared error averaged over the ``n_seq`` sequences
[project choice: the paper's toy (App. A) trains on the mean-squared error; this is its
:math:`\tfrac12`-scaled form, so that the gradients carry no factor 2]:

.. math:: L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2 .

The **diagonal head** is the paper's network class :math:`f(x; u \odot v)` (Sec. 3-4):
:math:`W_* = \mathrm{diag}(w_*)`, so :math:`M = \mathrm{diag}(a)`, :math:`N = \mathrm{diag}(b)` with
:math:`a = w_K \odot w_Q`, :math:`b = w_V \odot w_O`, and

.. math:: f(X) = \mathrm{smax}(X \,\mathrm{diag}(a)\, X^\top)\, X\, \mathrm{diag}(b) .

Reading order: :func:`head_forward`, :func:`head_backward` (the head over its two products),
:func:`squared_loss`, :func:`products_loss_and_grads`, :func:`full_loss_and_grads`; then the
diagonal head :func:`ab_forward`, :func:`ab_backward`, :func:`loss_and_grads_ab`, :func:`loss_and_grads`.

Every array may carry one optional leading **run axis** ``R`` (independent models trained at
once, e.g. a grid of init scales): parameters ``(R, ...)``, outputs ``(R, n_seq, n, d_out)``, the
loss one value per run. The data ``X`` ``(n_seq, n, d)`` and ``Y`` are shared by the runs. The
``...`` in the ``einsum`` subscripts below is that axis (or nothing), and ``M[..., None, :, :]``
puts a run's matrix in front of the sequence axis of ``X``.

Nothing here validates its inputs (the checked entry points are in :mod:`.model`), writes into
an argument or changes the layout: each line is one term of the equation in its docstring.
"""
from __future__ import annotations

import numpy as np

from ..primitives import softmax, softmax_vjp


# --------------------------------------------------------------------------------------------
# The head over its products M = W_K W_Q^T and N = W_V W_O^T
# --------------------------------------------------------------------------------------------
def head_forward(M: np.ndarray, N: np.ndarray, X: np.ndarray):
    r"""Attention head output :math:`f(X) = \mathrm{smax}(X M X^\top)\, X N` (Sec. 3).

    .. math:: Z = X M X^\top,\qquad S = \mathrm{smax}(Z)\ \text{(rows)},\qquad f = S X N .

    Parameters
    ----------
    M : ``([R,] d, d)`` key-query product :math:`W_K W_Q^\top`.
    N : ``([R,] d, d_out)`` value-output product :math:`W_V W_O^\top`.
    X : ``(n_seq, n, d)`` input sequences.

    Returns
    -------
    f : ``([R,] n_seq, n, d_out)``;  cache : ``(X, N, S, SX)`` for :func:`head_backward`.
    """
    Xt = X.swapaxes(-1, -2)                             # X^T per sequence, (n_seq, d, n)
    Z = X @ M[..., None, :, :] @ Xt                     # X M X^T: Z_ik = x_i^T M x_k
    S = softmax(Z, axis=-1)                             # over the key positions k
    SX = S @ X                                          # ([R,] n_seq, n, d)
    f = SX @ N[..., None, :, :]                         # (S X) N
    return f, (X, N, S, SX)


def head_backward(cache, df: np.ndarray):
    r"""Gradients of the products from the cotangent :math:`\bar f = \partial L/\partial f`.

    .. math::
        \frac{\partial L}{\partial N} = \sum_s (S X)^\top \bar f,\qquad
        G_S = \bar f\, (X N)^\top,\qquad
        G_Z = S \odot \big(G_S - \mathrm{rowsum}(G_S \odot S)\big),\qquad
        \frac{\partial L}{\partial M} = \sum_s X^\top G_Z X,

    :math:`G_Z` being the softmax VJP (:func:`~minitheory.primitives.softmax_vjp`).

    Parameters
    ----------
    cache : from :func:`head_forward`.
    df : ``([R,] n_seq, n, d_out)``, the cotangent of ``f`` (it carries the ``1/n_seq`` of the loss).

    Returns
    -------
    dM : ``([R,] d, d)``;  dN : ``([R,] d, d_out)``.
    """
    X, N, S, SX = cache
    Xt = X.swapaxes(-1, -2)
    dN = np.sum(SX.swapaxes(-1, -2) @ df, axis=-3)              # sum_s (S X)^T df
    G_S = df @ (X @ N[..., None, :, :]).swapaxes(-1, -2)        # df (X N)^T
    G_Z = softmax_vjp(S, G_S, axis=-1)
    dM = np.sum(Xt @ G_Z @ X, axis=-3)                          # sum_s X^T G_Z X
    return dM, dN


def squared_loss(f: np.ndarray, Y: np.ndarray):
    r"""The loss :math:`L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2` of outputs
    ``f`` ``([R,] n_seq, n, d_out)`` against targets ``Y`` ``(n_seq, n, d_out)``, and its
    cotangent :math:`\bar f = \partial L/\partial f = (f - Y)/n_{seq}`.

    Returns ``(loss, df)``: the loss a scalar or ``(R,)``, ``df`` the shape of ``f``.
    """
    n_seq = Y.shape[0]
    resid = f - Y                                               # f(X_s) - Y_s
    return 0.5 * np.sum(resid**2, axis=(-3, -2, -1)) / n_seq, resid / n_seq


def products_loss_and_grads(M: np.ndarray, N: np.ndarray, X: np.ndarray, Y: np.ndarray):
    r"""Loss :math:`L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2` and its gradients
    :math:`\partial L/\partial M`, :math:`\partial L/\partial N` (shapes of ``M``, ``N``).

    ``Y`` is ``(n_seq, n, d_out)``; the loss is a scalar, or ``(R,)`` with a run axis.
    """
    f, cache = head_forward(M, N, X)
    loss, df = squared_loss(f, Y)
    dM, dN = head_backward(cache, df)
    return loss, dM, dN


def full_products(params: dict):
    r""":math:`M = W_K W_Q^\top` ``([R,] d, d)`` and :math:`N = W_V W_O^\top` ``([R,] d, d_out)``."""
    return (params["W_K"] @ params["W_Q"].swapaxes(-1, -2),
            params["W_V"] @ params["W_O"].swapaxes(-1, -2))


def full_loss_and_grads(params: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss and gradients of the full head :math:`f = \mathrm{smax}(X W_K W_Q^\top X^\top) X W_V W_O^\top`
    (Sec. 5, the non-diagonal head), by the chain rule through the products:

    .. math::
        \nabla W_K = \tfrac{\partial L}{\partial M} W_Q,\quad
        \nabla W_Q = \big(\tfrac{\partial L}{\partial M}\big)^\top W_K,\quad
        \nabla W_V = \tfrac{\partial L}{\partial N} W_O,\quad
        \nabla W_O = \big(\tfrac{\partial L}{\partial N}\big)^\top W_V .

    Parameters
    ----------
    params : ``"W_K", "W_Q", "W_V"`` ``([R,] d, d_h)`` and ``"W_O"`` ``([R,] d_out, d_h)``.
    X : ``(n_seq, n, d)``.  Y : ``(n_seq, n, d_out)``.

    Returns
    -------
    loss : scalar or ``(R,)``;  grads : dict with the keys and shapes of ``params``.
    """
    W_K, W_Q, W_V, W_O = (params[k] for k in ("W_K", "W_Q", "W_V", "W_O"))
    M, N = full_products(params)
    loss, dM, dN = products_loss_and_grads(M, N, X, Y)
    grads = {"W_K": dM @ W_Q, "W_Q": dM.swapaxes(-1, -2) @ W_K,
             "W_V": dN @ W_O, "W_O": dN.swapaxes(-1, -2) @ W_V}
    return loss, grads


# --------------------------------------------------------------------------------------------
# The diagonal head: M = diag(a), N = diag(b)
# --------------------------------------------------------------------------------------------
def diag_products(params: dict):
    r"""The products :math:`a = w_K \odot w_Q` and :math:`b = w_V \odot w_O` (shape of the inputs)."""
    return params["w_K"] * params["w_Q"], params["w_V"] * params["w_O"]


def ab_forward(a: np.ndarray, b: np.ndarray, X: np.ndarray):
    r"""Diagonal head (Sec. 3-4):
    :math:`f(X) = \mathrm{smax}(X\,\mathrm{diag}(a)\,X^\top)\, X\,\mathrm{diag}(b)`.

    .. math:: Z_{ik} = \sum_j a_j X_{ij} X_{kj},\qquad S = \mathrm{smax}(Z),\qquad f_{ij} = b_j (S X)_{ij} .

    ``a, b`` are ``([R,] d)``, ``X`` ``(n_seq, n, d)``; returns ``f`` ``([R,] n_seq, n, d)`` and
    the cache ``(X, b, S, SX)`` for :func:`ab_backward`.
    """
    Z = (X * a[..., None, None, :]) @ X.swapaxes(-1, -2)    # X diag(a) X^T = sum_j a_j X_ij X_kj
    S = softmax(Z, axis=-1)                             # over the key positions k
    SX = S @ X                                          # ([R,] n_seq, n, d)
    f = b[..., None, None, :] * SX                      # f_ij = b_j (S X)_ij
    return f, (X, b, S, SX)


def ab_backward(cache, df: np.ndarray):
    r"""Gradients of the diagonal head in the product space, from the cotangent :math:`\bar f`:

    .. math::
        \frac{\partial L}{\partial b_j} = \sum_{s,i} \bar f_{ij} (S X)_{ij},\quad
        G_S = \bar f\,(X \mathrm{diag}\, b)^\top,\quad
        G_Z = S \odot \big(G_S - \mathrm{rowsum}(G_S \odot S)\big),\quad
        \frac{\partial L}{\partial a_j} = \sum_{s,i,k} G_Z[i,k]\, X_{ij} X_{kj} .

    Returns ``(ga, gb)``, each ``([R,] d)``.
    """
    X, b, S, SX = cache
    gb = np.einsum("...sij,...sij->...j", df, SX)
    G_S = (df * b[..., None, None, :]) @ X.swapaxes(-1, -2)     # df (X diag b)^T
    G_Z = softmax_vjp(S, G_S, axis=-1)
    ga = np.einsum("...sik,skj,sij->...j", G_Z, X, X, optimize=True)  # sum G_Z[i,k] X_ij X_kj
    return ga, gb


def ab_loss_and_grads(a: np.ndarray, b: np.ndarray, X: np.ndarray, Y: np.ndarray):
    r"""Loss :math:`\tilde L(a, b) = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2` of the
    diagonal head and its gradients :math:`(\partial_a \tilde L, \partial_b \tilde L)`.

    ``a, b`` ``([R,] d)``; returns ``(loss, ga, gb)``, the loss a scalar or ``(R,)``.
    """
    f, cache = ab_forward(a, b, X)
    loss, df = squared_loss(f, Y)
    ga, gb = ab_backward(cache, df)
    return loss, ga, gb


def loss_and_grads_ab(w: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss :math:`\tilde L(w)` and its gradient in the product space :math:`w = (a, b)`, the
    function the limiting algorithm (Sec. 4, Algorithm 1) works with.

    ``w`` has keys ``"a", "b"``, each ``([R,] d)``; returns ``(loss, {"a": ga, "b": gb})``.
    """
    loss, ga, gb = ab_loss_and_grads(w["a"], w["b"], X, Y)
    return loss, {"a": ga, "b": gb}


def loss_and_grads(params: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss and gradients of the diagonal head in its factors :math:`\theta = (u, v)`,
    :math:`u = (w_K, w_V)`, :math:`v = (w_Q, w_O)` (Sec. 3-4), by the chain rule through
    :math:`a = w_K \odot w_Q`, :math:`b = w_V \odot w_O`:

    .. math::
        \nabla w_K = w_Q \odot \partial_a \tilde L,\quad \nabla w_Q = w_K \odot \partial_a \tilde L,\quad
        \nabla w_V = w_O \odot \partial_b \tilde L,\quad \nabla w_O = w_V \odot \partial_b \tilde L .

    Parameters
    ----------
    params : keys ``"w_K", "w_Q", "w_V", "w_O"``, each ``([R,] d)``.
    X, Y : ``(n_seq, n, d)`` inputs and targets.

    Returns
    -------
    loss : scalar or ``(R,)``;  grads : dict with the keys and shapes of ``params``.
    """
    a, b = diag_products(params)
    loss, ga, gb = ab_loss_and_grads(a, b, X, Y)
    grads = {"w_K": params["w_Q"] * ga, "w_Q": params["w_K"] * ga,
             "w_V": params["w_O"] * gb, "w_O": params["w_V"] * gb}
    return loss, grads
