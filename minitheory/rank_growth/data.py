r"""Inputs, planted teachers and small initializations for the rank-growth toys.

Gaussian sequences :math:`X_s \in \mathbb R^{n \times d}` with i.i.d. :math:`N(0,1)` entries
(full-batch gradient descent on a fixed set), targets from a planted teacher head of the same
form, and the paper's small initialization of scale :math:`\alpha` (Sec. 3, "small initialization").
Two diagonal toys: the small fast default (:func:`diagonal_toy`, a project choice) and the
setting of the paper's App. A (:func:`paper_toy`: 1000 samples of 10 tokens in dimension 50).
"""
from __future__ import annotations

import numpy as np

from ..validation import check_array, check_float, check_int
from .model import DIAG_KEYS, FULL_KEYS, head_forward

#: Diagonal teacher of the toy: two K/Q and three V/O directions.
A_STAR = (2.0, -1.5, 0.0, 0.0)
B_STAR = (1.0, -0.7, 0.4, 0.0)
#: The paper's App. A toy (arXiv:2306.07042 v2): 1000 fixed samples X in R^{10 x 50}.
PAPER_N_SEQ, PAPER_N_TOKENS, PAPER_D = 1000, 10, 50
#: Nonzero entries of the sparse random teacher of :func:`paper_toy` (read off the paper's Fig. 2
#: of v2: about 9 entries of a and 6 of b leave zero).
PAPER_NNZ_A, PAPER_NNZ_B = 9, 6
#: Singular values of the planted low-rank teacher of the full head: rank 2 and rank 3.
M_SINGULAR = (1.2, 1.0)
N_SINGULAR = (1.0, 0.8, 0.6)


def gaussian_inputs(rng: np.random.Generator, n_seq: int, n_tokens: int, d: int) -> np.ndarray:
    """``X`` of shape ``(n_seq, n_tokens, d)``, i.i.d. standard normal entries."""
    n_seq = check_int("n_seq", n_seq, low=1)
    n_tokens = check_int("n_tokens", n_tokens, low=1)
    d = check_int("d", d, low=1)
    return rng.standard_normal((n_seq, n_tokens, d))


def diagonal_targets(X: np.ndarray, a_star, b_star) -> np.ndarray:
    r"""Targets :math:`Y_s = f_{a^*, b^*}(X_s)` of the diagonal teacher; ``(N, n, d)``."""
    d = X.shape[-1]
    a_star = check_array("a_star", a_star, shape=(d,))
    b_star = check_array("b_star", b_star, shape=(d,))
    out, _ = head_forward(np.diag(a_star)[None], np.diag(b_star)[None], X)
    return out[0]


def planted_lowrank_teacher(rng: np.random.Generator, d: int, d_out: int | None = None,
                            m_singular=M_SINGULAR, n_singular=N_SINGULAR):
    r"""Planted products :math:`M^* = U_K \mathrm{diag}(\sigma^M) U_Q^\top` and
    :math:`N^* = U_V \mathrm{diag}(\sigma^N) U_O^\top`.

    Each ``U`` holds the first ``k`` columns of the orthogonal factor of a QR decomposition of a
    Gaussian ``(d, d)`` matrix (``(d_out, d_out)`` for ``U_O``), drawn in the order
    ``U_K, U_Q, U_V, U_O``. Returns ``M* (d, d)``, ``N* (d, d_out)``.
    """
    d = check_int("d", d, low=1)
    d_out = d if d_out is None else check_int("d_out", d_out, low=1)
    sm = check_array("m_singular", m_singular, ndim=1)
    sn = check_array("n_singular", n_singular, ndim=1)
    if len(sm) > d or len(sn) > min(d, d_out):
        raise ValueError(f"m_singular (len {len(sm)}) must fit in d={d} and n_singular "
                         f"(len {len(sn)}) in min(d, d_out)={min(d, d_out)}")

    def basis(size, k):
        return np.linalg.qr(rng.standard_normal((size, size)))[0][:, :k]

    U_K, U_Q, U_V = basis(d, len(sm)), basis(d, len(sm)), basis(d, len(sn))
    U_O = basis(d_out, len(sn))
    return U_K @ np.diag(sm) @ U_Q.T, U_V @ np.diag(sn) @ U_O.T


def full_targets(X: np.ndarray, M_star: np.ndarray, N_star: np.ndarray) -> np.ndarray:
    r"""Targets :math:`Y_s = \mathrm{smax}(X_s M^* X_s^\top) X_s N^*`; ``(N, n, d_out)``."""
    out, _ = head_forward(M_star[None], N_star[None], X)
    return out[0]


def check_alphas(alphas) -> np.ndarray:
    """Validate a grid of init scales: a non-empty 1-D array with every entry in ``(0, 1)``."""
    alphas = check_array("alphas", alphas, ndim=1)
    if alphas.size == 0:
        raise ValueError("alphas must hold at least one init scale")
    for i, al in enumerate(alphas):
        check_float(f"alphas[{i}]", al, low=0.0, high=1.0, low_open=True, high_open=True)
    return alphas


def init_diagonal(rng: np.random.Generator, d: int, alphas) -> dict:
    r"""Small untied initialization :math:`w_* = \alpha\, u^0_*`, :math:`u^0_* \sim N(0, I_d)`.

    One direction per factor, drawn as ``rng.standard_normal((4, d))`` in the order
    ``(w_K, w_Q, w_V, w_O)`` and shared by every ``alpha``: the runs differ only in scale.
    Returns a dict of ``(R, d)`` arrays, ``R = len(alphas)``, each ``alpha`` in ``(0, 1)``.
    """
    d = check_int("d", d, low=1)
    alphas = check_alphas(alphas)
    u0 = rng.standard_normal((4, d))
    return {k: alphas[:, None] * u0[i] for i, k in enumerate(DIAG_KEYS)}


def init_full(rng: np.random.Generator, d: int, d_h: int, d_out: int, alphas) -> dict:
    r"""Small initialization of the full head: entries :math:`\alpha \cdot N(0, 1/d)`.

    Four draws, ``W_K, W_Q, W_V`` of shape ``(d, d_h)`` then ``W_O`` of shape ``(d_out, d_h)``,
    shared by every ``alpha``. Here ``alpha`` may be 1 (the "large init" reference run).
    Returns a dict of ``(R, ., .)`` arrays.
    """
    d, d_h, d_out = (check_int(n, v, low=1) for n, v in (("d", d), ("d_h", d_h), ("d_out", d_out)))
    alphas = check_array("alphas", alphas, ndim=1)
    if alphas.size == 0 or np.any(alphas <= 0) or np.any(alphas > 1):
        raise ValueError(f"alphas must be a non-empty list of values in (0, 1], got {alphas}")
    shapes = {"W_K": (d, d_h), "W_Q": (d, d_h), "W_V": (d, d_h), "W_O": (d_out, d_h)}
    draws = {k: rng.standard_normal(shapes[k]) / np.sqrt(d) for k in FULL_KEYS}
    return {k: alphas[:, None, None] * draws[k] for k in FULL_KEYS}


def sparse_diagonal_teacher(rng: np.random.Generator, d: int, nnz_a: int, nnz_b: int):
    r"""A random sparse diagonal teacher :math:`(a^*, b^*)`, each ``(d,)`` [project choice].

    The supports are uniform random subsets, ``rng.choice(d, nnz_a, replace=False)`` then
    ``rng.choice(d, nnz_b, replace=False)``; the nonzero values are
    ``rng.standard_normal(nnz_a) / sqrt(d)`` then ``rng.standard_normal(nnz_b) / sqrt(d)``.
    The paper's App. A says only "a randomly-generated teacher model that is also an attention
    head with diagonal weights"; its Fig. 2 (v2) starts near loss 0.09 with ~9 entries of ``a``
    and ~6 of ``b`` ever leaving zero. A dense N(0, 1) teacher on that data starts at loss ~1.2,
    so the teacher is sparse and small; the ``1/sqrt(d)`` scale is the usual fan-in scale of an
    init and puts ``L(0)`` at 0.02-0.11 for 9 / 6 nonzeros (0.089 with ``paper_toy(0)``).
    """
    d = check_int("d", d, low=1)
    nnz_a = check_int("nnz_a", nnz_a, low=0, high=d)
    nnz_b = check_int("nnz_b", nnz_b, low=1, high=d)
    a_star, b_star = np.zeros(d), np.zeros(d)
    ia = rng.choice(d, nnz_a, replace=False)
    ib = rng.choice(d, nnz_b, replace=False)
    a_star[ia] = rng.standard_normal(nnz_a) / np.sqrt(d)
    b_star[ib] = rng.standard_normal(nnz_b) / np.sqrt(d)
    return a_star, b_star


def paper_toy(seed: int = 0, n_seq: int = PAPER_N_SEQ, n_tokens: int = PAPER_N_TOKENS,
              d: int = PAPER_D, nnz_a: int = PAPER_NNZ_A, nnz_b: int = PAPER_NNZ_B):
    r"""The setting of the paper's App. A (arXiv:2306.07042 v2, Fig. 2): ``n_seq`` fixed samples
    :math:`X \in \mathbb R^{n \times d}` with i.i.d. N(0, 1) entries and a random sparse diagonal
    teacher (:func:`sparse_diagonal_teacher`).

    ``(rX, rT) = default_rng(seed).spawn(2)``: ``X`` from ``rX``, the teacher from ``rT``.
    Returns ``X (n_seq, n_tokens, d)``, ``Y``, ``a*``, ``b*``. With the defaults and seed 0,
    L(0) = 0.089.
    """
    rX, rT = np.random.default_rng(check_int("seed", seed, low=0)).spawn(2)
    X = gaussian_inputs(rX, n_seq, n_tokens, d)
    a_star, b_star = sparse_diagonal_teacher(rT, d, nnz_a, nnz_b)
    return X, diagonal_targets(X, a_star, b_star), a_star, b_star


def diagonal_toy(seed: int, n_seq: int, n_tokens: int, d: int, a_star=A_STAR, b_star=B_STAR):
    """The diagonal toy: ``X = default_rng(seed).standard_normal((n_seq, n_tokens, d))`` and the
    teacher's targets ``Y`` [project choice: a small fast toy]. With the defaults and seed 0,
    L(0) = 6.881."""
    X = gaussian_inputs(np.random.default_rng(seed), n_seq, n_tokens, d)
    return X, diagonal_targets(X, a_star, b_star)


def full_toy(seed: int, n_seq: int, n_tokens: int, d: int, *, d_out: int | None = None,
             m_singular=M_SINGULAR, n_singular=N_SINGULAR):
    r"""The non-diagonal toy: ``(rX, rT) = default_rng(seed).spawn(2)``; ``X`` from ``rX``, the
    planted teacher (:func:`planted_lowrank_teacher`) from ``rT``.

    The teacher has :math:`\mathrm{rank}\,M^* =` ``len(m_singular)`` and
    :math:`\mathrm{rank}\,N^* =` ``len(n_singular)`` with exactly those nonzero singular values
    (each > 0); ``d_out`` (default ``d``) is the output width of :math:`N^* \in \mathbb R^{d
    \times d_{out}}`. Returns ``X (n_seq, n_tokens, d)``, ``Y (n_seq, n_tokens, d_out)``, ``M*``,
    ``N*``; with the defaults (256, 8, 6), rank 2 / rank 3 and seed 0, L(0) = 3.275.
    """
    d = check_int("d", d, low=1)
    d_out = d if d_out is None else check_int("d_out", d_out, low=1)
    for name, sv in (("m_singular", m_singular), ("n_singular", n_singular)):
        sv = check_array(name, sv, ndim=1)
        if sv.size == 0 or np.any(sv <= 0):
            raise ValueError(f"{name} must hold at least one singular value, each > 0 (its "
                             f"length is the teacher's rank), got {list(sv)}")
    rX, rT = np.random.default_rng(seed).spawn(2)
    X = gaussian_inputs(rX, n_seq, n_tokens, d)
    M_star, N_star = planted_lowrank_teacher(rT, d, d_out, m_singular, n_singular)
    return X, full_targets(X, M_star, N_star), M_star, N_star
