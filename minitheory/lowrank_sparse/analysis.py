r"""What the trained transformer looks like: low-rank updates, sparse :math:`W_O`, sparse attention.

- Evaluation: test hinge loss, 0/1 error, and the attention mass on label-relevant tokens
  :math:`\mathrm{att}_*(X) = \frac{1}{|S_*|}\sum_{l \in S_*}\sum_{s \in S_*} \beta_{s,l}`
  (ICLR-2023 paper; averaged over samples) [project choice].
- Rank-r truncation of an update :math:`\Delta W = W^{(T)} - W^{(0)}`: the best rank-r
  approximation :math:`U_r \Sigma_r V_r^\top` (Eckart-Young), put back as
  :math:`W^{(0)} + U_r\Sigma_r V_r^\top`. arXiv:2406.17167v1, Fig. 1 does this for all
  trainable parameters :math:`W_Q, W_K, W_V, W_O` (the default); truncating only
  :math:`W_Q, W_K, W_V` (:data:`QKV`) is our extra variant.
- Update spectra: singular values of :math:`\Delta W^{(t)} = W^{(t)} - W^{(0)}` at chosen steps
  (arXiv:2406.17167v1, Fig. 2, for :math:`W_K` at t = 1, 10, 20, 30).
- Pruning: zero :math:`\lceil R m \rceil` rows (neurons) of :math:`W_O`, smallest norm first
  (magnitude), at random, or largest first; no retraining (arXiv:2406.17167v1, Fig. 3).

Arrays carry a leading run axis ``R`` (see :mod:`.model`).
"""
from __future__ import annotations

import numpy as np

from ..validation import check_float, check_int
from . import model

PRUNE_ORDERS = ("magnitude", "random", "largest")
QKV = ("W_Q", "W_K", "W_V")          # the attention matrices: the extra truncation variant


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


def truncated_params(params: dict, params0: dict, r: int, keys=model.TRAINED) -> dict:
    r"""Parameters with the update of each of ``keys`` replaced by its best rank-``r`` version,
    :math:`W^{(0)} + U_r \Sigma_r V_r^\top`; the other entries are ``params``' own.

    The default ``keys`` are all trained matrices, as in arXiv:2406.17167v1, Fig. 1 ("all
    trainable parameters are approximated with the rank equal to 1, 2, 5, 10, and 20");
    ``keys=QKV`` keeps the trained :math:`W_O`. At full rank, ``r >= min(p, q)``, the update
    is its own best approximation and the trained matrix is returned as it is (no round-off).
    """
    r = check_int("r", r, low=0)
    unknown = [k for k in keys if k not in model.TRAINED]
    if unknown:
        raise ValueError(f"keys must be trained matrices {model.TRAINED}, got {unknown}")

    def approx(k):
        if k not in keys or r >= min(params[k].shape[-2:]):
            return params[k]
        return params0[k] + truncate(params[k] - params0[k], r)
    return {k: approx(k) for k in params}


def rank_r_curve(params: dict, params0: dict, test, ranks, keys=model.TRAINED):
    r"""Test hinge loss and :math:`\mathrm{att}_*` after truncating the updates of ``keys`` to
    each rank in ``ranks``, without retraining (arXiv:2406.17167v1, Fig. 1): two ``(len(ranks), R)``
    arrays. ``test`` is ``(X, y, rel)`` as for :func:`evaluate`.
    """
    out = [evaluate(truncated_params(params, params0, r, keys), *test) for r in ranks]
    return np.array([o[0] for o in out]), np.array([o[2] for o in out])


def update_spectra(W_history: np.ndarray, steps) -> np.ndarray:
    r"""Singular values of :math:`W^{(t)} - W^{(0)}` for each ``t`` in ``steps``, largest first.

    ``W_history`` ``(T+1, R, p, q)``: the matrix after each step, ``W_history[0]`` the
    initialization (``TrainResult.history["W_K"]``). Returns ``(len(steps), R, min(p, q))``;
    row ``j`` belongs to ``steps[j]`` (arXiv:2406.17167v1, Fig. 2: :math:`W_K` at t = 1, 10,
    20, 30, one panel each).
    """
    W_history = np.asarray(W_history)
    last = W_history.shape[0] - 1
    steps = [check_int(f"steps[{j}]", t, low=0, high=last) for j, t in enumerate(steps)]
    return np.linalg.svd(W_history[steps] - W_history[0], compute_uv=False)


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


def relevant_share(delta: np.ndarray, mu: np.ndarray) -> np.ndarray:
    r"""Share of :math:`\|\Delta W\|_F^2` whose input side lies in the span of the
    label-relevant patterns: :math:`\|\Delta W P\|_F^2 / \|\Delta W\|_F^2` with :math:`P` the
    orthogonal projector onto :math:`\mathrm{span}(\mu_1, \mu_2)`, the label-relevant
    patterns whose number sets the rank of the updates (arXiv:2406.17167v1, abstract).
    Defined as 1 for a zero update.

    ``delta`` ``(..., p, d)``, ``mu`` ``(M, d)`` orthonormal rows (:func:`.data.patterns`).
    Returns ``delta.shape[:-2]``.
    """
    on = delta @ mu[:2].T                                   # coordinates along mu_1, mu_2
    total = np.sum(delta ** 2, axis=(-2, -1))
    return np.divide(np.sum(on ** 2, axis=(-2, -1)), total, out=np.ones_like(total),
                     where=total > 0)
