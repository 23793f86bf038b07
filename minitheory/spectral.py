r"""Spectral summaries of weight matrices, used by all three papers.

Every function accepts a single matrix ``(m, n)`` or a stack ``(..., m, n)`` and returns one
value (or vector) per matrix.

- singular values, largest first;
- numerical rank: the number of singular values above a stated threshold;
- stable rank :math:`\|W\|_F^2 / \|W\|_2^2` (Boix-Adsera et al. 2023, Sec. 5), a smooth lower
  bound of the rank that is insensitive to tiny singular values;
- energy share of the top ``r`` singular values, :math:`\sum_{i \le r} \sigma_i^2 / \|W\|_F^2`.
"""
from __future__ import annotations

import numpy as np


def singular_values(W: np.ndarray) -> np.ndarray:
    """Singular values of ``W`` (shape ``(..., m, n)``), descending: ``(..., min(m, n))``."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim < 2:
        raise ValueError(f"W must have at least 2 dimensions, got shape {W.shape}")
    return np.linalg.svd(W, compute_uv=False)


def numerical_rank(W: np.ndarray, *, atol: float = 0.0, rtol: float = 0.0) -> np.ndarray:
    r"""Number of singular values strictly above ``max(atol, rtol * sigma_1)``.

    At least one of ``atol`` and ``rtol`` must be positive: the threshold is part of the
    definition and must be stated. The zero matrix has rank 0.

    Returns an ``int`` array of shape ``W.shape[:-2]`` (a Python ``int`` for one matrix).
    """
    if not (atol > 0 or rtol > 0) or atol < 0 or rtol < 0:
        raise ValueError(f"numerical_rank needs atol >= 0 and rtol >= 0, one of them > 0; "
                         f"got atol={atol}, rtol={rtol}")
    s = singular_values(W)
    thresh = np.maximum(atol, rtol * s[..., :1])
    r = np.sum(s > thresh, axis=-1)
    return int(r) if r.ndim == 0 else r


def stable_rank(W: np.ndarray) -> np.ndarray:
    r"""Stable rank :math:`\|W\|_F^2 / \|W\|_2^2 = \sum_i \sigma_i^2 / \sigma_1^2`.

    Lies in ``[1, rank(W)]``; defined as 0 for the zero matrix. Returns ``float`` for one
    matrix, an array of shape ``W.shape[:-2]`` for a stack.
    """
    s = singular_values(W)
    top = s[..., 0] ** 2
    total = np.sum(s**2, axis=-1)
    out = np.divide(total, top, out=np.zeros_like(total), where=top > 0)
    return float(out) if out.ndim == 0 else out


def energy_share(W: np.ndarray, r: int) -> np.ndarray:
    r"""Share of :math:`\|W\|_F^2` held by the top ``r`` singular values (1 for the zero matrix)."""
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    s2 = singular_values(W) ** 2
    total = np.sum(s2, axis=-1)
    top = np.sum(s2[..., :r], axis=-1)
    out = np.divide(top, total, out=np.ones_like(total), where=total > 0)
    return float(out) if out.ndim == 0 else out
