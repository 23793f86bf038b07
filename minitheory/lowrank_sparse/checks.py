"""Input checks for the one-layer transformer (:mod:`.model`, :mod:`.reference`).

The checked entry points of both twins validate here, add the optional run axis, call their
unchecked core and drop the run axis again. Bad input fails with a ``ValueError`` or
``TypeError`` that names the parameter and the accepted shape or values.
"""
from __future__ import annotations

import numpy as np

from ..validation import check_array

TRAINED = ("W_Q", "W_K", "W_V", "W_O")
KEYS = TRAINED + ("a",)


def check_inputs(params, X, y):
    """Validate and add the run axis; returns ``(params, X, y, squeeze)``.

    ``params`` needs the arrays of :data:`KEYS`, each 2-D (one model) or 3-D (a leading run
    axis ``R``); ``X`` is ``(B, L, d)`` or ``(R, B, L, d)`` to match; ``y`` (or ``None``) is
    ``(B,)`` or ``(R, B)`` with entries in {-1, +1}. ``squeeze`` is true when the input had no
    run axis (one was added).
    """
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


def drop_run_axis(loss_and_grads, squeeze: bool):
    """``(loss (R,), grads)`` as returned, or ``(float, grads of run 0)`` when ``squeeze``."""
    loss, grads = loss_and_grads
    if squeeze:
        return float(loss[0]), {k: v[0] for k, v in grads.items()}
    return loss, grads
