r"""What the paper measures in a trained transformer: singular values of the per-head perturbations.

Boix-Adsera et al. (2023, arXiv v2, Sec. 5, Figs. 3-5 and 7): for head :math:`h` of a layer,
with :math:`W_Q^h, W_K^h, W_V^h, W_O^h \in \mathbb R^{d \times d_h}`, the learned perturbations

.. math::
    \Delta W_K W_Q^\top = W_K^h(t) W_Q^h(t)^\top - W_K^h(0) W_Q^h(0)^\top, \qquad
    \Delta W_V W_O^\top = W_V^h(t) W_O^h(t)^\top - W_V^h(0) W_O^h(0)^\top

(:math:`d \times d`), their singular values and their stable rank
:math:`\|\Delta\|_F^2 / \|\Delta\|_2^2` (:func:`minitheory.spectral.stable_rank`). Each product has
rank at most :math:`d_h`; their difference at most :math:`\min(d, 2 d_h)`, so that many singular
values are kept. The paper compares the stable rank with :math:`d_h` (128 in its ViT).

Parameters follow :mod:`minitheory.transformer.model`: ``params[f"layer{l}.W_Q"]`` has shape
``(heads, d, d_h)``, likewise ``W_K``, ``W_V``, ``W_O``.
"""
from __future__ import annotations

import numpy as np

from ..spectral import singular_values, stable_rank
from ..validation import check_int

#: The two products the paper follows, and the factors of each.
PRODUCTS = {"KQ": ("W_K", "W_Q"), "VO": ("W_V", "W_O")}


def n_layers(params: dict) -> int:
    """Number of layers: the ``layer{l}.W_Q`` keys of ``params``."""
    return sum(1 for k in params if k.startswith("layer") and k.endswith(".W_Q"))


def head_products(params: dict, which: str) -> np.ndarray:
    r"""Per-head products :math:`W_K^h W_Q^{h\top}` (``which="KQ"``) or :math:`W_V^h W_O^{h\top}`
    (``"VO"``) of every layer: ``(layers, heads, d, d)``."""
    if which not in PRODUCTS:
        raise ValueError(f"which must be one of {tuple(PRODUCTS)}, got {which!r}")
    a, b = PRODUCTS[which]
    return np.stack([np.einsum("hik,hjk->hij", params[f"layer{l}.{a}"], params[f"layer{l}.{b}"])
                     for l in range(n_layers(params))])


def perturbation(params: dict, params0: dict, which: str) -> np.ndarray:
    r""":math:`\Delta W_K W_Q^\top` or :math:`\Delta W_V W_O^\top` per layer and head:
    ``head_products(params) - head_products(params0)``, ``(layers, heads, d, d)``."""
    return head_products(params, which) - head_products(params0, which)


def n_kept(params: dict) -> int:
    """Singular values kept per matrix: ``min(d, 2 d_h)``, the largest rank a perturbation has."""
    _, d, d_h = params["layer0.W_Q"].shape
    return min(d, 2 * d_h)


def spectra(params: dict, params0: dict) -> dict:
    r"""Singular values (largest first) and stable ranks of both perturbations.

    Returns ``{"sv_KQ": (layers, heads, k), "srank_KQ": (layers, heads), "sv_VO", "srank_VO"}``
    with ``k = min(d, 2 d_h)``; a zero perturbation has stable rank 0.
    """
    k = n_kept(params)
    out = {}
    for which in PRODUCTS:
        delta = perturbation(params, params0, which)
        out[f"sv_{which}"] = singular_values(delta)[..., :k]
        out[f"srank_{which}"] = stable_rank(delta)
    return out


def init_spectra(params0: dict) -> dict:
    r"""Singular values and stable ranks of the products themselves at init (rank :math:`\le d_h`):
    ``{"sv_KQ_init": (layers, heads, k), "srank_KQ_init": (layers, heads), "sv_VO_init", ...}``."""
    k = n_kept(params0)
    out = {}
    for which in PRODUCTS:
        prod = head_products(params0, which)
        out[f"sv_{which}_init"] = singular_values(prod)[..., :k]
        out[f"srank_{which}_init"] = stable_rank(prod)
    return out


def log_steps(total: int, n: int) -> np.ndarray:
    """About ``n`` distinct integer steps from 0 to ``total``, log-spaced (0, 1, 2, ... total)."""
    total = check_int("total", total, low=0)
    n = check_int("n", n, low=2)
    if total == 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.unique(np.round(np.geomspace(1, total, n - 1)).astype(np.int64))
    return np.concatenate([[0], grid])


def head_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the heads (last axis), as the paper's error bars."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(-1), x.std(-1)
