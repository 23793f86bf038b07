r"""One-layer softmax transformer with a ReLU output layer and hinge loss: the fast twin.

Li, Wang, Zhang, Liu, Chen, arXiv:2406.17167v1, Sec. 2 (the network of Li, Wang, Liu, Chen,
ICLR 2023, arXiv:2302.06015):

.. math::
    \beta_{s,l} = \mathrm{softmax}_s\big(x_s^\top W_K^\top W_Q x_l\big), \qquad
    h_l = \sum_s \beta_{s,l} W_V x_s, \qquad
    F(X) = \frac1L \sum_{l=1}^L a_l^\top \mathrm{ReLU}(W_O h_l),

every token a query, **no** :math:`1/\sqrt d`. Loss: hinge :math:`\max\{0, 1 - yF(X)\}`
averaged over the batch. Trained: :math:`W_Q, W_K, W_V, W_O`; :math:`a` is fixed.

Read :mod:`minitheory.lowrank_sparse.reference` first: it writes these equations term by term.
This module computes the same numbers (equal to ~1e-12, tested) with a faster layout: one product
with the stacked :math:`[W_Q; W_K; W_V]`, every product with a weight matrix over all ``B L``
tokens at once as one BLAS call, the readout as one matrix-vector product, ``out=`` buffers
in the backward pass, and the softmax and its VJP in place with their row sums as products
with a ones vector (:func:`~minitheory.primitives.fast_softmax`,
:func:`~minitheory.primitives.fast_softmax_vjp`; together 336 -> 292 us per checked call at
B=16, L=20, d=20, m=64, best of 7 on a quiet 2-core machine). The training loop
(:mod:`.training`) and the analysis call this twin.

Shapes (a leading run axis ``R`` is optional in the checked functions and then also leads ``X``
and ``y``; :func:`forward`, :func:`backward` and :func:`loss_and_grads_unchecked` require it):

* ``X`` ``(B, L, d)``, rows are tokens; ``y`` ``(B,)`` in {-1, +1};
* ``"W_Q"``, ``"W_K"`` ``(m_b, d)``; ``"W_V"`` ``(m_a, d)``; ``"W_O"`` ``(m, m_a)``, rows = neurons;
  ``"a"`` ``(L, m)``, one output vector per query position.

Kinks: ReLU at :math:`p = 0` and hinge at :math:`yF = 1` take the subgradient 0. Input checks
live in :mod:`.checks`.
"""
from __future__ import annotations

import numpy as np

from ..primitives import fast_softmax, fast_softmax_vjp
from .checks import KEYS, TRAINED, check_inputs, drop_run_axis

__all__ = ["KEYS", "TRAINED", "forward", "backward", "loss_and_grads_unchecked",
           "loss_and_grads", "output", "relu_pattern", "check_inputs"]


def forward(params: dict, X: np.ndarray):
    r"""Network output :math:`F(X)` for every sample; run axis required (use :func:`output`).

    Fast twin of :func:`.reference.forward` (same ``F``; the cache holds the stacked
    projections). Measured gain of the forward pass alone over its reference twin at B=16,
    L=20, d=20, m=64: 2.5-4.0x with one run, 2.3-4.8x with R=4 (four timings each, shared
    2-core machine).

    ``params`` arrays ``(R, ...)``, ``X`` ``(R, B, L, d)``. Returns ``F (R, B)`` and the cache, a
    dict with the attention ``"A"`` ``(R, B, L, L)`` (``A[.., b, l, s]`` :math:`= \beta_{s,l}`) and
    the pre-activations ``"P"`` ``(R, B, L, m)`` (rows :math:`p_l = W_O h_l`) among its entries.
    Trick: the three projections are one product with the stacked :math:`[W_Q; W_K; W_V]`, and
    every product with a weight matrix runs over all ``B L`` tokens at once.
    """
    W_Q, W_K, W_V, W_O, a = (params[k] for k in KEYS)
    n_runs, B, L, d = X.shape
    m_b, m = W_Q.shape[-2], W_O.shape[-2]
    W_QKV = np.concatenate([W_Q, W_K, W_V], axis=-2)        # (R, 2 m_b + m_a, d)
    QKV = (X.reshape(n_runs, B * L, d) @ W_QKV.swapaxes(-1, -2)).reshape(n_runs, B, L, -1)
    Qx, Kx, Vx = QKV[..., :m_b], QKV[..., m_b:2 * m_b], QKV[..., 2 * m_b:]  # (R, B, L, m_*)
    logits = Qx @ Kx.swapaxes(-1, -2)                       # (R, B, L, L)
    A = fast_softmax(logits, out=logits)                    # A[.., l, s] = beta_{s,l}
    H = A @ Vx                                              # (R, B, L, m_a)  h_l
    P = H.reshape(n_runs, B * L, -1) @ W_O.swapaxes(-1, -2)     # (R, B L, m)  p_l = W_O h_l
    F = (np.maximum(P, 0.0).reshape(n_runs, B, L * m) @ a.reshape(n_runs, L * m, 1))[..., 0] / L
    return F, {"X": X, "QKV": QKV, "A": A, "H": H, "P": P.reshape(n_runs, B, L, m)}


def backward(params: dict, cache, dF: np.ndarray) -> dict:
    r"""Gradients of the four trained matrices from the cotangent ``dF`` ``(R, B)`` of :math:`F`.

    Fast twin of :func:`.reference.backward`, which writes the chain rule term by term; the
    measured gain of the backward pass alone at B=16, L=20, d=20, m=64: 4.6-5.1x with one run,
    5.7-7.9x with R=4 (four timings each, shared 2-core machine).

    .. math::
        \bar p_l = \tfrac{\bar F}{L} a_l \odot 1[p_l > 0],\ \
        \nabla W_O = \textstyle\sum_{b,l} \bar p_l h_l^\top,\ \ \bar H = \bar P W_O,\ \
        \bar A = \bar H V_x^\top,\ \ \bar V_x = A^\top \bar H,\\
        \overline{\mathrm{lg}} = A \odot (\bar A - \mathrm{rowsum}(\bar A \odot A)),\ \
        \bar Q_x = \overline{\mathrm{lg}}\, K_x,\ \ \bar K_x = \overline{\mathrm{lg}}^\top Q_x,

    and :math:`\nabla W_\star = \sum_{b,l} \overline{(W_\star x)}_{bl}\, x_{bl}^\top` for
    :math:`\star \in \{Q, K, V\}` (``lg`` = the logits :math:`x_s^\top W_K^\top W_Q x_l`). Trick:
    :math:`[\bar Q_x, \bar K_x, \bar V_x]` are written into one buffer (``out=``) and the three
    weight gradients are one product with it. Returns ``{"W_Q", "W_K", "W_V", "W_O"}``, each
    ``(R, ., .)``.
    """
    X, QKV, A, H, P = (cache[k] for k in ("X", "QKV", "A", "H", "P"))
    W_O, a = params["W_O"], params["a"]
    n_runs, B, L, d = X.shape
    m_b, m = params["W_Q"].shape[-2], W_O.shape[-2]
    Qx, Kx, Vx = QKV[..., :m_b], QKV[..., m_b:2 * m_b], QKV[..., 2 * m_b:]
    dP = ((dF / L)[:, :, None] * a.reshape(n_runs, 1, L * m)
          * (P.reshape(n_runs, B, L * m) > 0)).reshape(n_runs, B * L, m)   # (R, B L, m)
    dH = (dP @ W_O).reshape(n_runs, B, L, -1)               # (R, B, L, m_a)
    dA = dH @ Vx.swapaxes(-1, -2)                           # (R, B, L, L)
    dlogits = fast_softmax_vjp(A, dA, out=dA)               # the softmax VJP, in place
    dQKV = np.empty(QKV.shape)                              # [dQx, dKx, dVx]
    np.matmul(dlogits, Kx, out=dQKV[..., :m_b])
    np.matmul(dlogits.swapaxes(-1, -2), Qx, out=dQKV[..., m_b:2 * m_b])
    np.matmul(A.swapaxes(-1, -2), dH, out=dQKV[..., 2 * m_b:])
    dW_QKV = dQKV.reshape(n_runs, B * L, -1).swapaxes(-1, -2) @ X.reshape(n_runs, B * L, d)
    return {"W_Q": dW_QKV[:, :m_b], "W_K": dW_QKV[:, m_b:2 * m_b], "W_V": dW_QKV[:, 2 * m_b:],
            "W_O": dP.swapaxes(-1, -2) @ H.reshape(n_runs, B * L, -1)}


def loss_and_grads_unchecked(params, X, y):
    r"""Unchecked :func:`loss_and_grads` on the run axis (inputs already validated).

    Fast twin of :func:`.reference.loss_and_grads_unchecked`; measured gain at B=16, L=20, d=20,
    m=64: 4.4x with one run, 3.3-5.3x with R=4 (four timings each, shared 2-core machine; the
    reference's ``einsum`` contractions do not reach BLAS). The training loop calls this function.

    :math:`\bar\ell = \frac1B\sum_b \max\{0, 1 - y_b F(X_b)\}` per run: ``X`` ``(R, B, L, d)``,
    ``y`` ``(R, B)``; returns loss ``(R,)`` and grads with the shapes of ``params``.
    """
    F, cache = forward(params, X)
    margin = y * F
    B = X.shape[1]
    loss = np.maximum(0.0, 1.0 - margin).sum(-1) / B
    dF = np.where(margin < 1.0, -y, 0.0) / B                # hinge subgradient, 0 at the kink
    return loss, backward(params, cache, dF)


def loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray):
    r"""Mean hinge loss :math:`\frac1B\sum_b \max\{0, 1 - y_b F(X_b)\}` and its gradients
    (arXiv:2406.17167v1, Sec. 2), inputs checked; the reference twin is
    :func:`.reference.loss_and_grads`.

    Parameters
    ----------
    params : keys ``"W_Q", "W_K"`` ``(m_b, d)``, ``"W_V"`` ``(m_a, d)``, ``"W_O"`` ``(m, m_a)``,
        ``"a"`` ``(L, m)``; each with an optional leading run axis ``R``.
    X : ``(B, L, d)`` (``(R, B, L, d)`` with a run axis).  y : ``(B,)`` (``(R, B)``) in {-1, +1}.

    Returns
    -------
    loss : float, or ``(R,)``.
    grads : the four trained matrices; ``"a"`` is fixed and gets no gradient.
    """
    runs, X, y, squeeze = check_inputs(params, X, y)
    return drop_run_axis(loss_and_grads_unchecked(runs, X, y), squeeze)


def output(params: dict, X: np.ndarray) -> np.ndarray:
    """:math:`F(X)` ``(B,)`` (or ``(R, B)`` with a run axis), inputs checked."""
    runs, X, _, squeeze = check_inputs(params, X, None)
    F, _ = forward(runs, X)
    return F[0] if squeeze else F


def relu_pattern(params: dict, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kink pattern ``(1[P > 0], 1[yF < 1])`` flattened: where the model is differentiable,
    a perturbation that keeps it unchanged sees a smooth function (for gradient checks)."""
    runs, X, y, _ = check_inputs(params, X, y)
    F, cache = forward(runs, X)
    return np.concatenate([(cache["P"] > 0).ravel(), (y * F < 1).ravel()])
