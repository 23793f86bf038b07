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


def softmax(z: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    r"""Numerically stable softmax along ``axis``.

    .. math:: s_i = \frac{\exp(z_i - \max_j z_j)}{\sum_k \exp(z_k - \max_j z_j)}

    Subtracting the row maximum leaves the result unchanged (softmax is invariant to adding a
    constant) and keeps every exponent ``<= 0``, so logits of ``+-1e4`` stay finite. When every
    ``|z| < 700 - log n`` no exponential can overflow or vanish and the shift is skipped: one
    global check instead of a per-row maximum (short rows make that reduction slow in NumPy).

    Parameters
    ----------
    z : array, any shape ``(..., n, ...)``
    axis : the axis that is normalized.
    out : optional array of ``z``'s shape (may be ``z`` itself) to write the result into.

    Returns
    -------
    s : array, same shape as ``z``; entries in ``[0, 1]``, summing to 1 along ``axis``.
    """
    z = np.moveaxis(z, axis, -1)                 # a view; the work is along the last axis
    dest = None if out is None else np.moveaxis(out, axis, -1)
    if z.size and np.max(np.abs(z)) < _SAFE - np.log(z.shape[-1]):
        # No exp can overflow (nor a row sum of n of them) or underflow to zero: the shift by
        # the row max, which only guards against that, can be skipped (same value by shift
        # invariance, up to rounding; the same input always takes the same path).
        e = np.exp(z, out=dest)
    else:
        e = np.subtract(z, _rowmax(z)[..., None], out=dest)
        np.exp(e, out=e)
    e /= np.einsum("...i->...", e)[..., None]
    return np.moveaxis(e, -1, axis)


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
    dot = np.einsum("...i,...i->...", np.moveaxis(g, axis, -1), np.moveaxis(s, axis, -1))
    res = np.subtract(g, np.expand_dims(dot, axis), out=out)
    res *= s
    return res
