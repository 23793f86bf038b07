r"""What the trained transformer looks like: low-rank updates, sparse :math:`W_O`, sparse attention.

- Evaluation: test hinge loss, 0/1 error, and the attention mass on label-relevant tokens
  :math:`\mathrm{att}_*(X) = \frac{1}{|S_*|}\sum_{l \in S_*}\sum_{s \in S_*} \beta_{s,l}`
  (ICLR-2023 paper; averaged over samples) [project choice].
- Rank-r truncation of an update :math:`\Delta W = W^{(T)} - W^{(0)}`: the best rank-r
  approximation :math:`U_r \Sigma_r V_r^\top` (Eckart-Young), put back as
  :math:`W^{(0)} + U_r\Sigma_r V_r^\top` (paper Fig. 1).
- Pruning: zero :math:`\lceil R m \rceil` rows (neurons) of :math:`W_O`, smallest norm first
  (magnitude), at random, or largest first; no retraining (paper Fig. 3).

Arrays carry a leading run axis ``R`` (see :mod:`.model`).
"""
from __future__ import annotations

import numpy as np

from ..validation import check_float, check_int
from . import model

PRUNE_ORDERS = ("magnitude", "random", "largest")


def evaluate(params: dict, X, y, rel):
    r"""Test hinge loss, 0/1 error and :math:`\mathrm{att}_*`, each ``(R,)``.

    ``X`` ``(R, n, L, d)``, ``y`` ``(R, n)``, ``rel`` ``(R, n, L)`` bool (the set :math:`S_*`).
    """
    F, cache = model.forward(params, X)
    A = cache["A"]                                            # A[r, b, l, s] = beta_{s,l}
    relf = rel.astype(np.float64)
    att = np.einsum("rbl,rbls,rbs->rb", relf, A, relf) / relf.sum(-1)
    return (np.mean(np.maximum(0.0, 1.0 - y * F), axis=-1), np.mean(np.sign(F) != y, axis=-1),
            att.mean(-1))


def truncate(delta: np.ndarray, r: int) -> np.ndarray:
    r"""Best rank-``r`` approximation :math:`U_r \Sigma_r V_r^\top` of ``delta`` ``(..., p, q)``."""
    r = check_int("r", r, low=0)
    U, s, Vt = np.linalg.svd(delta, full_matrices=False)
    return (U[..., :r] * s[..., None, :r]) @ Vt[..., :r, :]


def truncated_params(params: dict, params0: dict, r: int,
                     keys=("W_Q", "W_K", "W_V")) -> dict:
    r"""Parameters with the update of each of ``keys`` replaced by its best rank-``r`` version."""
    return {k: params0[k] + truncate(params[k] - params0[k], r) if k in keys else params[k]
            for k in params}


def prune_rows(W_O: np.ndarray, rate: float, order: str,
               rng: np.random.Generator | None = None):
    r"""Zero :math:`\lceil \mathrm{rate} \cdot m \rceil` rows of ``W_O`` ``(R, m, m_a)``.

    ``order``: ``"magnitude"`` (smallest :math:`\|W_O[i,:]\|` first), ``"random"`` (needs
    ``rng``) or ``"largest"``. Returns the pruned copy and the removed row indices ``(R, k)`` in
    the order they were removed.
    """
    rate = check_float("rate", rate, low=0.0, high=1.0)
    if order not in PRUNE_ORDERS:
        raise ValueError(f"order must be one of {PRUNE_ORDERS}, got {order!r}")
    R, m, _ = W_O.shape
    k = int(np.ceil(rate * m - 1e-9))                       # ceil, robust to 0.3 * 10 = 3.0000001
    norms = np.linalg.norm(W_O, axis=-1)                    # (R, m)
    if order == "magnitude":
        ranked = np.argsort(norms, axis=-1, kind="stable")
    elif order == "largest":
        ranked = np.argsort(-norms, axis=-1, kind="stable")
    else:
        if rng is None:
            raise ValueError("random pruning needs rng")
        ranked = np.stack([rng.permutation(m) for _ in range(R)])
    removed = ranked[:, :k]
    out = W_O.copy()
    np.put_along_axis(out, removed[:, :, None], 0.0, axis=1)
    return out, removed


def pruning_curve(params: dict, test, rates, order: str, rng=None, n_draws: int = 5):
    """Test hinge loss after pruning each rate in ``rates``: ``(len(rates), R)``.

    Random pruning averages ``n_draws`` draws from ``rng``.
    """
    X, y, rel = test
    draws = n_draws if order == "random" else 1
    out = np.zeros((len(rates), X.shape[0]))
    for i, rate in enumerate(rates):
        for _ in range(draws):
            W_O, _ = prune_rows(params["W_O"], rate, order, rng)
            out[i] += evaluate(dict(params, W_O=W_O), X, y, rel)[0] / draws
    return out
