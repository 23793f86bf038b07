r"""Data made of orthogonal patterns (Li, Wang, Zhang, Liu, Chen 2024, Sec. 2; data model of
Li, Wang, Liu, Chen, ICLR 2023).

Patterns :math:`\mu_1, \dots, \mu_M \in \mathbb R^d` are orthonormal. :math:`\mu_1` (label +1)
and :math:`\mu_2` (label -1) are label-relevant; :math:`\mu_3..\mu_M` are label-irrelevant.
A sample is :math:`L` noisy tokens :math:`x_l = \mu_{j(l)} + z_l`, :math:`z_l \sim N(0, \sigma^2 I_d)`.
Its label is the majority vote between the :math:`\mu_1` and :math:`\mu_2` tokens.

Generator [project choice]: draw :math:`y \sim \mathrm{Unif}\{\pm 1\}`, then place ``n_rel``
tokens of the label's pattern (the label-relevant set :math:`S_*`), ``n_conf`` of the other
discriminative pattern (the confusion set :math:`S_\#`) and ``L - n_rel - n_conf`` irrelevant
tokens with patterns uniform on :math:`\{3..M\}`, in a random order per sample. Then
:math:`\alpha_* = n_{rel}/L`, :math:`\alpha_\# = n_{conf}/L`, and ``n_rel > n_conf`` rules out ties.

The patterns are the standard basis :math:`\mu_j = e_j` by default [project choice]. Any
orthonormal set trains the same in law: rotating the tokens by an orthogonal :math:`\Omega`
maps the initialization ``W_Q = W_K = 0.5 I``, ``W_V = I`` to itself under
:math:`W \mapsto \Omega W \Omega^\top` and the Gaussian :math:`W_O` to :math:`W_O \Omega^\top`, which has
the same law, so losses, update spectra and row norms have the same distribution.
``DataConfig(pattern_set="random")`` draws a random orthonormal set, which shows that the
low-rank updates align with :math:`\mu_1, \mu_2` and not with coordinate axes.

Code indices are 0-based: pattern 0 is :math:`\mu_1`, pattern 1 is :math:`\mu_2`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import check_float, check_int, check_types

PATTERN_SETS = ("standard", "random")


@dataclass(frozen=True)
class DataConfig:
    r"""Sizes of the pattern data [project choice: d = 20, M = 10, L = 20, n_rel = 8 (alpha_* =
    0.4), n_conf = 2 (alpha_# = 0.1), sigma = 0.05, so every noisy token stays nearest its own
    pattern].

    ``d`` dimension, ``M`` patterns (``2 <= M <= d``), ``L`` tokens per sample, ``n_rel``
    label-pattern tokens, ``n_conf`` tokens of the other discriminative pattern
    (``0 <= n_conf < n_rel``, ``n_rel + n_conf <= L``), ``sigma`` noise standard deviation.
    ``pattern_set``: ``"standard"`` (:math:`\mu_j = e_j`) or ``"random"`` (a random
    orthonormal set drawn from ``np.random.default_rng(pattern_seed)``, the same for every
    run that uses this config); see :func:`patterns`.
    """

    d: int = 20
    M: int = 10
    L: int = 20
    n_rel: int = 8
    n_conf: int = 2
    sigma: float = 0.05
    pattern_set: str = "standard"
    pattern_seed: int = 0

    def __post_init__(self):
        check_types(self)
        check_int("d", self.d, low=1)
        check_int("M", self.M, low=2, high=self.d)
        check_int("L", self.L, low=1)
        check_int("n_rel", self.n_rel, low=1, high=self.L)
        check_int("n_conf", self.n_conf, low=0, high=self.n_rel - 1)
        if self.n_rel + self.n_conf > self.L:
            raise ValueError(f"n_rel + n_conf must be <= L={self.L} (token fractions must fit in "
                             f"a sample), got n_rel={self.n_rel}, n_conf={self.n_conf}")
        if self.n_rel + self.n_conf < self.L and self.M < 3:
            raise ValueError(f"M must be >= 3 when samples have irrelevant tokens "
                             f"(L - n_rel - n_conf = {self.L - self.n_rel - self.n_conf}), got M={self.M}")
        check_float("sigma", self.sigma, low=0.0)
        if self.pattern_set not in PATTERN_SETS:
            raise ValueError(f"pattern_set must be one of {PATTERN_SETS}, got {self.pattern_set!r}")
        check_int("pattern_seed", self.pattern_seed, low=0)


def patterns(cfg: DataConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    r"""Orthonormal patterns :math:`\mu_1..\mu_M` as rows, ``(M, d)``.

    A random orthonormal set (the first ``M`` columns of the Q factor of a Gaussian ``(d, d)``
    matrix) drawn from ``rng`` if one is given, else from ``default_rng(cfg.pattern_seed)`` if
    ``cfg.pattern_set == "random"``; otherwise the standard basis :math:`\mu_j = e_j`.
    """
    if rng is None:
        if cfg.pattern_set == "standard":
            return np.eye(cfg.M, cfg.d)
        rng = np.random.default_rng(cfg.pattern_seed)
    return np.linalg.qr(rng.standard_normal((cfg.d, cfg.d)))[0][:, :cfg.M].T.copy()


def sample(rng: np.random.Generator, n: int, cfg: DataConfig, mu: np.ndarray | None = None):
    """Draw ``n`` samples with the patterns ``mu`` ``(M, d)`` (default :func:`patterns` of ``cfg``).

    Returns
    -------
    X : ``(n, L, d)`` tokens.
    y : ``(n,)`` labels in {-1, +1}.
    pattern : ``(n, L)`` int, the 0-based pattern index of every token.
    rel : ``(n, L)`` bool, the label-relevant set :math:`S_*` (tokens of the label's pattern).
    """
    n = check_int("n", n, low=1)
    mu = patterns(cfg) if mu is None else mu
    if mu.shape != (cfg.M, cfg.d):
        raise ValueError(f"mu must have shape (M, d) = {(cfg.M, cfg.d)}, got {mu.shape}")
    y = rng.choice(np.array([-1, 1]), size=n)
    own = np.where(y > 0, 0, 1)                                    # pattern of the label
    n_irr = cfg.L - cfg.n_rel - cfg.n_conf
    pattern = np.concatenate([np.repeat(own[:, None], cfg.n_rel, axis=1),
                              np.repeat(1 - own[:, None], cfg.n_conf, axis=1),
                              rng.integers(2, max(cfg.M, 3), size=(n, n_irr))], axis=1)
    order = np.argsort(rng.random((n, cfg.L)), axis=1)             # one permutation per sample
    pattern = np.take_along_axis(pattern, order, axis=1)
    X = mu[pattern] + cfg.sigma * rng.standard_normal((n, cfg.L, cfg.d))
    return X, y.astype(np.float64), pattern, pattern == own[:, None]


def majority_label(pattern: np.ndarray) -> np.ndarray:
    """The label the data model assigns: +1 if more tokens of pattern 0 than of 1, else -1."""
    return np.where(np.sum(pattern == 0, axis=-1) > np.sum(pattern == 1, axis=-1), 1.0, -1.0)
