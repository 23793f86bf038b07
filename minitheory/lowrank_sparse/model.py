r"""One-layer softmax transformer with a ReLU output layer and hinge loss (Li, Wang, Zhang, Liu,
Chen 2024, Sec. 2; the model of Li, Wang, Liu, Chen, ICLR 2023).

.. math::
    \beta_{s,l} = \mathrm{softmax}_s\big(x_s^\top W_K^\top W_Q x_l\big), \qquad
    h_l = \sum_s \beta_{s,l} W_V x_s, \qquad
    F(X) = \frac1L \sum_{l=1}^L a_l^\top \mathrm{ReLU}(W_O h_l),

every token a query, **no** :math:`1/\sqrt d`. Loss: hinge :math:`\max\{0, 1 - yF(X)\}`
averaged over the batch. Trained: :math:`W_Q, W_K, W_V, W_O`; :math:`a` is fixed.

Shapes (a leading run axis ``R`` is optional everywhere and then also leads ``X`` and ``y``):

* ``X`` ``(B, L, d)``, rows are tokens; ``y`` ``(B,)`` in {-1, +1};
* ``"W_Q"``, ``"W_K"`` ``(m_b, d)``; ``"W_V"`` ``(m_a, d)``; ``"W_O"`` ``(m, m_a)``, rows = neurons;
  ``"a"`` ``(L, m)``, one output vector per query position.

Kinks: ReLU at :math:`p = 0` and hinge at :math:`yF = 1` take the subgradient 0.
"""
from __future__ import annotations

import numpy as np

from ..primitives import softmax, softmax_vjp
from ..validation import check_array

TRAINED = ("W_Q", "W_K", "W_V", "W_O")
KEYS = TRAINED + ("a",)


def forward(params: dict, X: np.ndarray):
    r"""Network output :math:`F(X)` for every sample; run axis required (use :func:`output`).

    ``params`` arrays ``(R, ...)``, ``X`` ``(R, B, L, d)``. Returns ``F (R, B)`` and the cache, a
    dict with the attention ``"A"`` ``(R, B, L, L)`` and the pre-activations ``"P"`` ``(R, B, L, m)``
    among its entries.
    The three projections are one product with the stacked :math:`[W_Q; W_K; W_V]`, and every
    product with a weight matrix runs over all ``B L`` tokens at once.
    """
    W_Q, W_K, W_V, W_O, a = (params[k] for k in KEYS)
    R, B, L, d = X.shape
    m_b, m = W_Q.shape[-2], W_O.shape[-2]
    W = np.concatenate([W_Q, W_K, W_V], axis=-2)            # (R, 2 m_b + m_a, d)
    QKV = (X.reshape(R, B * L, d) @ W.swapaxes(-1, -2)).reshape(R, B, L, -1)
    Qx, Kx, Vx = QKV[..., :m_b], QKV[..., m_b:2 * m_b], QKV[..., 2 * m_b:]  # (R, B, L, m_*)
    A = softmax(Qx @ Kx.swapaxes(-1, -2))                   # (R, B, L, L); A[.., l, s] = beta_{s,l}
    H = A @ Vx                                              # (R, B, L, m_a)  h_l
    P = H.reshape(R, B * L, -1) @ W_O.swapaxes(-1, -2)      # (R, B L, m)     p_l = W_O h_l
    F = (np.maximum(P, 0.0).reshape(R, B, L * m) @ a.reshape(R, L * m, 1))[..., 0] / L
    return F, {"X": X, "QKV": QKV, "A": A, "H": H, "P": P.reshape(R, B, L, m)}


def backward(params: dict, cache, dF: np.ndarray) -> dict:
    r"""Gradients of the four trained matrices from the cotangent ``dF`` ``(R, B)`` of :math:`F`.

    .. math::
        \bar Z = \tfrac{\bar F}{L} a,\ \ \bar P = \bar Z \odot 1[P > 0],\ \
        \nabla W_O = \textstyle\sum_{b,l} \bar P_{bl} h_{bl}^\top,\ \ \bar H = \bar P W_O,\\
        \bar A = \bar H V_x^\top,\ \ \bar V_x = A^\top \bar H,\ \
        \bar S = A \odot (\bar A - \mathrm{rowsum}(\bar A \odot A)),\ \
        \bar Q_x = \bar S K_x,\ \ \bar K_x = \bar S^\top Q_x,

    and :math:`\nabla W_\star = \sum_{b,l} \bar{(W_\star x)}_{bl}\, x_{bl}^\top` for
    :math:`\star \in \{Q, K, V\}` (one product for the three). Returns
    ``{"W_Q", "W_K", "W_V", "W_O"}``, each ``(R, ., .)``.
    """
    X, QKV, A, H, P = (cache[k] for k in ("X", "QKV", "A", "H", "P"))
    W_O, a = params["W_O"], params["a"]
    R, B, L, d = X.shape
    m_b, m = params["W_Q"].shape[-2], W_O.shape[-2]
    Qx, Kx, Vx = QKV[..., :m_b], QKV[..., m_b:2 * m_b], QKV[..., 2 * m_b:]
    dP = (dF / L)[:, :, None] * a.reshape(R, 1, L * m)     # (R, B, L m)
    dP *= P.reshape(R, B, L * m) > 0
    dP = dP.reshape(R, B * L, m)
    dH = (dP @ W_O).reshape(R, B, L, -1)                    # (R, B, L, m_a)
    dS = softmax_vjp(A, dH @ Vx.swapaxes(-1, -2))           # (R, B, L, L)
    dQKV = np.empty(QKV.shape)                              # [dQx, dKx, dVx]
    np.matmul(dS, Kx, out=dQKV[..., :m_b])
    np.matmul(dS.swapaxes(-1, -2), Qx, out=dQKV[..., m_b:2 * m_b])
    np.matmul(A.swapaxes(-1, -2), dH, out=dQKV[..., 2 * m_b:])
    dW = dQKV.reshape(R, B * L, -1).swapaxes(-1, -2) @ X.reshape(R, B * L, d)   # sum over (b, l)
    return {"W_Q": dW[:, :m_b], "W_K": dW[:, m_b:2 * m_b], "W_V": dW[:, 2 * m_b:],
            "W_O": dP.swapaxes(-1, -2) @ H.reshape(R, B * L, -1)}


def loss_and_grads_unchecked(params, X, y):
    r"""Unchecked :func:`loss_and_grads` on the run axis (inputs already validated).

    :math:`L = \frac1B\sum_b \max\{0, 1 - y_b F(X_b)\}` per run: ``X`` ``(R, B, L, d)``,
    ``y`` ``(R, B)``; returns loss ``(R,)`` and grads with the shapes of ``params``.
    """
    F, cache = forward(params, X)
    margin = y * F
    B = X.shape[1]
    loss = np.maximum(0.0, 1.0 - margin).sum(-1) / B
    dF = np.where(margin < 1.0, -y, 0.0) / B                # hinge subgradient, 0 at the kink
    return loss, backward(params, cache, dF)


def loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray):
    r"""Mean hinge loss :math:`\frac1B\sum_b \max\{0, 1 - y_b F(X_b)\}` and its gradients.

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
    loss, grads = loss_and_grads_unchecked(runs, X, y)
    if squeeze:
        return float(loss[0]), {k: v[0] for k, v in grads.items()}
    return loss, grads


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


def check_inputs(params, X, y):
    """Validate and add the run axis; returns ``(params, X, y, squeeze)``."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {list(KEYS)}, got {type(params).__name__}")
    missing = [k for k in KEYS if k not in params]
    if missing:
        raise ValueError(f"params is missing keys {missing}")
    p = {k: check_array(f"params[{k!r}]", params[k], ndim=(2, 3)) for k in KEYS}
    squeeze = p["W_Q"].ndim == 2
    if squeeze:
        p = {k: v[None] for k, v in p.items()}
    R, m_b, d = p["W_Q"].shape
    m_a = p["W_V"].shape[-2]
    m = p["W_O"].shape[-2]
    want = {"W_Q": (R, m_b, d), "W_K": (R, m_b, d), "W_V": (R, m_a, d), "W_O": (R, m, m_a)}
    for k, shp in want.items():
        if p[k].shape != shp:
            raise ValueError(f"params[{k!r}] must have shape {shp[1:] if squeeze else shp} "
                             f"(from W_Q {p['W_Q'].shape[-2:]} and W_V), got {params[k].shape}")
    X = check_array("X", X, ndim=3 if squeeze else 4)
    X = X[None] if squeeze else X
    if X.shape[0] != R or X.shape[-1] != d or X.shape[1] == 0 or X.shape[2] == 0:
        want = f"(B, L, {d})" if squeeze else f"({R}, B, L, {d})"
        raise ValueError(f"X must have shape {want} with B, L >= 1, got "
                         f"{X.shape[1:] if squeeze else X.shape}")
    L = X.shape[2]
    if p["a"].shape != (R, L, m):
        raise ValueError(f"params['a'] must have shape (L, m) = ({L}, {m}) per run, "
                         f"got {np.shape(params['a'])}")
    if y is not None:
        y = check_array("y", y, shape=X.shape[1:2] if squeeze else X.shape[:2])
        y = y[None] if squeeze else y
        if not np.all(np.abs(y) == 1):
            raise ValueError("y must contain only -1 and +1")
    return p, X, y, squeeze
