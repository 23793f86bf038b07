"""Input checks for the rank-growth heads (:mod:`.model`, :mod:`.incremental`).

Each check raises a ``ValueError``/``TypeError`` naming the parameter and the accepted shape or
range, and returns the inputs in the form the unchecked cores take: float64 arrays, parameters
with a leading run axis.
"""
from __future__ import annotations

import numpy as np

from ..validation import check_array

DIAG_KEYS = ("w_K", "w_Q", "w_V", "w_O")
FULL_KEYS = ("W_K", "W_Q", "W_V", "W_O")


def check_params(params, keys, *, kind):
    """Validate a parameter dict of the ``kind`` ``"diagonal"``, ``"product"`` (vectors ``(d,)``
    or ``(R, d)``) or ``"full"`` (matrices, optional run axis); return it with a run axis, and
    whether the caller gave none (then :func:`unrun` takes it off the results)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {keys}, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params is missing keys {missing} (the {kind} head needs {list(keys)})")
    vec = kind in ("diagonal", "product")
    ndims = (1, 2) if vec else (2, 3)
    runs = {k: check_array(f"params[{k!r}]", params[k], ndim=ndims) for k in keys}
    first = runs[keys[0]]
    lead = first.shape[:-1] if vec else first.shape[:-2]
    for k in keys:
        shp = runs[k].shape
        if runs[k].ndim != first.ndim or (vec and shp != first.shape) or \
                (not vec and shp[:-2] != lead):
            raise ValueError(f"params[{k!r}] has shape {shp}, inconsistent with "
                             f"params[{keys[0]!r}] of shape {first.shape}")
    squeeze = first.ndim == ndims[0]
    if squeeze:
        runs = {k: v[None] for k, v in runs.items()}
    return runs, squeeze


def check_full_params(params):
    """:func:`check_params` for the full head, plus the shapes ``W_K, W_Q, W_V`` ``(.., d, d_h)``
    and ``W_O`` ``(.., d_out, d_h)``; returns ``(runs, squeeze, d, d_out)``."""
    runs, squeeze = check_params(params, FULL_KEYS, kind="full")
    d, d_h = runs["W_K"].shape[-2:]
    for k in ("W_Q", "W_V"):
        if runs[k].shape[-2:] != (d, d_h):
            raise ValueError(f"params[{k!r}] must have shape (..., {d}, {d_h}) like W_K, "
                             f"got {runs[k].shape}")
    if runs["W_O"].shape[-1] != d_h:
        raise ValueError(f"params['W_O'] must have shape (..., d_out, {d_h}), got {runs['W_O'].shape}")
    return runs, squeeze, d, runs["W_O"].shape[-2]


def check_XY(X, Y, d, d_out):
    """Validate inputs ``X`` ``(n_seq, n, d)`` and targets ``Y`` ``(n_seq, n, d_out)``, finite,
    with at least one sequence and one token; return them as float64 arrays."""
    X = check_array("X", X, shape=(None, None, d))
    Y = check_array("Y", Y, shape=(X.shape[0], X.shape[1], d_out))
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X needs at least one sequence and one token, got shape {X.shape}")
    return X, Y


def unrun(loss, grads, squeeze):
    """Take the run axis added by :func:`check_params` off the loss and the gradients again."""
    if squeeze:
        return float(np.asarray(loss)[0]), {k: v[0] for k, v in grads.items()}
    return loss, grads
