r"""Sparse contextual bigrams (Ren, Wang, Lee 2024, Sec. 2): instances and a vectorized sampler.

An SCB task has a vocabulary :math:`[N]`, a context length :math:`T`, a **column-stochastic**
transition matrix :math:`P` (:math:`P_{ij} = \Pr(\text{next} = i \mid \text{source} = j)`,
:math:`\mathbf 1^\top P = \mathbf 1^\top`) with stationary distribution :math:`\mu = P\mu`, and for
every last token :math:`k` a :math:`Q`-sparse distribution :math:`q^{(k)}` over positions (the
columns of :math:`Q^* \in \mathbb R^{T \times N}`). One sample:

.. math::
    k = x_{T+1} \sim \mu,\quad x_1, \dots, x_T \overset{iid}{\sim} \mu,\quad s \sim q^{(k)},\quad
    x_o \sim P(\cdot \mid x_s),

so :math:`\mathbb E[e_{x_o} \mid X, k] = P X q^{(k)}` with :math:`X = [e_{x_1} \dots e_{x_T}]`.

Instance generator [project choice]: :math:`P_{ij} \propto U_{ij}^3` with columns normalized;
:math:`\mu` the eigenvector of :math:`P` for eigenvalue 1 (sum 1); each :math:`q^{(k)}` puts weights
:math:`\propto 0.5 + U[0, 1]` on ``Q`` positions drawn uniformly without replacement.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_array, check_int


@dataclass(frozen=True)
class Instance:
    """One SCB task: ``P`` ``(N, N)`` column-stochastic, ``mu`` ``(N,)`` with ``P mu = mu``,
    ``Q_star`` ``(T, N)`` with column ``k`` the position distribution of last token ``k``."""

    P: np.ndarray
    mu: np.ndarray
    Q_star: np.ndarray

    @property
    def N(self) -> int:
        return self.P.shape[0]

    @property
    def T(self) -> int:
        return self.Q_star.shape[0]


def check_instance(P, mu, Q_star, *, atol: float = 1e-10) -> Instance:
    """Validate an instance: shapes, a column-stochastic non-negative ``P``, a positive
    stationary ``mu``, and every column of ``Q_star`` a distribution. Raises ``ValueError``."""
    P = check_array("P", P, ndim=2)
    N = P.shape[0]
    if N < 2 or P.shape != (N, N):
        raise ValueError(f"P must be square with N >= 2, got shape {P.shape}")
    mu = check_array("mu", mu, shape=(N,))
    Q_star = check_array("Q_star", Q_star, ndim=2)
    if Q_star.shape[1] != N or Q_star.shape[0] < 1:
        raise ValueError(f"Q_star must have shape (T, N={N}) with T >= 1, got {Q_star.shape}")
    if np.any(P < 0) or np.max(np.abs(P.sum(0) - 1)) > atol:
        raise ValueError("P must be column-stochastic: non-negative entries, every column "
                         "summing to 1 (P[i, j] = Pr(next = i | source = j))")
    if np.any(mu <= 0) or abs(mu.sum() - 1) > atol or np.max(np.abs(P @ mu - mu)) > 1e-8:
        raise ValueError("mu must be positive, sum to 1 and be stationary (P mu = mu)")
    if np.any(Q_star < 0) or np.max(np.abs(Q_star.sum(0) - 1)) > atol:
        raise ValueError("every column q^(k) of Q_star must be a distribution over positions "
                         "(non-negative, summing to 1)")
    return Instance(P, mu, Q_star)


def stationary(P: np.ndarray) -> np.ndarray:
    r"""Stationary distribution of a column-stochastic ``P``: solves :math:`(P - I)\mu = 0`,
    :math:`\mathbf 1^\top \mu = 1` by least squares."""
    N = P.shape[0]
    lhs = np.vstack([P - np.eye(N), np.ones((1, N))])
    rhs = np.concatenate([np.zeros(N), [1.0]])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def random_transition(rng: np.random.Generator, N: int) -> np.ndarray:
    r""":math:`P_{ij} \propto U_{ij}^3`, columns normalized to sum 1."""
    P = rng.random((N, N)) ** 3
    return P / P.sum(0)


def random_attention(rng: np.random.Generator, N: int, T: int, Q: int) -> np.ndarray:
    """``Q_star`` ``(T, N)``: each column has ``Q`` positions (uniform, without replacement)
    with weights proportional to ``0.5 + U[0, 1]``."""
    Q_star = np.zeros((T, N))
    for k in range(N):                                     # N columns, once per instance
        support = rng.choice(T, size=Q, replace=False)
        w = 0.5 + rng.random(Q)
        Q_star[support, k] = w / w.sum()
    return Q_star


def check_sizes(N: int, T: int, Q: int) -> tuple[int, int, int]:
    """Validate a task's sizes: vocabulary ``N >= 2``, context ``T >= 1``, ``1 <= Q <= T``."""
    N, T = check_int("N", N, low=2), check_int("T", T, low=1)
    return N, T, check_int("Q", Q, low=1, high=T)


def make_instance(rng: np.random.Generator, N: int, T: int, Q: int) -> Instance:
    """A random SCB instance: ``P`` first, then the columns of ``Q_star``, from ``rng``."""
    N, T, Q = check_sizes(N, T, Q)
    P = random_transition(rng, N)
    return check_instance(P, stationary(P), random_attention(rng, N, T, Q))


def transition_with_stationary(rng: np.random.Generator, mu: np.ndarray, *,
                               tol: float = 1e-14, max_iter: int = 10_000) -> np.ndarray:
    r"""A random column-stochastic ``P`` with a *given* stationary distribution ``mu``.

    Sinkhorn-scales :math:`U^3` to a flow :math:`F \ge 0` with row and column sums :math:`\mu`,
    then :math:`P = F\,\mathrm{diag}(\mu)^{-1}`: columns sum to 1 and :math:`P\mu = F\mathbf 1 = \mu`.
    """
    F = rng.random((len(mu), len(mu))) ** 3
    for _ in range(max_iter):
        F *= (mu / F.sum(1))[:, None]
        F *= mu / F.sum(0)
        if np.max(np.abs(F.sum(1) - mu)) < tol:
            break
    return F / mu


def related_instance(rng: np.random.Generator, inst: Instance, share: str) -> Instance:
    """A task correlated with ``inst`` (same N, T, mu) for transfer learning (paper Sec. 5).

    ``share="Q"``: the same attention ``Q_star`` and a new transition with the same ``mu``;
    ``share="P"``: the same ``P`` and new attention with the same sparsity ``Q``.
    """
    if share == "Q":
        return check_instance(transition_with_stationary(rng, inst.mu), inst.mu, inst.Q_star)
    if share == "P":
        Q = int(np.count_nonzero(inst.Q_star[:, 0]))
        return check_instance(inst.P, inst.mu, random_attention(rng, inst.N, inst.T, Q))
    raise ValueError(f"share must be 'Q' or 'P', got {share!r}")


def sample(rng: np.random.Generator, inst: Instance, B: int):
    """Draw ``B`` samples ``(xs (B, T), k (B,), xo (B,))`` (int arrays), all vectorized.

    Positions ``s`` and outputs ``xo`` come by inverse CDF on the cumulative sums of
    ``Q_star[:, k]`` and ``P[:, xs[b, s]]``.
    """
    B = check_int("B", B, low=1)
    N, T = inst.N, inst.T
    k = rng.choice(N, size=B, p=inst.mu)
    xs = rng.choice(N, size=(B, T), p=inst.mu)
    cdf_pos = np.cumsum(inst.Q_star, axis=0)[:, k].T                  # (B, T)
    s = np.minimum(np.sum(rng.random((B, 1)) > cdf_pos, axis=1), T - 1)
    src = xs[np.arange(B), s]
    cdf_out = np.cumsum(inst.P, axis=0)[:, src].T                     # (B, N)
    xo = np.minimum(np.sum(rng.random((B, 1)) > cdf_out, axis=1), N - 1)
    return xs, k, xo
