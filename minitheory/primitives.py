r"""Primitives shared by all three papers, each forward next to its derivative.

Only what more than one model needs lives here: the softmax over one axis and its
vector-Jacobian product,

.. math::
    s = \mathrm{softmax}(z),\quad s_i = \frac{e^{z_i}}{\sum_k e^{z_k}};\qquad
    \bar z = s \odot (\bar s - \langle \bar s, s\rangle \mathbf 1).

Every function is pure and works on any leading batch axes.
"""
from __future__ import annotations

import numpy as np


def shifted_exp(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""The softmax numerator :math:`e_i = \exp(z_i - c)`, with ``c`` constant along the last axis.

    ``c`` is 0 when every ``|z| < 700 - log n``: then no exponential (nor a row sum of ``n`` of
    them) can overflow or underflow to zero, and one global check replaces a per-row maximum
    (short rows make that reduction slow in NumPy). Otherwise ``c`` is the row maximum, so every
    exponent is ``<= 0`` and logits of ``+-1e4`` stay finite. Either way
    ``e / e.sum(-1) = softmax(z)`` (softmax is invariant to adding a constant to a row), and the
    same input always takes the same path.

    Models that only need ``softmax(z) @ V`` use it to normalize the small product instead of
    the large ``e``: ``(e @ [V, 1])`` gives ``e V`` and the row sums in one product.

    Parameters
    ----------
    z : array ``(..., n)``; rows along the last axis.
    out : optional array of ``z``'s shape (may be ``z`` itself) to write the result into.

    Returns
    -------
    e : array, same shape as ``z``; positive, at most ``e^700`` per entry.
    """
    if z.size and max(-np.min(z), np.max(z)) < _SAFE - np.log(z.shape[-1]):
        return np.exp(z, out=out)
    e = np.subtract(z, _rowmax(z)[..., None], out=out)
    return np.exp(e, out=e)


def softmax(z: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    r"""Numerically stable softmax along ``axis``.

    .. math:: s_i = \frac{\exp(z_i - c)}{\sum_k \exp(z_k - c)},

    with the shift ``c`` of :func:`shifted_exp` (0, or the row maximum when an exponential could
    overflow or vanish).

    Parameters
    ----------
    z : array, any shape ``(..., n, ...)``
    axis : the axis that is normalized.
    out : optional array of ``z``'s shape (may be ``z`` itself) to write the result into.

    Returns
    -------
    s : array, same shape as ``z``; entries in ``[0, 1]``, summing to 1 along ``axis``.
    """
    last = axis in (-1, z.ndim - 1)
    if not last:                                 # a view; the work is along the last axis
        z, out = np.moveaxis(z, axis, -1), None if out is None else np.moveaxis(out, axis, -1)
    e = shifted_exp(z, out=out)
    e *= (1.0 / (e @ np.ones(e.shape[-1])))[..., None]    # row sums as a product: faster than
    return e if last else np.moveaxis(e, -1, axis)        # a reduction over short rows


#: |logit| below which exp neither overflows (e^709.8 is the largest float64) nor underflows to 0
_SAFE = 700.0


def _rowmax(z: np.ndarray) -> np.ndarray:
    """Maximum over the last axis. NumPy's reduction is slow on short rows (the attention rows
    here have 8-50 entries); a running maximum over the columns is ~7x faster there."""
    if z.shape[-1] > 32 or z.shape[-1] == 0:
        return np.max(z, axis=-1)
    m = z[..., 0].copy()
    for i in range(1, z.shape[-1]):
        np.maximum(m, z[..., i], out=m)
    return m


def softmax_vjp(s: np.ndarray, g: np.ndarray, axis: int = -1,
                out: np.ndarray | None = None) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`softmax`, given its output ``s``.

    With :math:`J = \mathrm{diag}(s) - s s^\top` (symmetric) the cotangent of the logits is

    .. math:: \bar z = J \bar s = s \odot (\bar s - \langle \bar s, s \rangle \mathbf 1).

    No Jacobian is formed: the cost is linear in the size of ``s``.

    Parameters
    ----------
    s : array ``(..., n, ...)``, the softmax output.
    g : array, same shape: the cotangent (upstream gradient) of ``s``.
    axis : the axis softmax normalized.
    out : optional array of ``g``'s shape (may be ``g`` itself) to write the result into.

    Returns
    -------
    array, same shape: the cotangent of the logits.
    """
    gs = g * s
    if axis in (-1, s.ndim - 1):
        dot = (gs @ np.ones(s.shape[-1]))[..., None]         # <g, s> per row, as a product
    else:
        dot = np.sum(gs, axis=axis, keepdims=True)
    res = np.subtract(g, dot, out=out)
    res *= s
    return res
