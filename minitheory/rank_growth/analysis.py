r"""Reading gradient-descent logs against the incremental-learning prediction.

- rescaled time :math:`\bar t = \eta\,\mathrm{step} / \log(1/\alpha)` (paper Sec. 4 figures);
- activation time of coordinate :math:`i`: first :math:`\bar t` with :math:`|w_i| > 0.05`;
- rank of the learned perturbation: :math:`\Delta W_K W_Q^\top = \mathrm{diag}(a(t) - a(0))` has
  singular values :math:`|\Delta a_j|`, counted above ``max(atol, rtol * max)``;
- observed plateau losses: the GD loss in the middle of each predicted plateau.
"""
from __future__ import annotations

import numpy as np

from ..spectral import numerical_rank
from .incremental import IncrementalResult


def rescaled_time(steps, eta: float, alphas) -> np.ndarray:
    r""":math:`\bar t = \eta \cdot \mathrm{step}/\log(1/\alpha)`; ``steps (K,)``, ``alphas (R,)`` -> ``(K, R)``.

    For :math:`\alpha = 1`, :math:`\log(1/\alpha) = 0`: that run's column is the plain time
    :math:`t = \eta \cdot \mathrm{step}` (the paper plots the large-init run against t).
    """
    log_inv = np.log(1.0 / np.asarray(alphas, dtype=np.float64))
    return eta * np.asarray(steps, dtype=np.float64)[:, None] / np.where(log_inv > 0, log_inv, 1.0)


def activation_times(tbar: np.ndarray, w: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    r"""First :math:`\bar t` at which :math:`|w_i| > ` ``threshold``, per run and coordinate.

    ``tbar (K, R)``, ``w (K, R, p)`` -> ``(R, p)``; ``inf`` where the coordinate never activates.
    """
    above = np.abs(w) > threshold                                   # (K, R, p)
    first = np.argmax(above, axis=0)                                # (R, p)
    times = tbar[first, np.arange(tbar.shape[1])[:, None]]          # (R, p)
    return np.where(above.any(axis=0), times, np.inf)


def perturbation_rank(w: np.ndarray, w0: np.ndarray, *, atol: float = 0.05,
                      rtol: float = 1e-2) -> np.ndarray:
    r"""Numerical rank of :math:`\mathrm{diag}(w - w_0)`: #{j : |Δw_j| > max(atol, rtol·max_j |Δw_j|)}.

    ``w (..., d)``, ``w0`` broadcastable. Equals the rank of :math:`\Delta W_K W_Q^\top` when ``w = a``
    (or of :math:`\Delta W_V W_O^\top` when ``w = b``).
    """
    dw = np.asarray(w) - np.asarray(w0)
    return numerical_rank(dw[..., :, None] * np.eye(dw.shape[-1]), atol=atol, rtol=rtol)


def observed_plateau_losses(result: IncrementalResult, tbar: np.ndarray, loss: np.ndarray,
                            tbar_max: float) -> np.ndarray:
    r"""GD loss at the midpoint of each predicted plateau :math:`(\bar t_k, \bar t_{k+1})`.

    The last plateau ends at ``tbar_max``. ``tbar (K,)`` and ``loss (K,)`` are one run's log.
    Returns ``(n_stages,)``.
    """
    ends = np.append(result.times[1:], tbar_max)
    mids = 0.5 * (result.times + ends)
    idx = np.clip(np.searchsorted(tbar, mids), 0, len(tbar) - 1)
    return loss[idx]
