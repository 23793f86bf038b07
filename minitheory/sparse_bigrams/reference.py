r"""The sparse-contextual-bigram models written as the paper writes them (Ren, Wang, Lee, NeurIPS
2024, arXiv:2410.23438, Secs. 2-3): read this file beside the paper.

Every function here is the plain reference of a fast twin with the same name in
:mod:`~minitheory.sparse_bigrams.model` (sample and population losses) or
:mod:`~minitheory.sparse_bigrams.population` (the large-T step). The symbols are the paper's:

- vocabulary :math:`[N]`, context length :math:`T`, tokens :math:`x_1, \dots, x_T`, last (query)
  token :math:`k = x_{T+1}`, output token :math:`x_o`;
- :math:`X = [e_{x_1} \dots e_{x_T}] \in \{0, 1\}^{N \times T}`, the one-hot matrix of the context;
- :math:`V \in \mathbb R^{N \times N}` (value), :math:`A \in \mathbb R^{T \times N}` (attention,
  column :math:`a_k = A e_k`), :math:`P` the column-stochastic transition, :math:`\mu = P\mu` its
  stationary distribution, :math:`Q^*` the true attention (column :math:`q_k`);
- :math:`D = \mathrm{diag}(\mu)`, :math:`\Sigma = D - \mu\mu^\top`,
  :math:`\langle V, V'\rangle_\Sigma = \mathrm{tr}(V\Sigma V'^\top)`,
  :math:`\|M\|_\mu^2 = \sum_k \mu_k \|M e_k\|^2`.

No layout tricks, no in-place updates: every array is a new array named after its symbol. The
functions work on one run; given parameters with a leading run axis ``R`` (and batches with the
same leading axis) they apply themselves run by run (:func:`over_runs`), which is the contract of
the fast ``*_unchecked`` cores. No input checks (see :mod:`~minitheory.sparse_bigrams.checks`).
"""
from __future__ import annotations

import numpy as np

from .data import Instance


def one_hot(ids, N: int) -> np.ndarray:
    r"""Rows :math:`e_{i}^\top` of the :math:`N \times N` identity for integer ids, shape
    ``ids.shape + (N,)``."""
    return np.eye(N)[ids]


def over_runs(fn, params: dict, *batch):
    """``fn`` applied to run ``i`` of ``params`` (and of every array in ``batch``) for each ``i``
    of the leading run axis; losses stacked to ``(R,)``, gradients to ``(R, ...)``."""
    R = params["V"].shape[0]
    outs = [fn({key: p[i] for key, p in params.items()}, *(x[i] for x in batch)) for i in range(R)]
    return (np.array([loss for loss, _ in outs]),
            {key: np.stack([grads[key] for _, grads in outs]) for key in outs[0][1]})


# --------------------------------------------------------------------------------------------
# The linear transformer f = V X A e_k and its sample loss (Sec. 3)
# --------------------------------------------------------------------------------------------
def forward(params: dict, xs, k):
    r"""The model output :math:`f_b = V X_b A e_{k_b}` for each sample :math:`b` of one run.

    ``params``: ``"V"`` ``(N, N)``, ``"A"`` ``(T, N)``; ``xs`` ``(B, T)``, ``k`` ``(B,)`` token
    ids. Returns ``f`` ``(B, N)`` and ``Xa`` ``(B, N)``, the context read through the attention,
    :math:`X_b a_{k_b} = \sum_t A_{t, k_b} e_{x_{b,t}}`.
    """
    V, A = params["V"], params["A"]
    N = V.shape[0]
    X = one_hot(xs, N).swapaxes(1, 2)                   # (B, N, T): X_b = [e_{x_1} ... e_{x_T}]
    a = one_hot(k, N) @ A.T                             # (B, T):    a_{k_b} = A e_{k_b}
    Xa = np.einsum("bnt,bt->bn", X, a)                  # (B, N):    X_b a_{k_b}
    f = Xa @ V.T                                        # (B, N):    V X_b a_{k_b}
    return f, Xa


def backward(params: dict, xs, k, resid, Xa):
    r"""Gradients of :math:`L = \tfrac1{2B}\sum_b \|e_{x_{o,b}} - f_b\|^2` from the residuals
    ``resid`` :math:`= e_{x_o} - f` ``(B, N)`` and ``Xa`` of :func:`forward`:

    .. math::
        \nabla_V L = -\tfrac1B \sum_b \mathrm{resid}_b\,(X_b a_{k_b})^\top,\qquad
        \nabla_A L = -\tfrac1B \sum_b X_b^\top V^\top \mathrm{resid}_b\; e_{k_b}^\top

    (column :math:`k` of :math:`\nabla_A L` collects the samples whose last token is :math:`k`).
    """
    V = params["V"]
    N, B = V.shape[0], len(k)
    X = one_hot(xs, N).swapaxes(1, 2)                   # (B, N, T)
    g_V = -np.einsum("bi,bj->ij", resid, Xa) / B
    XtVt_resid = np.einsum("bnt,in,bi->bt", X, V, resid)            # (B, T): X_b^T V^T resid_b
    g_A = -np.einsum("bt,bk->tk", XtVt_resid, one_hot(k, N)) / B
    return {"V": g_V, "A": g_A}


def loss_and_grads(params: dict, xs, k, xo):
    r"""Batch loss :math:`L = \tfrac12 \operatorname{mean}_b \|e_{x_{o,b}} - V X_b A e_{k_b}\|^2`
    (the paper's MSE, Sec. 3) and its gradients ``{"V", "A"}``.

    One run: ``xs`` ``(B, T)``, ``k, xo`` ``(B,)``, loss a float. With a leading run axis on
    ``params`` and the batch: loss ``(R,)`` and gradients ``(R, ., .)``, as
    :func:`model.loss_and_grads_unchecked`.
    """
    if params["V"].ndim == 3:
        return over_runs(loss_and_grads, params, xs, k, xo)
    f, Xa = forward(params, xs, k)
    resid = one_hot(xo, params["V"].shape[0]) - f       # (B, N): e_{x_o} - f
    loss = 0.5 * np.mean(np.sum(resid**2, axis=1))
    return float(loss), backward(params, xs, k, resid, Xa)


# --------------------------------------------------------------------------------------------
# The softmax transformer f = V X softmax(W e_k), the paper's comparison model
# --------------------------------------------------------------------------------------------
def softmax_over_positions(W: np.ndarray) -> np.ndarray:
    r""":math:`s_k = \mathrm{softmax}(W e_k)`: each column of ``W`` ``(T, N)`` normalized over the
    positions :math:`t`, :math:`S_{t,k} = e^{W_{t,k} - m_k} / \sum_{t'} e^{W_{t',k} - m_k}` with
    :math:`m_k = \max_t W_{t,k}` (the textbook shift; it cancels)."""
    expW = np.exp(W - W.max(axis=0))
    return expW / expW.sum(axis=0)


def softmax_loss_and_grads(params: dict, xs, k, xo):
    r"""Loss of :math:`f_b = V X_b\,\mathrm{softmax}(W e_{k_b})` and gradients ``{"V", "W"}``.

    The model is the linear one at :math:`A = S = \mathrm{softmax}(W)` (softmax over positions per
    column), so with :math:`g_k = (\nabla_A L)_{:,k}` at :math:`A = S`:

    .. math::
        \nabla_V L = \text{the linear } \nabla_V L \text{ at } A = S,\qquad
        \nabla_{w_k} L = s_k \odot \big(g_k - (s_k^\top g_k)\mathbf 1\big).

    ``params``: ``"V"`` ``(N, N)``, ``"W"`` ``(T, N)`` (or a leading run axis); batches as in
    :func:`loss_and_grads`.
    """
    if params["V"].ndim == 3:
        return over_runs(softmax_loss_and_grads, params, xs, k, xo)
    S = softmax_over_positions(params["W"])
    loss, grads = loss_and_grads({"V": params["V"], "A": S}, xs, k, xo)
    g = grads["A"]                                      # (T, N): column k is g_k
    g_W = S * (g - np.sum(S * g, axis=0))               # s_k * (g_k - (s_k^T g_k) 1)
    return loss, {"V": grads["V"], "W": g_W}


# --------------------------------------------------------------------------------------------
# Population loss in closed form (x_t iid ~ mu)
# --------------------------------------------------------------------------------------------
def Sigma_of(mu: np.ndarray) -> np.ndarray:
    r""":math:`\Sigma = D - \mu\mu^\top`, the covariance of one token :math:`e_{x_t}`,
    :math:`x_t \sim \mu`."""
    return np.diag(mu) - np.outer(mu, mu)


def sigma_inner(V: np.ndarray, W: np.ndarray, mu: np.ndarray) -> np.float64:
    r""":math:`\langle V, W\rangle_\Sigma = \mathrm{tr}(V \Sigma W^\top)`."""
    return np.trace(V @ Sigma_of(mu) @ W.T)


def mu_norm2(M: np.ndarray, mu: np.ndarray) -> float:
    r""":math:`\|M\|_\mu^2 = \sum_k \mu_k \|M e_k\|^2`."""
    return mu @ np.sum(M**2, axis=0)


def bayes_error(inst: Instance) -> float:
    r"""The loss of the truth :math:`(P, Q^*)`:
    :math:`L_{irr} = \tfrac12\big(1 - \sum_k \mu_k(\|q_k\|^2\|P\|_\Sigma^2 + \|\mu\|^2)\big)`."""
    P, Q_star, mu = inst.P, inst.Q_star, inst.mu
    q_norm2 = np.sum(Q_star**2, axis=0)                 # (N,): ||q_k||^2
    return float(0.5 * (1.0 - mu @ (q_norm2 * sigma_inner(P, P, mu) + mu @ mu)))


def population_loss(params: dict, inst: Instance):
    r"""The population loss :math:`L = \mathbb E\,\ell` in closed form:

    .. math::
        L = L_{irr} + \tfrac12 \sum_k \mu_k \big[\|a_k\|^2 \|V\|_\Sigma^2
            - 2 (a_k^\top q_k) \langle V, P\rangle_\Sigma + \|q_k\|^2 \|P\|_\Sigma^2
            + c_k^2 \|V\mu\|^2 - 2 c_k (V\mu)^\top\mu + \|\mu\|^2\big],
        \qquad c_k = \mathbf 1^\top a_k,

    from :math:`\mathbb E[X a b^\top X^\top] = (a^\top b)\Sigma + (\mathbf 1^\top a)(\mathbf 1^\top b)
    \mu\mu^\top`. A float, or ``(R,)`` for parameters with a run axis.
    """
    V, A = params["V"], params["A"]
    if V.ndim == 3:
        return np.array([population_loss({"V": V[i], "A": A[i]}, inst) for i in range(len(V))])
    P, Q_star, mu = inst.P, inst.Q_star, inst.mu
    a_norm2 = np.sum(A**2, axis=0)                      # (N,): ||a_k||^2
    a_dot_q = np.sum(A * Q_star, axis=0)                # (N,): a_k^T q_k
    q_norm2 = np.sum(Q_star**2, axis=0)                 # (N,): ||q_k||^2
    c = np.sum(A, axis=0)                               # (N,): c_k = 1^T a_k
    Vmu = V @ mu
    per_k = (a_norm2 * sigma_inner(V, V, mu) - 2 * a_dot_q * sigma_inner(V, P, mu)
             + q_norm2 * sigma_inner(P, P, mu)
             + c**2 * (Vmu @ Vmu) - 2 * c * (Vmu @ mu) + mu @ mu)
    return bayes_error(inst) + 0.5 * (mu @ per_k)


def population_grads(params: dict, inst: Instance) -> dict:
    r"""Gradients of :func:`population_loss` (using :math:`P\mu = \mu`, :math:`\mathbf 1^\top q_k = 1`):

    .. math::
        \nabla_V L = \sum_k \mu_k \big[-(a_k^\top q_k) P\Sigma - c_k \mu\mu^\top
                     + \|a_k\|^2 V\Sigma + c_k^2 (V\mu)\mu^\top\big],\\
        \nabla_{a_k} L = -\mu_k \big[\langle V, P\rangle_\Sigma q_k + ((V\mu)^\top\mu)\mathbf 1
                         - \|V\|_\Sigma^2 a_k - \|V\mu\|^2 c_k \mathbf 1\big].

    ``{"V" (N, N), "A" (T, N)}``, with a leading run axis if the parameters have one.
    """
    V, A = params["V"], params["A"]
    if V.ndim == 3:
        return over_runs(lambda p, _: (0.0, population_grads(p, inst)), params, V)[1]
    P, Q_star, mu = inst.P, inst.Q_star, inst.mu
    Sigma = Sigma_of(mu)
    a_norm2 = np.sum(A**2, axis=0)                      # (N,): ||a_k||^2
    a_dot_q = np.sum(A * Q_star, axis=0)                # (N,): a_k^T q_k
    c = np.sum(A, axis=0)                               # (N,): c_k
    Vmu = V @ mu
    g_V = (-(mu @ a_dot_q) * P @ Sigma - (mu @ c) * np.outer(mu, mu)
           + (mu @ a_norm2) * V @ Sigma + (mu @ c**2) * np.outer(Vmu, mu))
    ones = np.ones_like(A)                              # (T, N): the column 1 for every k
    g_A = -mu * (sigma_inner(V, P, mu) * Q_star + (Vmu @ mu) * ones
                 - sigma_inner(V, V, mu) * A - (Vmu @ Vmu) * c * ones)
    return {"V": g_V, "A": g_A}


def preconditioned_grads(params: dict, inst: Instance) -> dict:
    r"""The population gradients times :math:`D^{-1}` on the right, :math:`(G_V, G_A) =
    (\nabla_V L\, D^{-1}, \nabla_A L\, D^{-1})`: column :math:`j` divided by :math:`\mu_j`, a step
    in the :math:`\mu` metric (rare last tokens learn as fast as common ones). Equivalently

    .. math::
        G_V = -\langle A,Q^*\rangle_\mu (P - \mu\mathbf 1^\top) - \bar c\,\mu\mathbf 1^\top
              + \|A\|_\mu^2 (V - V\mu\mathbf 1^\top) + \overline{c^2}\, V\mu\mathbf 1^\top,\\
        G_A[:, k] = -\langle V,P\rangle_\Sigma q_k + \|V\|_\Sigma^2 a_k
                    - ((V\mu)^\top\mu - \|V\mu\|^2 c_k)\mathbf 1,

    with :math:`\bar c = \sum_k \mu_k c_k`, :math:`\overline{c^2} = \sum_k \mu_k c_k^2`.
    """
    grads = population_grads(params, inst)
    return {key: g / inst.mu for key, g in grads.items()}       # g D^{-1}


# --------------------------------------------------------------------------------------------
# The large-T step: population gradients plus Gaussian gradient noise [project choice:
# the paper runs T = 1e5, N in {100, 500}; this noise model emulates a batch of size B]
# --------------------------------------------------------------------------------------------
def soft_threshold(u: np.ndarray, theta: float) -> np.ndarray:
    r""":math:`\mathrm{SoftThr}_\theta(u) = \mathrm{sign}(u)\max(|u| - \theta, 0)` entrywise, the
    proximal map of :math:`\theta\|\cdot\|_1`."""
    return np.sign(u) * np.maximum(np.abs(u) - theta, 0.0)


def large_t_step(s, V, A, it: int, inst: Instance, Xi_A, Xi_V, *, sigma_V: float,
                 sigma_A_times_sqrt_N: float):
    r"""One step of the large-T simulation on dense arrays; returns the new ``(V, A)``.

    With the emulated batch size :math:`B` (``s.B1`` in stage 1, ``it < s.tau``; ``s.B2`` after)
    and standard normal noise :math:`\Xi_V` ``(N, N)``, :math:`\Xi_A` ``(T, N)``:

    .. code-block:: text

        G_V, G_A = preconditioned population gradients at (V, A)
        G_V += sigma_V / sqrt(B) Xi_V;   G_A += sigma_A / sqrt(B) Xi_A     (none if B = inf)
        G_A -= mean over positions of G_A                   (centre each column)
        two-stage:  V -= min(eta_V, 1 / ||A||_mu^2) G_V
                    stage 1:  A -= eta_A G_A
                    stage 2:  A = SoftThr(A - eta_A G_A, eta_A lam);  balance
        SGD:        V -= eta_sgd G_V D;   A -= eta_sgd G_A D   (unpreconditioned gradients)

    balance: :math:`\bar c = \sum_k \mu_k \mathbf 1^\top a_k`; :math:`(V, A) \leftarrow (\bar c V,
    A / \bar c)` when :math:`|\bar c| \ge 0.1`. :math:`\sigma_A = ` ``sigma_A_times_sqrt_N``
    :math:`/\sqrt N`. ``s`` is a :class:`population.Schedule`; ``inst`` has a dense ``Q_star``.
    """
    mu, N = inst.mu, inst.N
    G = preconditioned_grads({"V": V, "A": A}, inst)
    B = s.B1 if it < s.tau else s.B2
    G_V, G_A = G["V"], G["A"]
    if B != np.inf:
        G_V = G_V + sigma_V / np.sqrt(B) * Xi_V
        G_A = G_A + sigma_A_times_sqrt_N / np.sqrt(N) / np.sqrt(B) * Xi_A
    G_A = G_A - G_A.mean(axis=0)                        # centre: drop the column-sum direction
    if s.kind == "sgd":
        return V - s.eta_sgd * G_V * mu, A - s.eta_sgd * G_A * mu
    V = V - min(s.eta_V, 1.0 / mu_norm2(A, mu)) * G_V
    if it < s.tau:
        return V, A - s.eta_A * G_A
    A = soft_threshold(A - s.eta_A * G_A, s.eta_A * s.lam)
    if s.balance:
        c_bar = mu @ np.sum(A, axis=0)
        if abs(c_bar) >= 0.1:
            V, A = c_bar * V, A / c_bar
    return V, A
