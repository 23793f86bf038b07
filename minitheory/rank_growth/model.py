r"""The attention heads of Boix-Adsera, Littwin, Abbe, Bengio, Susskind (2023), Sec. 3.

One softmax attention head, written over the two products it depends on,

.. math::
    f(X) = \mathrm{smax}(X M X^\top)\, X N, \qquad M = W_K W_Q^\top,\quad N = W_V W_O^\top,

softmax row-wise over the ``n`` key positions, **no** :math:`1/\sqrt d` factor. The loss is the
squared error averaged over sequences,

.. math:: L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2 .

Reading order: :func:`head_forward` / :func:`head_backward` (the core, over the products), then
the two parametrizations:

* **diagonal head** (the paper's network class :math:`f(x; u \odot v)`): :math:`W_* = \mathrm{diag}(w_*)`,
  so :math:`M = \mathrm{diag}(a)`, :math:`N = \mathrm{diag}(b)` with :math:`a = w_K \odot w_Q`,
  :math:`b = w_V \odot w_O`; keys ``"w_K", "w_Q", "w_V", "w_O"``, each ``(d,)`` or ``(R, d)``.
  Its loss and gradients (:func:`ab_loss_and_grads_unchecked`) are the core's at these diagonal products,
  written in an O(d) form over the data arrays of :func:`diagonal_data` (computed once per
  training run); a test checks it against the core;
* **full head**: keys ``"W_K", "W_Q", "W_V"`` ``(d, d_h)``, ``"W_O"`` ``(d_out, d_h)``, each with an
  optional leading run axis ``R``.

A leading run axis ``R`` trains ``R`` independent models at once (e.g. the grid of init scales);
the loss is then one value per run and each run's gradient is that of its own loss.

**Layout (for speed; the equations do not depend on it).** NumPy multiplies a stack of small
matrices one BLAS call per matrix, so the cores stack the runs *inside* each sequence: the
attention arrays are ``(N_seq, n R, n)``, one ``(n R, n)`` matrix per sequence holding every run's
``(n, n)`` block, and each product with ``X_s`` is one call per sequence instead of one per
(run, sequence). In the backward pass the softmax VJP's row term :math:`\langle G_S, S\rangle`
rides along as an extra column: with :math:`X_1 = [X, 1]` (:func:`augment`),
:math:`G_S - \langle G_S, S\rangle\mathbf 1^\top = [F, -\langle G_S, S\rangle] X_1^\top` is one
product. The diagonal head goes further and never normalizes the softmax at full size: with the
numerator :math:`E = \exp(Z - c)` (:func:`~minitheory.primitives.shifted_exp`), one product
:math:`E X_1 = [E X, E\mathbf 1]` gives :math:`S X` after dividing the small ``(n, d)`` part by
the row sums (its ``(n, d)`` arrays are kept transposed, so that division runs over long rows).

Public functions validate their inputs; the ``_``-prefixed cores skip validation and are what the
training loops call after validating once.
"""
from __future__ import annotations

import numpy as np

from ..primitives import shifted_exp, softmax
from ..validation import check_array

DIAG_KEYS = ("w_K", "w_Q", "w_V", "w_O")
FULL_KEYS = ("W_K", "W_Q", "W_V", "W_O")


# --------------------------------------------------------------------------------------------
# The core over the products (M, N)
# --------------------------------------------------------------------------------------------
def augment(X: np.ndarray) -> np.ndarray:
    r"""``X1 = [X, 1]`` ``(N_seq, n, d+1)``: for any ``E``, :math:`E X_1 = [E X,\ E \mathbf 1]`.

    One product then gives a softmax-weighted sum of the rows of ``X`` and its normalizer.
    """
    return np.concatenate([X, np.ones(X.shape[:-1] + (1,))], axis=-1)


def head_forward(M: np.ndarray, Nm: np.ndarray, X: np.ndarray, X1: np.ndarray | None = None):
    r"""Attention head output :math:`f(X) = \mathrm{smax}(X M X^\top)\, X N` for ``R`` runs.

    .. math:: Z = X M X^\top,\quad S = \mathrm{smax}(Z),\quad f = (S X) N .

    Parameters
    ----------
    M : ``(R, d, d)`` key-query product :math:`W_K W_Q^\top`.
    Nm : ``(R, d, d_out)`` value-output product :math:`W_V W_O^\top`.
    X : ``(N_seq, n, d)`` input sequences (shared by all runs).
    X1 : optional :func:`augment` ``(X)`` (for the backward pass), to skip recomputing it.

    Returns
    -------
    out : ``(R, N_seq, n, d_out)``
    cache : tuple for :func:`head_backward`.
    """
    R, d, _ = M.shape
    Ns, n, _ = X.shape
    X1 = augment(X) if X1 is None else X1
    XM = X.reshape(Ns * n, d) @ M.swapaxes(0, 1).reshape(d, R * d)  # (N n, R d)  rows of X M_r
    Z = XM.reshape(Ns, n * R, d) @ X.swapaxes(-1, -2)   # (N, n R, n)  row (i, r): (X M_r X^T)_i
    S = softmax(Z, out=Z)                               #              smax(X M X^T)
    SX = S @ X                                          # (N, n R, d)
    SXr = SX.reshape(Ns * n, R, d).swapaxes(0, 1)       # (R, N n, d)   a view: one matrix per run
    out = (SXr @ Nm).reshape(R, Ns, n, -1)              # (R, N, n, d_out)
    return out, (X, X1, S, SX, Nm)


def head_backward(cache, dout: np.ndarray):
    r"""Gradients of the products from the cotangent ``dout`` of the output (Sec. 3, Eq. for GD).

    .. math::
        \frac{\partial L}{\partial N} = \sum_s (S X)^\top \bar f,\quad
        G_S = \bar f (X N)^\top = F X^\top\ (F = \bar f N^\top),\quad
        G_Z = S \odot (G_S - \langle G_S, S\rangle_{\rm row}),\quad
        \frac{\partial L}{\partial M} = \sum_s X^\top G_Z X,

    where the row term is :math:`\langle G_S, S\rangle_i = \sum_k (F X^\top)_{ik} S_{ik}
    = \sum_b F_{ib} (S X)_{ib}`, so :math:`G_S - \langle G_S, S\rangle = [F, -\langle G_S, S\rangle]
    X_1^\top` is one product.

    Parameters
    ----------
    cache : from :func:`head_forward`.
    dout : ``(R, N_seq, n, d_out)`` cotangent of the output (already carries the ``1/N_seq``).

    Returns
    -------
    dM : ``(R, d, d)``;  dN : ``(R, d, d_out)``.
    """
    X, X1, S, SX, Nm = cache
    R, Ns, n, d_out = dout.shape
    d = X.shape[-1]
    dout = dout.reshape(R, Ns * n, d_out)
    SX = SX.reshape(Ns * n, R, d)                       # rows (s, i), then runs
    dN = SX.swapaxes(0, 1).swapaxes(-1, -2) @ dout      # (R, d, d_out)
    U = np.empty((Ns * n, R, d + 1))                    # [F, -<G_S, S>]
    np.matmul(dout, Nm.swapaxes(-1, -2), out=U[..., :d].swapaxes(0, 1))    # F = f N^T
    np.einsum("mrb,mrb->mr", U[..., :d], SX, out=U[..., d])                # <G_S, S>
    np.negative(U[..., d], out=U[..., d])
    G_Z = U.reshape(Ns, n * R, d + 1) @ X1.swapaxes(-1, -2)   # (N, n R, n) = G_S - <G_S, S>
    G_Z *= S                                            #               the softmax VJP
    H = (G_Z @ X).reshape(Ns * n, R * d)                # (N n, R d)    rows of G_Z X
    dM = (X.reshape(Ns * n, d).T @ H).reshape(d, R, d).swapaxes(0, 1)      # (R, d, d)
    return dM, dN


def products_loss_and_grads_unchecked(M, Nm, X, Y, X1=None):
    r"""Loss per run :math:`L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2` ``(R,)``
    and its gradients with respect to ``M`` and ``N`` (no checks)."""
    resid, cache = head_forward(M, Nm, X, X1)
    resid -= Y                                                  # f - Y, (R, N, n, d_out)
    Ns = X.shape[0]
    loss = 0.5 * np.einsum("rsij,rsij->r", resid, resid) / Ns
    resid /= Ns                                                 # cotangent of f
    dM, dN = head_backward(cache, resid)
    return loss, dM, dN


# --------------------------------------------------------------------------------------------
# Diagonal head: M = diag(a), N = diag(b)
# --------------------------------------------------------------------------------------------
def diag_products(params: dict) -> tuple[np.ndarray, np.ndarray]:
    r"""The products :math:`a = w_K \odot w_Q` and :math:`b = w_V \odot w_O` (shape of the inputs)."""
    return params["w_K"] * params["w_Q"], params["w_V"] * params["w_O"]


def diagonal_data(X: np.ndarray, Y: np.ndarray, runs: int) -> dict:
    r"""The data arrays :func:`ab_loss_and_grads_unchecked` works with, for ``runs`` runs (computed once).

    * ``"XX"`` ``(N, d, n n)``: the pair products ``XX[s, j, (i, k)]`` :math:`= X_{s,ij} X_{s,kj}`.
      For the diagonal head the logits and the key-query gradient are products with it,
      :math:`Z = a^\top XX` and :math:`\partial L/\partial a = G_Z\, XX^\top`;
    * ``"X1t"`` ``(N, d+1, n)``: :func:`augment` ``(X)`` transposed;
    * ``"Yt"`` ``(N, d, runs n)``: ``Yt[s, j, (r, i)] = Y[s, i, j]``, the targets in the layout of
      the outputs, repeated for every run.
    """
    Ns, n, d = X.shape
    XX = np.einsum("sij,skj->sjik", X, X).reshape(Ns, d, n * n)
    Yt = np.broadcast_to(Y.swapaxes(-1, -2)[:, :, None, :], (Ns, d, runs, n))
    return {"XX": XX, "X1t": np.ascontiguousarray(augment(X).swapaxes(-1, -2)),
            "Yt": Yt.reshape(Ns, d, runs * n)}


def ab_loss_and_grads_unchecked(a, b, data):
    r"""Loss :math:`\tilde L(a, b)` per run and its gradients for ``a, b`` of shape ``(R, d)``.

    The diagonal case of :func:`head_forward` / :func:`head_backward`, in its own O(d) form over
    the arrays of :func:`diagonal_data` (``data``, prepared for ``R`` runs):

    .. math::
        Z_{ik} = \sum_j a_j X_{ij}X_{kj},\ S = \mathrm{smax}(Z),\ f_{ij} = b_j (SX)_{ij};\quad
        \frac{\partial L}{\partial b_j} = \sum_{s,i} \bar f_{ij}(SX)_{ij},\
        G_S = \bar f\,\mathrm{diag}(b) X^\top,\ G_Z = S \odot (G_S - \langle G_S, S\rangle_{\rm row}),\
        \frac{\partial L}{\partial a_j} = \sum_{s,i,k} G_Z[i,k] X_{ij}X_{kj},

    with :math:`\langle G_S, S\rangle_i = \sum_j \bar f_{ij} b_j (SX)_{ij}`. The ``(n, d)``
    arrays are kept transposed, ``(N, d, R n)``, so that every elementwise step runs over long
    contiguous rows; the attention arrays are ``(N, R n, n)`` (runs stacked in each sequence).
    """
    XX, X1t, Yt = data["XX"], data["X1t"], data["Yt"]
    R, d = a.shape
    Ns, n = X1t.shape[0], X1t.shape[-1]
    if Yt.shape[-1] != R * n:
        raise ValueError(f"data was prepared for {Yt.shape[-1] // n} runs, got {R}")
    Z = (a @ XX).reshape(Ns, R * n, n)                  # (N, R n, n)  logits, row (r, i)
    E = shifted_exp(Z, out=Z)                           #              softmax numerator
    T = X1t @ E.swapaxes(-1, -2)                        # (N, d+1, R n) = [E X, E 1]^T
    r = 1.0 / T[:, d]                                   # (N, R n)      1 / row sums
    SX = T[:, :d] * r[:, None]                          # (N, d, R n)   (S X)^T
    brow = np.repeat(b.T, n, axis=1)                    # (d, R n)      b_j at every (r, i)
    resid = SX * brow
    resid -= Yt                                         # (f - Y)^T
    loss = 0.5 * np.einsum("sjk,sjk->k", resid, resid).reshape(R, n).sum(-1) / Ns
    resid /= Ns                                         # cotangent of f
    P = resid * SX
    gb = P.sum(0).reshape(d, R, n).sum(-1).T            # (R, d)
    U = np.empty((Ns, d + 1, R * n))                    # [f diag(b), -<G_S, S>]^T / row sums
    np.multiply(resid, brow, out=U[:, :d])
    P *= brow
    np.sum(P, axis=1, out=U[:, d])                      # <G_S, S>_i = sum_j f_ij b_j (SX)_ij
    np.negative(U[:, d], out=U[:, d])
    U *= r[:, None]
    G_Z = U.swapaxes(-1, -2) @ X1t                      # (N, R n, n) = (G_S - <G_S, S>) / E1
    G_Z *= E                                            #               = S (G_S - <G_S, S>)
    ga = (G_Z.reshape(Ns, R, n * n) @ XX.swapaxes(-1, -2)).sum(0)          # (R, d)
    return loss, ga, gb


def diag_loss_and_grads_unchecked(params, data):
    r"""Unchecked :func:`loss_and_grads` for parameters with a run axis ``(R, d)``, over the
    arrays of :func:`diagonal_data`: :math:`\nabla w_K = w_Q \odot \partial_a \tilde L` etc."""
    a, b = diag_products(params)
    loss, ga, gb = ab_loss_and_grads_unchecked(a, b, data)
    grads = {"w_K": params["w_Q"] * ga, "w_Q": params["w_K"] * ga,
             "w_V": params["w_O"] * gb, "w_O": params["w_V"] * gb}
    return loss, grads


def loss_and_grads(params: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss and hand-written gradients of the diagonal attention head (paper Sec. 3-4).

    .. math::
        Z_{ik} = \sum_j a_j X_{ij} X_{kj},\quad S = \mathrm{smax}(Z),\quad f(X)_{ij} = b_j (S X)_{ij},
        \quad L = \tfrac12 \operatorname{mean}_s \|f(X_s) - Y_s\|_F^2,

    and by the chain rule through :math:`a = w_K \odot w_Q`, :math:`b = w_V \odot w_O`:

    .. math::
        \nabla w_K = w_Q \odot \partial_a \tilde L,\ \nabla w_Q = w_K \odot \partial_a \tilde L,\
        \nabla w_V = w_O \odot \partial_b \tilde L,\ \nabla w_O = w_V \odot \partial_b \tilde L .

    Parameters
    ----------
    params : dict with keys ``"w_K", "w_Q", "w_V", "w_O"``, each ``(d,)`` or ``(R, d)``.
    X : ``(N_seq, n, d)`` inputs.  Y : ``(N_seq, n, d)`` targets.

    Returns
    -------
    loss : float, or ``(R,)`` with a run axis.
    grads : dict with the keys and shapes of ``params``.
    """
    runs, squeeze = _check_params(params, DIAG_KEYS, kind="diagonal")
    d = runs["w_K"].shape[-1]
    X, Y = _check_XY(X, Y, d, d)
    loss, grads = diag_loss_and_grads_unchecked(runs, diagonal_data(X, Y, runs["w_K"].shape[0]))
    return _unrun(loss, grads, squeeze)


def loss_and_grads_ab(w: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss :math:`\tilde L(w)` and its gradient in the product space ``w = (a, b)``.

    This is the function Algorithm 1 (the limiting incremental algorithm) works with.
    ``w`` has keys ``"a", "b"``, each ``(d,)`` or ``(R, d)``; returns ``(loss, {"a": .., "b": ..})``.
    """
    runs, squeeze = _check_params(w, ("a", "b"), kind="product")
    d = runs["a"].shape[-1]
    X, Y = _check_XY(X, Y, d, d)
    loss, ga, gb = ab_loss_and_grads_unchecked(runs["a"], runs["b"], diagonal_data(X, Y, runs["a"].shape[0]))
    return _unrun(loss, {"a": ga, "b": gb}, squeeze)


# --------------------------------------------------------------------------------------------
# Full head: M = W_K W_Q^T, N = W_V W_O^T
# --------------------------------------------------------------------------------------------
def full_products(params: dict) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`M = W_K W_Q^\top` ``(.., d, d)`` and :math:`N = W_V W_O^\top` ``(.., d, d_out)``."""
    return (params["W_K"] @ params["W_Q"].swapaxes(-1, -2),
            params["W_V"] @ params["W_O"].swapaxes(-1, -2))


def full_loss_and_grads_unchecked(params, X, Y, X1=None):
    r"""Unchecked :func:`full_loss_and_grads` for parameters with a run axis (``X1``: optional
    :func:`augment` ``(X)``): :math:`\nabla W_K = \partial_M L\, W_Q` etc."""
    M, Nm = full_products(params)
    loss, dM, dN = products_loss_and_grads_unchecked(M, Nm, X, Y, X1)
    grads = {"W_K": dM @ params["W_Q"], "W_Q": dM.swapaxes(-1, -2) @ params["W_K"],
             "W_V": dN @ params["W_O"], "W_O": dN.swapaxes(-1, -2) @ params["W_V"]}
    return loss, grads


def full_loss_and_grads(params: dict, X: np.ndarray, Y: np.ndarray):
    r"""Loss and hand-written gradients of the full softmax attention head (paper Sec. 5).

    .. math::
        \nabla W_K = \tfrac{\partial L}{\partial M} W_Q,\ \nabla W_Q = \tfrac{\partial L}{\partial M}^\top W_K,\
        \nabla W_V = \tfrac{\partial L}{\partial N} W_O,\ \nabla W_O = \tfrac{\partial L}{\partial N}^\top W_V,

    with :math:`\partial L/\partial M`, :math:`\partial L/\partial N` from :func:`head_backward`.

    Parameters
    ----------
    params : keys ``"W_K", "W_Q", "W_V"`` of shape ``(d, d_h)`` and ``"W_O"`` of shape
        ``(d_out, d_h)``, each with an optional leading run axis ``R``.
    X : ``(N_seq, n, d)``.  Y : ``(N_seq, n, d_out)``.

    Returns
    -------
    loss : float or ``(R,)``;  grads : dict with the keys and shapes of ``params``.
    """
    runs, squeeze = _check_params(params, FULL_KEYS, kind="full")
    d, d_h = runs["W_K"].shape[-2:]
    d_out = runs["W_O"].shape[-2]
    for k in ("W_Q", "W_V"):
        if runs[k].shape[-2:] != (d, d_h):
            raise ValueError(f"params[{k!r}] must have shape (..., {d}, {d_h}) like W_K, "
                             f"got {runs[k].shape}")
    if runs["W_O"].shape[-1] != d_h:
        raise ValueError(f"params['W_O'] must have shape (..., d_out, {d_h}), got {runs['W_O'].shape}")
    X, Y = _check_XY(X, Y, d, d_out)
    loss, grads = full_loss_and_grads_unchecked(runs, X, Y)
    return _unrun(loss, grads, squeeze)


# --------------------------------------------------------------------------------------------
# Input checks shared by the public entry points
# --------------------------------------------------------------------------------------------
def _check_params(params, keys, *, kind):
    """Validate a parameter dict; return it with a run axis, and whether to squeeze it off."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict with keys {keys}, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"params is missing keys {missing} (the {kind} head needs {list(keys)})")
    vec = kind in ("diagonal", "product")
    ndims = (1, 2) if vec else (2, 3)
    runs = {k: check_array(f"params[{k!r}]", params[k], ndim=ndims) for k in keys}
    nd = runs[keys[0]].ndim
    lead = runs[keys[0]].shape[:-1] if vec else runs[keys[0]].shape[:-2]
    for k in keys:
        shp = runs[k].shape
        if runs[k].ndim != nd or (vec and shp != runs[keys[0]].shape) or \
                (not vec and shp[:-2] != lead):
            raise ValueError(f"params[{k!r}] has shape {shp}, inconsistent with "
                             f"params[{keys[0]!r}] of shape {runs[keys[0]].shape}")
    squeeze = nd == ndims[0]
    if squeeze:
        runs = {k: v[None] for k, v in runs.items()}
    return runs, squeeze


def _check_XY(X, Y, d, d_out):
    X = check_array("X", X, shape=(None, None, d))
    Y = check_array("Y", Y, shape=(X.shape[0], X.shape[1], d_out))
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X needs at least one sequence and one token, got shape {X.shape}")
    return X, Y


def _unrun(loss, grads, squeeze):
    if squeeze:
        return float(loss[0]), {k: v[0] for k, v in grads.items()}
    return loss, grads
