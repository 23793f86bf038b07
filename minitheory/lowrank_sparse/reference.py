r"""The one-layer transformer written as the paper writes it: the plain reference.

H. Li, M. Wang, S. Zhang, S. Liu, P.-Y. Chen, "Learning on Transformers is Provable Low-Rank and
Sparse: A One-layer Analysis", arXiv:2406.17167v1, Sec. 2; the network is the
one of H. Li, M. Wang, S. Liu, P.-Y. Chen, ICLR 2023 (arXiv:2302.06015). For one sequence
:math:`X = [x_1, \dots, x_L]` (here the rows of an ``(L, d)`` array):

.. math::
    \beta_{s,l} = \frac{\exp(x_s^\top W_K^\top W_Q x_l)}{\sum_{s'=1}^L \exp(x_{s'}^\top W_K^\top W_Q x_l)},
    \qquad h_l = \sum_{s=1}^L \beta_{s,l}\, W_V x_s, \qquad p_l = W_O h_l,

.. math::
    F(X) = \frac1L \sum_{l=1}^L a_l^\top \mathrm{ReLU}(p_l), \qquad
    \bar\ell = \frac1B \sum_{b=1}^B \max\{0,\ 1 - y_b F(X_b)\}.

Every token is a query; the softmax runs over the keys :math:`s`; there is **no**
:math:`1/\sqrt d`. Trained: :math:`W_Q, W_K, W_V, W_O`; :math:`a` is fixed. Kinks (ReLU at
:math:`p = 0`, hinge at :math:`yF = 1`) take the subgradient 0.

Index letters in every ``einsum``: ``b`` sample, ``l`` query position, ``s`` key position,
``i``/``j`` features. The leading ``...`` is the optional run axis ``R`` (several independent
models side by side), so these functions take arrays with or without it. Shapes per run:
``X`` ``(B, L, d)``, ``y`` ``(B,)``; ``"W_Q"``, ``"W_K"`` ``(m_b, d)``; ``"W_V"`` ``(m_a, d)``;
``"W_O"`` ``(m, m_a)``; ``"a"`` ``(L, m)``, one output vector :math:`a_l` per query position.

The fast twin with the same contract is :mod:`minitheory.lowrank_sparse.model`.
"""
from __future__ import annotations

import numpy as np

from .checks import KEYS, TRAINED, check_inputs, drop_run_axis

__all__ = ["KEYS", "TRAINED", "forward", "backward", "loss_and_grads_unchecked",
           "loss_and_grads", "output", "relu_pattern"]


def forward(params: dict, X: np.ndarray):
    r"""The network output :math:`F(X_b)` for every sample (arXiv:2406.17167v1, Sec. 2).

    ``X`` ``(..., B, L, d)``; returns ``F`` ``(..., B)`` and the cache: ``"X"``, the projections
    ``"Qx"``, ``"Kx"`` (rows :math:`W_Q x_l`, :math:`W_K x_s`), ``"Vx"`` (rows :math:`W_V x_s`),
    the attention ``"A"`` ``(..., B, L, L)`` with ``A[..., b, l, s]`` :math:`= \beta_{s,l}`,
    ``"H"`` (rows :math:`h_l`) and the pre-activations ``"P"`` ``(..., B, L, m)`` (rows :math:`p_l`).
    """
    W_Q, W_K, W_V, W_O, a = (params[k] for k in KEYS)
    L = X.shape[-2]
    Qx = np.einsum("...ij,...blj->...bli", W_Q, X)          # W_Q x_l
    Kx = np.einsum("...ij,...bsj->...bsi", W_K, X)          # W_K x_s
    Vx = np.einsum("...ij,...bsj->...bsi", W_V, X)          # W_V x_s
    logits = np.einsum("...bsi,...bli->...bls", Kx, Qx)     # [b,l,s]: x_s^T W_K^T W_Q x_l
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))  # softmax over the keys s (row max
    A = e / e.sum(axis=-1, keepdims=True)                   # subtracted): A[b,l,s] = beta_{s,l}
    H = np.einsum("...bls,...bsi->...bli", A, Vx)           # h_l = sum_s beta_{s,l} W_V x_s
    P = np.einsum("...ij,...blj->...bli", W_O, H)           # p_l = W_O h_l
    F = np.einsum("...li,...bli->...b", a, np.maximum(P, 0.0)) / L   # (1/L) sum_l a_l^T ReLU(p_l)
    return F, {"X": X, "Qx": Qx, "Kx": Kx, "Vx": Vx, "A": A, "H": H, "P": P}


def backward(params: dict, cache: dict, dF: np.ndarray) -> dict:
    r"""Gradients of the four trained matrices from the cotangent ``dF`` ``(..., B)`` of :math:`F`.

    Each line undoes one line of :func:`forward`, last first; ``dP`` is the cotangent
    :math:`\bar p_l` of ``P``, ``dA`` the cotangent :math:`\bar\beta` of ``A``, ``dlogits`` the
    cotangent :math:`\overline{\mathrm{lg}}_{l,s}` of the logit :math:`x_s^\top W_K^\top W_Q x_l`:

    .. math::
        \bar p_l = \tfrac{\bar F}{L}\, a_l \odot 1[p_l > 0], \quad
        \nabla W_O = \textstyle\sum_{b,l} \bar p_l h_l^\top, \quad \bar h_l = W_O^\top \bar p_l,

    .. math::
        \bar\beta_{s,l} = \bar h_l^\top W_V x_s, \quad
        \overline{W_V x_s} = \textstyle\sum_l \beta_{s,l} \bar h_l, \quad
        \overline{\mathrm{lg}}_{l,s} = \beta_{s,l}\big(\bar\beta_{s,l} - \sum_{s'} \beta_{s',l}\bar\beta_{s',l}\big),

    .. math::
        \overline{W_Q x_l} = \textstyle\sum_s \overline{\mathrm{lg}}_{l,s} W_K x_s, \quad
        \overline{W_K x_s} = \textstyle\sum_l \overline{\mathrm{lg}}_{l,s} W_Q x_l, \quad
        \nabla W_\star = \textstyle\sum_{b,l} \overline{W_\star x_l}\, x_l^\top
        \ (\star = Q, K, V).

    Returns ``{"W_Q", "W_K", "W_V", "W_O"}`` with the shapes of ``params``; ``"a"`` is fixed.
    """
    X, Qx, Kx, Vx, A, H, P = (cache[k] for k in ("X", "Qx", "Kx", "Vx", "A", "H", "P"))
    W_O, a = params["W_O"], params["a"]
    L = X.shape[-2]
    dP = np.einsum("...b,...li->...bli", dF, a) / L * (P > 0)   # F = (1/L) sum_l a_l^T ReLU(p_l)
    grad_W_O = np.einsum("...bli,...blj->...ij", dP, H)     # p_l = W_O h_l
    dH = np.einsum("...bli,...ij->...blj", dP, W_O)
    dA = np.einsum("...bli,...bsi->...bls", dH, Vx)         # h_l = sum_s beta_{s,l} W_V x_s
    dVx = np.einsum("...bls,...bli->...bsi", A, dH)
    dlogits = A * (dA - np.sum(dA * A, axis=-1, keepdims=True))   # softmax over s (its VJP)
    dQx = np.einsum("...bls,...bsi->...bli", dlogits, Kx)   # logits = (W_K x_s)^T (W_Q x_l)
    dKx = np.einsum("...bls,...bli->...bsi", dlogits, Qx)
    return {"W_Q": np.einsum("...bli,...blj->...ij", dQx, X),
            "W_K": np.einsum("...bsi,...bsj->...ij", dKx, X),
            "W_V": np.einsum("...bsi,...bsj->...ij", dVx, X),
            "W_O": grad_W_O}


def loss_and_grads_unchecked(params: dict, X: np.ndarray, y: np.ndarray):
    r"""Mean hinge loss :math:`\frac1B \sum_b \max\{0, 1 - y_b F(X_b)\}` and its gradients,
    inputs already validated (arXiv:2406.17167v1, Sec. 2).

    ``X`` ``(..., B, L, d)``, ``y`` ``(..., B)`` in {-1, +1}; returns the loss ``(...)`` and the
    gradients of :func:`backward`. The hinge's derivative in :math:`F_b` is :math:`-y_b/B` where
    :math:`y_b F_b < 1` and 0 elsewhere (0 at the kink).
    """
    F, cache = forward(params, X)
    B = X.shape[-3]
    loss = np.sum(np.maximum(0.0, 1.0 - y * F), axis=-1) / B
    dF = np.where(y * F < 1.0, -y, 0.0) / B
    return loss, backward(params, cache, dF)


def loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray):
    r"""Checked :func:`loss_and_grads_unchecked`: :math:`\frac1B\sum_b \max\{0, 1 - y_b F(X_b)\}`
    and its gradients, with the contract of :func:`minitheory.lowrank_sparse.model.loss_and_grads`
    (loss a float without a run axis)."""
    runs, X, y, squeeze = check_inputs(params, X, y)
    return drop_run_axis(loss_and_grads_unchecked(runs, X, y), squeeze)


def output(params: dict, X: np.ndarray) -> np.ndarray:
    """:math:`F(X)` ``(B,)`` (``(R, B)`` with a run axis), inputs checked."""
    runs, X, _, squeeze = check_inputs(params, X, None)
    F = forward(runs, X)[0]
    return F[0] if squeeze else F


def relu_pattern(params: dict, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kink pattern ``(1[P > 0], 1[yF < 1])`` flattened, inputs checked: a perturbation that
    keeps it unchanged sees a smooth function (for gradient checks)."""
    runs, X, y, _ = check_inputs(params, X, y)
    F, cache = forward(runs, X)
    return np.concatenate([(cache["P"] > 0).ravel(), (y * F < 1).ravel()])
