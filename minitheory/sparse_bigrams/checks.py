"""Input checks of the sparse-contextual-bigram models (Ren, Wang, Lee 2024, arXiv:2410.23438).

The checked entry points of :mod:`~minitheory.sparse_bigrams.model` are ``check_inputs``, then
the unchecked core, then :func:`drop_run_axis`. Bad input raises a ``ValueError`` or
``TypeError`` that names the parameter and the accepted shapes or range.
"""
from __future__ import annotations

import numpy as np

from ..validation import check_array


def check_inputs(params, xs, k, xo, second: str = "A"):
    """Validate a parameter dict and a batch of token ids.

    ``params``: ``"V"`` ``(N, N)`` and ``second`` ``(T, N)`` (``"A"`` for the linear model, ``"W"``
    for the softmax model), finite, both with a leading run axis ``R`` or neither; ``xs`` int
    ``(B, T)``, ``k``, ``xo`` int ``(B,)`` (``R`` leading with a run axis), ids in ``[0, N)``,
    ``B >= 1``. Returns ``(params, xs, k, xo, squeeze)`` with a run axis added where there was
    none (``squeeze`` is then True).
    """
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


def drop_run_axis(loss_and_grads, squeeze: bool):
    """``(loss (R,), grads)`` of a core as the caller passed them: a float and arrays without the
    run axis when ``squeeze`` (the input had none), else unchanged."""
    loss, grads = loss_and_grads
    if squeeze:
        return float(loss[0]), {key: g[0] for key, g in grads.items()}
    return loss, grads
