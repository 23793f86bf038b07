r"""The softmax and its vector-Jacobian product, shared by all three papers.

.. math::
    s = \mathrm{softmax}(z),\quad s_i = \frac{e^{z_i - m}}{\sum_k e^{z_k - m}},\ m = \max_k z_k;
    \qquad
    \bar z = J^\top \bar s = s \odot (\bar s - \langle \bar s, s\rangle \mathbf 1),\quad
    J = \mathrm{diag}(s) - s s^\top .

:func:`softmax` and :func:`softmax_vjp` are the textbook forms (the row maximum subtracted, so
logits of :math:`\pm 10^4` stay finite): the reference every model uses, and the only way the
softmax gradient is written here. Both are pure and work on any leading batch axes.

The attention heads of the rank-growth paper take their softmax over rows of only 8 entries,
where NumPy's per-row reductions dominate; for them :func:`fast_softmax` (and its numerator
:func:`shifted_exp`) is the fast twin of :func:`softmax`, with the gains measured in its docstring.
"""
from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Softmax along ``axis``, the row maximum subtracted:
    :math:`s_i = e^{z_i - m} / \sum_k e^{z_k - m}`, :math:`m = \max_k z_k`.

    Parameters
    ----------
    z : array, any shape ``(..., n, ...)``: the logits.
    axis : the axis that is normalized.

    Returns
    -------
    s : array, same shape as ``z``; entries in ``[0, 1]``, summing to 1 along ``axis``.
    """
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_vjp(s: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Vector-Jacobian product of :func:`softmax`, given its output ``s``.

    With the (symmetric) Jacobian :math:`J = \mathrm{diag}(s) - s s^\top` of one row, the
    cotangent of the logits is

    .. math:: \bar z = J \bar s = s \odot (\bar s - \langle \bar s, s \rangle \mathbf 1),

    the second term (the *row term*) coming from the normalization. No Jacobian is formed.

    Parameters
    ----------
    s : array ``(..., n, ...)``, the softmax output.
    g : array, same shape: the cotangent :math:`\bar s` (upstream gradient) of ``s``.
    axis : the axis softmax normalized.

    Returns
    -------
    array, same shape: the cotangent :math:`\bar z` of the logits.
    """
    return s * (g - np.sum(g * s, axis=axis, keepdims=True))


# --------------------------------------------------------------------------------------------
# Fast twins (short rows: the attention heads' 8 keys, the low-rank/sparse transformer's 20)
# --------------------------------------------------------------------------------------------
def shifted_exp(z: np.ndarray, out: np.ndarray | None = None, axis: int = -1) -> np.ndarray:
    r"""The softmax numerator :math:`e_i = \exp(z_i - c)`, with ``c`` constant along ``axis``.

    ``c`` is 0 when every ``|z| < 700 - log n``: then no exponential (nor a row sum of ``n`` of
    them) can overflow or underflow to zero, and one global check replaces a per-row maximum
    (short rows make that reduction slow in NumPy). Otherwise ``c`` is the row maximum, so every
    exponent is ``<= 0`` and logits of ``+-1e4`` stay finite. Either way
    ``e / e.sum(-1) = softmax(z)`` (softmax is invariant to adding a constant to a row), and the
    same input always takes the same path.

    The fast twin of the numerator ``np.exp(z - z.max(-1))`` of :func:`softmax` (its gain is
    that of :func:`fast_softmax`). Models that only need ``softmax(z) @ V`` use it to normalize the small product instead of
    the large ``e``: ``(e @ [V, 1])`` gives ``e V`` and the row sums in one product.

    Parameters
    ----------
    z : array ``(..., n)``; rows along the last axis (along ``axis`` if given).
    out : optional array of ``z``'s shape (may be ``z`` itself) to write the result into.
    axis : the axis the softmax normalizes over (``-2`` for logits stored transposed).

    Returns
    -------
    e : array, same shape as ``z``; positive, at most ``e^700`` per entry.
    """
    if exp_is_safe(z, z.shape[axis]):
        return np.exp(z, out=out)
    zv = np.swapaxes(z, axis, -1)                         # rows along the last axis (a view)
    ev = None if out is None else np.swapaxes(out, axis, -1)
    e = np.subtract(zv, _rowmax(zv)[..., None], out=ev)
    return np.swapaxes(np.exp(e, out=e), axis, -1)


def fast_softmax(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""Fast twin of :func:`softmax` along the last axis, for the short rows of the attention
    heads: :func:`shifted_exp` (no row maximum unless an exponential could overflow), then the
    row sums as one product with a ones vector, optionally in place (``out`` may be ``z``).

    Same values as :func:`softmax` up to rounding. Measured gain over :func:`softmax` (2 cores
    shared at a load average of 9-15, so ranges over repeated sessions of ``timeit`` and of the
    minimum over 60 calls): 5.2-8.1x on the full head's ``(256, 48, 8)`` logits (``R = 6``),
    4.1-7.5x on ``(256, 40, 8)`` (``R = 5``), at least 3.4x on ``(256, 8, 8)`` (``R = 1``); in the
    full head's loss-and-gradients call at ``R = 6`` it saves 1.4-1.7x of the whole call.
    On the low-rank/sparse transformer's rows of 20 it gained 1.6x (``B = 16``) and 4.3x
    (``B = 1024``); on the bigram model's ``(1, 50, 10)`` columns the reference was faster.

    Parameters
    ----------
    z : array ``(..., n)``: the logits, rows along the last axis.
    out : optional array of ``z``'s shape (may be ``z`` itself) to write the result into.

    Returns
    -------
    s : array, same shape as ``z``; summing to 1 along the last axis.
    """
    e = shifted_exp(z, out=out)
    e /= (e @ np.ones(e.shape[-1]))[..., None]            # row sums as a product: faster than
    return e                                              # a reduction over short rows


def fast_softmax_vjp(s: np.ndarray, g: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""Fast twin of :func:`softmax_vjp` along the last axis:
    :math:`\bar z = s \odot \bar s - s\,\langle \bar s, s\rangle`, the row sums
    :math:`\langle \bar s, s\rangle` as one product with a ones vector (a reduction over short
    rows is slow in NumPy), optionally in place (``out`` may be ``g``).

    Same values as :func:`softmax_vjp` up to rounding. Measured gain over it on the
    low-rank/sparse transformer's ``(1, 16, 20, 20)`` attention: 1.6x (17.7 -> 11.0 us, best of 7).

    Parameters
    ----------
    s : array ``(..., n)``, the softmax output, rows along the last axis.
    g : array, same shape: the cotangent :math:`\bar s` of ``s``.
    out : optional array of that shape (may be ``g``) to write :math:`\bar z` into.

    Returns
    -------
    array, same shape: the cotangent :math:`\bar z` of the logits.
    """
    sg = np.multiply(s, g, out=out)
    sg -= s * (sg @ np.ones(s.shape[-1]))[..., None]
    return sg


#: |logit| below which exp neither overflows (e^709.8 is the largest float64) nor underflows to 0
_SAFE = 700.0


def exp_is_safe(z: np.ndarray, n: int) -> bool:
    """Whether ``z`` is non-empty and every ``|z| < 700 - log n``: then ``exp(z)`` and a sum of
    ``n`` such exponentials neither overflow nor underflow to zero, so a softmax over rows of
    ``n`` entries needs no row maximum (one global check instead of a reduction per row)."""
    return bool(z.size) and max(-np.min(z), np.max(z)) < _SAFE - np.log(n)


def _rowmax(z: np.ndarray) -> np.ndarray:
    """Maximum over the last axis. NumPy's reduction is slow on short rows (the attention rows
    here have 8-50 entries); a running maximum over the columns is ~7x faster there."""
    if z.shape[-1] > 32 or z.shape[-1] == 0:
        return np.max(z, axis=-1)
    m = z[..., 0].copy()
    for i in range(1, z.shape[-1]):
        np.maximum(m, z[..., i], out=m)
    return m
