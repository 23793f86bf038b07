r"""How close the learned model is to the truth (Ren, Wang, Lee 2024, arXiv:2410.23438v1, Sec. 4).

Every function takes ``params`` with optional leading run axes and returns one value per run.

- distances :math:`\|V - P\|_\mu` and :math:`\|A - Q^*\|_\mu`;
- signals on the centred parts, with :math:`\Pi = I_T - \mathbf 1\mathbf 1^\top / T` (centres each
  column of :math:`A` over positions):

  .. math::
      \alpha_V = \frac{\langle V, P\rangle_\Sigma}{\|P\|_\Sigma^2},\qquad
      \alpha_A = \frac{\langle \Pi A, \Pi Q^*\rangle_\mu}{\|\Pi Q^*\|_\mu^2},

  and the *off-signal residuals* :math:`\|V - \alpha_V P\|_\Sigma` and
  :math:`\|\Pi A - \alpha_A \Pi Q^*\|_\mu` (keys ``resid_V``, ``resid_A``; an extra diagnostic of
  this package, not the paper's :math:`\Delta`). At the uninformative initialization
  :math:`\alpha_V = \alpha_A = 0` exactly;
- the paper's :math:`\Delta_V, \Delta_A` (Figs. 3 and 5): the distance of a run to its own
  *population process*, :func:`population_distance` (the process itself is run by
  :func:`training.train` with ``population=True``);
- similarity with the ground truth (Fig. 4), :func:`similarity`: the cosine in the
  :math:`\mu`-weighted inner product [project choice: the paper's caption says "similarity with
  the ground-truth" without a formula; this is the natural scale-free reading];
- excess loss :math:`L - L_{irr}` from the closed form (no Monte Carlo);
- support recovery: the fraction of columns whose top-:math:`Q` entries of :math:`|a_k|` are the
  support of :math:`q^{(k)}`, and the fraction of off-support entries that are non-zero.
"""
from __future__ import annotations

import numpy as np

from .data import Instance
from .model import bayes_error, mu_norm2, population_loss, sigma_inner


def distances(params: dict, inst: Instance):
    r""":math:`(\|V - P\|_\mu, \|A - Q^*\|_\mu)`."""
    return (np.sqrt(mu_norm2(params["V"] - inst.P, inst.mu)),
            np.sqrt(mu_norm2(params["A"] - inst.Q_star, inst.mu)))


def _centre(A):
    """:math:`\\Pi A`: subtract each column's mean over positions."""
    return A - A.mean(axis=-2, keepdims=True)


def signals(params: dict, inst: Instance):
    r""":math:`(\alpha_V, \alpha_A, \|V - \alpha_V P\|_\Sigma, \|\Pi A - \alpha_A \Pi Q^*\|_\mu)`:
    the signals and the off-signal residuals."""
    V, A, mu, P = params["V"], params["A"], inst.mu, inst.P
    alpha_V = sigma_inner(V, P, mu) / sigma_inner(P, P, mu)
    cA, cQ = _centre(A), _centre(inst.Q_star)
    alpha_A = np.einsum("...tk,tk,k->...", cA, cQ, mu) / mu_norm2(cQ, mu)
    dV = V - np.asarray(alpha_V)[..., None, None] * P
    dA = cA - np.asarray(alpha_A)[..., None, None] * cQ
    return alpha_V, alpha_A, np.sqrt(np.maximum(sigma_inner(dV, dV, mu), 0.0)), np.sqrt(mu_norm2(dA, mu))


def mu_inner(M: np.ndarray, M2: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r""":math:`\langle M, M'\rangle_\mu = \sum_k \mu_k (M e_k)^\top (M' e_k)`, the inner product
    of :math:`\|\cdot\|_\mu`."""
    return np.einsum("...tk,...tk,k->...", M, M2, mu)


def similarity(params: dict, inst: Instance):
    r"""Similarity with the ground truth (Ren, Wang, Lee 2024, Fig. 4), the cosines

    .. math::
        s_V = \frac{\langle V, P\rangle_\mu}{\|V\|_\mu \|P\|_\mu},\qquad
        s_A = \frac{\langle A, Q^*\rangle_\mu}{\|A\|_\mu \|Q^*\|_\mu}

    [project choice: the caption names a similarity, not its formula]. Each is 1 exactly at the
    truth up to a positive factor, so it reads through the scale symmetry :math:`(cV, A/c)` and
    through the normalizations. 0 where a matrix is 0.
    """
    def cos(M, M_star):
        den = np.sqrt(mu_norm2(M, inst.mu) * mu_norm2(M_star, inst.mu))
        return np.where(den > 0, mu_inner(M, M_star, inst.mu) / np.where(den > 0, den, 1.0), 0.0)

    return cos(params["V"], inst.P), cos(params["A"], inst.Q_star)


def population_distance(params: dict, population: dict, inst: Instance) -> dict:
    r"""The paper's :math:`\Delta_V, \Delta_A` (Figs. 3 and 5): a run minus its population
    process (the same update with exact gradients, same start, in lockstep), as
    ``{"delta_V": ||V - V_pop||_mu, "delta_A": ||A - A_pop||_mu}`` [project choice: the
    :math:`\mu`-norm, the norm of the distances to the truth]."""
    return {f"delta_{key}": np.sqrt(mu_norm2(params[key] - population[key], inst.mu))
            for key in ("V", "A")}


def excess_loss(params: dict, inst: Instance):
    r""":math:`L(V, A) - L_{irr}` from the closed form."""
    return population_loss(params, inst) - bayes_error(inst)


def support_recovery(A: np.ndarray, inst: Instance):
    """``(fraction of columns with the right top-Q support, fraction of off-support entries
    that are non-zero)``; ``Q`` is read off ``Q_star``'s first column."""
    Q = int(np.count_nonzero(inst.Q_star[:, 0]))
    truth = inst.Q_star > 0                                           # (T, N)
    top = np.argsort(-np.abs(A), axis=-2, kind="stable")[..., :Q, :]   # (..., Q, T->N)
    found = np.zeros(A.shape, dtype=bool)
    np.put_along_axis(found, top, True, axis=-2)
    right = np.all(found == truth, axis=-2).mean(-1)
    off = (~truth).sum()
    return right, np.sum((A != 0) & ~truth, axis=(-2, -1)) / off


def support_mass(A: np.ndarray, inst: Instance):
    r"""Attention mass on the true support, :math:`\sum_k \mu_k \sum_{t \in \mathrm{supp}\, q_k} A_{t,k}`
    (for the softmax model each column sums to 1, so this is the share on the right positions)."""
    return np.einsum("...tk,tk,k->...", A, (inst.Q_star > 0).astype(np.float64), inst.mu)


def metrics(params: dict, inst: Instance) -> dict:
    """All scalar diagnostics at once (one value per run)."""
    dV, dA = distances(params, inst)
    aV, aA, rV, rA = signals(params, inst)
    sup, offz = support_recovery(params["A"], inst)
    sV, sA = similarity(params, inst)
    return {"sim_V": sV, "sim_A": sA, "dist_V": dV, "dist_A": dA, "alpha_V": aV, "alpha_A": aA, "resid_V": rV,
            "resid_A": rA, "excess_loss": excess_loss(params, inst), "support": sup,
            "support_mass": support_mass(params["A"], inst),
            "off_support_nonzero": offz}
