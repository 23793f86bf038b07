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


def factors_from_products(w: np.ndarray, c: np.ndarray, sign_plus: np.ndarray,
                          sign_minus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Recover the factors :math:`(u, v)` of a pair from :math:`w = u v` and :math:`c = u^2 - v^2`.

    With :math:`S = \sqrt{4w^2 + c^2} = u^2 + v^2`: :math:`(u + v)^2 = S + 2w` and
    :math:`(u - v)^2 = S - 2w`, the smaller of the two computed as :math:`c^2/(S + 2|w|)` (no
    cancellation when :math:`|c| \ll |w|`, e.g. an active coordinate at :math:`\alpha = 10^{-32}`).
    :math:`u + v` and :math:`u - v` keep their signs along gradient flow (:math:`d(u \pm v)/dt =
    \mp (u \pm v)\,\partial_i\tilde L`, paper eq. 6) and along a GD step with
    :math:`\eta |\partial_i \tilde L| < 1`, so ``sign_plus``, ``sign_minus`` are those of the
    init. All arrays broadcast; returns ``u, v``.
    """
    S = np.sqrt(4.0 * w * w + c * c)
    big = S + 2.0 * np.abs(w)
    small = np.divide(c * c, big, out=np.zeros_like(big), where=big > 0)
    plus2 = np.where(w >= 0, big, small)                    # (u + v)^2
    minus2 = np.where(w >= 0, small, big)                   # (u - v)^2
    p, q = sign_plus * np.sqrt(plus2), sign_minus * np.sqrt(minus2)
    return 0.5 * (p + q), 0.5 * (p - q)


def perturb_nonnegligible(params: dict, rng: np.random.Generator, std: float,
                          threshold: float = 1e-5) -> tuple[dict, np.ndarray]:
    r"""The paper's perturbation of its assumption checks (App. A, arXiv v2 Fig. 3): every
    coordinate :math:`w_i` with :math:`|w_i| >` ``threshold`` gets :math:`N(0, \mathrm{std}^2)`
    noise, the negligible ones are left untouched.

    Here a coordinate is a pair of factors: :math:`a_j = w_{K,j} w_{Q,j}` or :math:`b_j = w_{V,j}
    w_{O,j}`; both factors of a non-negligible pair get independent noise [project choice: the
    paper's :math:`w_i` are the entries it plots, the products; the network is trained in the
    factors]. ``params`` keys ``w_K, w_Q, w_V, w_O``, each ``(R, d)``. Returns the new params
    (a copy) and the mask ``(R, 2d)`` of perturbed coordinates, ordered ``(a, b)``.
    """
    a = params["w_K"] * params["w_Q"]
    b = params["w_V"] * params["w_O"]
    mask = np.concatenate([np.abs(a) > threshold, np.abs(b) > threshold], axis=-1)
    d = a.shape[-1]
    out = {}
    for k, m in (("w_K", mask[:, :d]), ("w_Q", mask[:, :d]), ("w_V", mask[:, d:]),
                 ("w_O", mask[:, d:])):
        noise = rng.standard_normal(params[k].shape) * std
        out[k] = np.where(m, params[k] + noise, params[k])
    return out, mask
