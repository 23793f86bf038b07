"""What every trainer promises, checked against the update and the metrics written by hand.

- One step of every update rule equals its hand-written update (paper update rules: gradient
  descent on the rank-growth heads, SGD on the low-rank/sparse transformer, the two stages of the
  proximal method and the two SGD baselines for bigrams, the large-T step).
- Frozen runs: each run of a multi-budget gradient descent equals that run trained alone for
  its own budget, and frozen runs are no longer evaluated.
- Every logged metric equals its definition recomputed from the parameters at a logged step.
- The conservation residual reports a wrong step as wrong and a right one as rounding.
"""
import numpy as np
import pytest

from minitheory.lowrank_sparse import data as ls_data, model as ls_model, training as ls_training
from minitheory.rank_growth import data as rg_data, model as rg_model, training as rg_training
from minitheory.sparse_bigrams import data as sb_data, model as sb_model, population as pop
from minitheory.sparse_bigrams import analysis as sb_analysis, training as sb_training
from test_sparse_bigrams_scale import _plain_step, _small

RTOL = 1e-12


def per_run(params, r):
    return {k: v[r] for k, v in params.items()}


def soft_threshold(u, theta):
    """sign(u) max(|u| - theta, 0), entry by entry."""
    return np.sign(u) * np.maximum(np.abs(u) - theta, 0.0)


def mu_dist(M, target, mu):
    """sqrt(sum_k mu_k ||M e_k - target e_k||^2)."""
    D = M - target
    return np.sqrt(sum(mu[k] * D[:, k] @ D[:, k] for k in range(len(mu))))


# --------------------------------------------------------------------------------------------
# Rank growth: gradient descent on the heads
# --------------------------------------------------------------------------------------------
def diagonal_case(alphas=(0.3, 0.1)):
    X, Y = rg_data.diagonal_toy(0, 16, 4, 4)
    return X, Y, rg_data.init_diagonal(np.random.default_rng(1), 4, list(alphas))


def full_case(alphas=(0.5, 0.2)):
    X, Y, _, _ = rg_data.full_toy(0, 12, 4, 4)
    return X, Y, rg_data.init_full(np.random.default_rng(2), 4, 3, Y.shape[-1], list(alphas))


@pytest.mark.parametrize("case, train, loss_and_grads", [
    (diagonal_case, rg_training.train_diagonal, rg_model.loss_and_grads),
    (full_case, rg_training.train_full, rg_model.full_loss_and_grads)], ids=["diagonal", "full"])
def test_one_gd_step_on_a_head_is_theta_minus_eta_grad(case, train, loss_and_grads):
    X, Y, p0 = case()
    eta = 0.3
    p1, hist = train(p0, X, Y, eta=eta, n_steps=1)
    for r in range(2):
        loss, g = loss_and_grads(per_run(p0, r), X, Y)
        for k in p0:
            np.testing.assert_allclose(p1[k][r], p0[k][r] - eta * g[k], rtol=RTOL, atol=1e-15)
        assert hist["loss"][0, r] == pytest.approx(loss, rel=RTOL)


@pytest.mark.parametrize("train, case", [(rg_training.train_diagonal, diagonal_case),
                                         (rg_training.train_full, full_case)])
def test_frozen_runs_equal_each_run_trained_alone_for_its_own_budget(train, case):
    X, Y, p0 = case(alphas=(0.4, 0.3, 0.2, 0.1))
    budgets = [3, 9, 6, 0]
    p, hist = train(p0, X, Y, eta=0.1, n_steps=budgets, log_every=2)
    assert hist["step"].tolist() == [0, 2, 4, 6, 8, 9]
    for r, n in enumerate(budgets):
        alone, h_alone = train({k: v[r:r + 1] for k, v in p0.items()}, X, Y, eta=0.1,
                               n_steps=n, log_every=1)
        for k in p:
            np.testing.assert_allclose(p[k][r], alone[k][0], rtol=RTOL, atol=1e-15)
        # the logged loss of run r at step s is its loss at step min(s, n): it stays frozen
        expect = h_alone["loss"][np.minimum(hist["step"], n), 0]
        np.testing.assert_allclose(hist["loss"][:, r], expect, rtol=RTOL)


def test_frozen_runs_are_not_evaluated():
    X, Y, p0 = diagonal_case(alphas=(0.3, 0.2, 0.1))
    budgets = np.array([2, 7, 4])
    evaluated = []

    def core(params, X_, Y_):
        evaluated.append(params["w_K"].shape[0])
        return rg_model.diag_loss_and_grads_unchecked(
            params, rg_model.diagonal_data(X_, Y_, params["w_K"].shape[0]))

    rg_training.gradient_descent(core, p0, X, Y, eta=0.1, n_steps=budgets,
                                 observe=lambda *a: {})
    # one evaluation of every moving run per step, and the final parameters once
    assert evaluated[:-1] == [int(np.sum(s < budgets)) for s in range(budgets.max())]
    assert evaluated[-1] == 3 and sum(evaluated) == budgets.sum() + 3


def test_logged_diagonal_metrics_equal_their_definitions():
    X, Y, p0 = diagonal_case()
    eta, n = 0.3, 5
    _, hist = rg_training.train_diagonal(p0, X, Y, eta=eta, n_steps=n + 3, log_every=n)
    p_n, _ = rg_training.train_diagonal(p0, X, Y, eta=eta, n_steps=n)       # the params at step n
    p_next, _ = rg_training.train_diagonal(p0, X, Y, eta=eta, n_steps=n + 1)
    i = hist["step"].tolist().index(n)
    for r in range(2):
        w = per_run(p_n, r)
        loss, g = rg_model.loss_and_grads(w, X, Y)
        assert hist["loss"][i, r] == pytest.approx(loss, rel=RTOL)
        np.testing.assert_allclose(hist["a"][i, r], w["w_K"] * w["w_Q"], rtol=RTOL)
        np.testing.assert_allclose(hist["b"][i, r], w["w_V"] * w["w_O"], rtol=RTOL)
        np.testing.assert_allclose(hist["c_KQ"][i, r], w["w_K"] ** 2 - w["w_Q"] ** 2, rtol=RTOL)
        np.testing.assert_allclose(hist["c_VO"][i, r], w["w_V"] ** 2 - w["w_O"] ** 2, rtol=RTOL)
        # the residual of the step n -> n+1, from its definition (see conservation_residual)
        w1 = per_run(p_next, r)
        worst = 0.0
        for u, v in (("w_K", "w_Q"), ("w_V", "w_O")):
            gw = (w[v] * g[u] + w[u] * g[v]) / (w[u] ** 2 + w[v] ** 2)
            c, c1 = w[u] ** 2 - w[v] ** 2, w1[u] ** 2 - w1[v] ** 2
            scale = w[u] ** 2 + w[v] ** 2 + w1[u] ** 2 + w1[v] ** 2
            worst = max(worst, np.max(np.abs(c1 - c * (1 - eta**2 * gw**2)) / scale))
        assert hist["conservation_residual"][i, r] == pytest.approx(worst, rel=1e-6, abs=1e-18)
    assert hist["conservation_residual"][-1].tolist() == [0.0, 0.0]     # no step after the last


def test_logged_full_head_metrics_equal_their_definitions():
    X, Y, p0 = full_case()
    eta, n, threshold = 0.5, 6, 0.05
    _, hist = rg_training.train_full(p0, X, Y, eta=eta, n_steps=n, log_every=4,
                                     rank_threshold=threshold)
    p_n, _ = rg_training.train_full(p0, X, Y, eta=eta, n_steps=n)
    assert hist["step"][-1] == n
    for r in range(2):
        w, w0 = per_run(p_n, r), per_run(p0, r)
        dM = w["W_K"] @ w["W_Q"].T - w0["W_K"] @ w0["W_Q"].T
        dN = w["W_V"] @ w["W_O"].T - w0["W_V"] @ w0["W_O"].T
        for name, D in (("dM", dM), ("dN", dN)):
            sv = np.linalg.svd(D, compute_uv=False)
            np.testing.assert_allclose(hist[f"sv_{name}"][-1, r], sv, rtol=1e-10, atol=1e-15)
            assert hist[f"srank_{name}"][-1, r] == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-10)
            assert hist[f"rank_{name}"][-1, r] == np.sum(sv > threshold)
        for name, (U, V) in (("KQ", ("W_K", "W_Q")), ("VO", ("W_V", "W_O"))):
            D_t = w[U].T @ w[U] - w[V].T @ w[V]
            D_0 = w0[U].T @ w0[U] - w0[V].T @ w0[V]
            assert hist[f"drift_{name}"][-1, r] == pytest.approx(np.linalg.norm(D_t - D_0), rel=1e-10, abs=1e-17)
        loss, _ = rg_model.full_loss_and_grads(w, X, Y)
        assert hist["loss"][-1, r] == pytest.approx(loss, rel=RTOL)
    assert np.all(hist["rank_dM"][-1] >= 1)                           # the metric is not vacuous


def conservation_case(seed=0, eta=0.4):
    rng = np.random.default_rng(seed)
    p = {k: rng.uniform(0.5, 1.5, (2, 5)) * rng.choice([-1, 1], (2, 5))
         for k in ("w_K", "w_Q", "w_V", "w_O")}
    g_a, g_b = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))     # dL~/da, dL~/db
    grads = {"w_K": p["w_Q"] * g_a, "w_Q": p["w_K"] * g_a,
             "w_V": p["w_O"] * g_b, "w_O": p["w_V"] * g_b}
    return p, grads, np.full(2, eta)


def test_conservation_residual_is_rounding_for_a_gradient_step():
    p, grads, lr = conservation_case()
    new = {k: p[k] - lr[:, None] * grads[k] for k in p}
    assert np.all(rg_training.conservation_residual(p, grads, new, lr) < 1e-15)


@pytest.mark.parametrize("wrong", ["sequential", "half_step_on_v", "wrong_lr", "no_step"])
def test_conservation_residual_reports_a_wrong_step(wrong):
    p, grads, lr = conservation_case()
    new = {k: p[k] - lr[:, None] * grads[k] for k in p}
    report_lr = lr
    if wrong == "sequential":            # v updated with the new u: not gradient descent
        for u, v in (("w_K", "w_Q"), ("w_V", "w_O")):
            g = grads[u] / p[v]
            new[v] = p[v] - lr[:, None] * new[u] * g
    elif wrong == "half_step_on_v":
        for v in ("w_Q", "w_O"):
            new[v] = p[v] - 0.5 * lr[:, None] * grads[v]
    elif wrong == "wrong_lr":
        report_lr = 2 * lr
    else:
        new = {k: v.copy() for k, v in p.items()}
    assert np.all(rg_training.conservation_residual(p, grads, new, report_lr) > 1e-3)


# --------------------------------------------------------------------------------------------
# Low rank and sparsity: SGD on the one-layer transformer
# --------------------------------------------------------------------------------------------
LS_ARGS = (ls_data.DataConfig(d=8, M=5, L=6, n_rel=3, n_conf=1), ls_training.ModelConfig(m=8))


def ls_recipe(seed, dcfg, mcfg, scfg):
    """The documented recipe of one run: data, init and batch generators from one seed."""
    mu = ls_data.patterns(dcfg)
    rng_data, rng_init, rng_sgd = np.random.default_rng(seed).spawn(3)
    Xtr, ytr, _, _ = ls_data.sample(rng_data, scfg.n_train, dcfg, mu)
    Xte, yte, _, rel = ls_data.sample(rng_data, scfg.n_test, dcfg, mu)
    return Xtr, ytr, Xte, yte, rel, ls_training.init_params(rng_init, dcfg, mcfg), rng_sgd


def test_one_sgd_step_on_the_lowrank_sparse_model_is_W_minus_lr_grad_on_a_batch():
    scfg = ls_training.SGDConfig(batch=4, lr=0.7, steps=1, n_train=32, n_test=16)
    res = ls_training.train([5, 6], *LS_ARGS, scfg)
    for r, seed in enumerate([5, 6]):
        Xtr, ytr, _, _, _, p0, rng_sgd = ls_recipe(seed, *LS_ARGS, scfg)
        idx = rng_sgd.choice(scfg.n_train, scfg.batch, replace=False)
        loss, g = ls_model.loss_and_grads(p0, Xtr[idx], ytr[idx])
        for k in ls_model.TRAINED:
            np.testing.assert_allclose(res.params[k][r], p0[k] - scfg.lr * g[k], rtol=RTOL,
                                       atol=1e-15)
        np.testing.assert_array_equal(res.params["a"][r], p0["a"])       # a is fixed
        assert res.history["train_loss"][0, r] == pytest.approx(loss, rel=RTOL)


def test_logged_lowrank_sparse_metrics_equal_their_definitions():
    scfg = ls_training.SGDConfig(batch=4, lr=2.0, steps=6, n_train=32, n_test=16)
    res = ls_training.train([3], *LS_ARGS, scfg)
    h = res.history
    assert h["test_hinge"].shape == (7, 1) and h["train_loss"].shape == (6, 1)
    for t in (0, 4, 6):
        p_t = ls_training.train([3], *LS_ARGS, ls_training.SGDConfig(
            batch=4, lr=2.0, steps=t, n_train=32, n_test=16)).params
        _, _, Xte, yte, rel, _, _ = ls_recipe(3, *LS_ARGS, scfg)
        F, cache = ls_model.forward(p_t, Xte[None])
        F, beta = F[0], cache["A"][0]                       # beta[b, l, s]: s attended from l
        assert h["test_hinge"][t, 0] == pytest.approx(np.mean(np.maximum(0, 1 - yte * F)), rel=RTOL)
        assert h["test_error"][t, 0] == np.mean(np.sign(F) != yte)
        att = [np.mean([beta[b, l, rel[b]].sum() for l in np.flatnonzero(rel[b])])
               for b in range(len(yte))]
        assert h["att_rel"][t, 0] == pytest.approx(np.mean(att), rel=RTOL)
        np.testing.assert_array_equal(h["W_K"][t, 0], p_t["W_K"][0])
    # the model learns in six steps: the error metric moves, in the right direction
    assert h["test_error"][-1, 0] < h["test_error"][0, 0]


# --------------------------------------------------------------------------------------------
# Sparse contextual bigrams: the two-stage method, SGD and softmax SGD
# --------------------------------------------------------------------------------------------
def sb_case(seed=0):
    inst = sb_data.make_instance(np.random.default_rng(seed), 5, 6, 2)
    rng = np.random.default_rng(seed + 1)
    V0 = rng.standard_normal((5, 5))
    A0 = rng.random((6, 5)) * 2 / 6 - 0.5 / 6            # column sums ~ 0.5, some entries < 0
    A0[:, 1] = -0.3                                        # a column that stays negative
    return inst, {"V": V0, "A": A0}


def sb_batch(seed, inst, batch):
    """The batch a run with ``seed`` draws at its first step."""
    return sb_data.sample(np.random.default_rng(seed), inst, batch)


def hand_normalize(V, A, mu, how):
    """The four normalizations, written from their definitions column by column."""
    V, A = V.copy(), A.copy()
    if how == "balance":
        c = sum(mu[k] * A[:, k].sum() for k in range(len(mu)))
        return (V * c, A / c) if abs(c) >= 0.1 else (V, A)
    if how == "v_cols":
        return V / V.sum(axis=0), A
    if how == "a_cols":
        A = np.where(A > 0, A, 0.0)
        for k in range(A.shape[1]):
            total = A[:, k].sum()
            A[:, k] = A[:, k] / total if total > 0 else 1.0 / A.shape[0]
        return V, A
    return V, A


def test_one_stage_one_step_is_the_step_preconditioned_by_mu():
    inst, init = sb_case()
    method = sb_training.Method(tau=3, eta1=0.05)
    params, _ = sb_training.train(inst, method, [4], steps=1, batch=16, init=init)
    _, g = sb_model.loss_and_grads(init, *sb_batch(4, inst, 16))
    np.testing.assert_allclose(params["V"][0], init["V"] - 0.05 * g["V"] / inst.mu, rtol=RTOL)
    np.testing.assert_allclose(params["A"][0], init["A"] - 0.05 * g["A"] / inst.mu, rtol=RTOL)


@pytest.mark.parametrize("how", sb_training.NORMALIZE)
def test_one_stage_two_step_is_the_proximal_step_then_the_normalization(how):
    inst, init = sb_case()
    method = sb_training.Method(tau=0, eta2=0.07, eta2_A=0.2, lam=0.05, normalize=how)
    params, _ = sb_training.train(inst, method, [4], steps=1, batch=16, init=init)
    _, g = sb_model.loss_and_grads(init, *sb_batch(4, inst, 16))
    V = init["V"] - 0.07 * g["V"] / inst.mu
    A = soft_threshold(init["A"] - 0.2 * g["A"] / inst.mu, 0.2 * 0.05)
    assert np.any(A == 0) and np.any(A < 0)               # the threshold and the clip both act
    V, A = hand_normalize(V, A, inst.mu, how)
    np.testing.assert_allclose(params["V"][0], V, rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(params["A"][0], A, rtol=RTOL, atol=1e-15)


def test_one_sgd_step_for_bigrams_is_plain_gradient_descent():
    inst, init = sb_case()
    params, _ = sb_training.train(inst, sb_training.Method(kind="sgd", eta=0.3), [4, 9],
                                  steps=1, batch=16, init=init)
    for r, seed in enumerate([4, 9]):
        _, g = sb_model.loss_and_grads(init, *sb_batch(seed, inst, 16))
        np.testing.assert_allclose(params["V"][r], init["V"] - 0.3 * g["V"], rtol=RTOL)
        np.testing.assert_allclose(params["A"][r], init["A"] - 0.3 * g["A"], rtol=RTOL)


def test_two_softmax_sgd_steps_take_separate_steps_for_V_and_W():
    inst, _ = sb_case()
    method = sb_training.Method(kind="softmax", eta=0.4, eta_W=30.0)
    params, _ = sb_training.train(inst, method, [4], steps=2, batch=16)
    rng = np.random.default_rng(4)
    p = {"V": np.outer(inst.mu, np.ones(5)), "W": np.zeros((6, 5))}
    for _ in range(2):
        _, g = sb_model.softmax_loss_and_grads(p, *sb_data.sample(rng, inst, 16))
        p = {"V": p["V"] - 0.4 * g["V"], "W": p["W"] - 30.0 * g["W"]}
    assert np.abs(p["W"]).max() > 1e-3                     # W moved: the sign of its step shows
    np.testing.assert_allclose(params["V"][0], p["V"], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(params["W"][0], p["W"], rtol=RTOL, atol=1e-15)


def column_softmax(W):
    """softmax over positions (rows) for each column k: A[t, k] = exp W[t, k] / sum_s exp W[s, k]."""
    E = np.exp(W - W.max(axis=0))
    return E / E.sum(axis=0)


@pytest.mark.parametrize("kind", ["two_stage", "softmax"])
def test_logged_bigram_metrics_equal_their_definitions(kind):
    inst = sb_data.make_instance(np.random.default_rng(2), 5, 6, 2)
    method = sb_training.Method(tau=4) if kind == "two_stage" else sb_training.Method(
        kind="softmax", eta=0.4, eta_W=30.0)
    params, hist = sb_training.train(inst, method, [1, 2], steps=9, batch=32, log_every=4)
    assert hist["step"].tolist() == [0, 4, 8, 9]
    np.testing.assert_array_equal(hist["samples"], hist["step"] * 32)
    support = inst.Q_star > 0
    for r in range(2):
        V = params["V"][r]
        A = params["A"][r] if kind == "two_stage" else column_softmax(params["W"][r])
        assert hist["dist_V"][-1, r] == pytest.approx(mu_dist(V, inst.P, inst.mu), rel=RTOL)
        assert hist["dist_A"][-1, r] == pytest.approx(mu_dist(A, inst.Q_star, inst.mu), rel=RTOL)
        mass = sum(inst.mu[k] * A[support[:, k], k].sum() for k in range(5))
        assert hist["support_mass"][-1, r] == pytest.approx(mass, rel=RTOL)
        loss = sb_model.population_loss({"V": V, "A": A}, inst) - sb_model.bayes_error(inst)
        assert hist["excess_loss"][-1, r] == pytest.approx(loss, rel=1e-10, abs=1e-15)


# --------------------------------------------------------------------------------------------
# Large T: the population step through simulate
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [
    pop.Schedule(eta_A=2.0, B1=np.inf, B2=np.inf, lam=1e-2, tau=1),          # stage 1
    pop.Schedule(eta_A=2.0, B1=np.inf, B2=np.inf, lam=1e-2, tau=0),          # stage 2
    pop.Schedule(eta_A=2.0, B1=1e3, B2=1e2, lam=1e-2, tau=1),                # noisy stage 1
    pop.Schedule(kind="sgd", B1=np.inf, B2=np.inf, eta_sgd=3.0)])
def test_one_large_T_step_through_simulate_is_the_plain_update(schedule):
    inst, dense = _small()
    N, T = inst.N, inst.T
    reference = pop.Schedule(eta_A=0.5, eta_V=0.3, B1=np.inf, B2=np.inf, lam=0.0, tau=5)
    start = np.random.default_rng(3)
    V0, A0 = start.standard_normal((N, N)) * 0.3 + 0.2, start.random((T, N))
    hist = pop.simulate(inst, {"run": schedule}, steps=1, rng=np.random.default_rng(11),
                        reference=reference, inits={"run": {"V": V0, "A": A0}})
    # the noise simulate draws at step 0 (only if a schedule is noisy)
    rng = np.random.default_rng(11)
    Xi, Xi_V = np.zeros((T, N)), np.zeros((N, N))
    if schedule.B1 != np.inf:
        pop.NoiseSource(rng).fill(Xi)
        Xi_V = rng.standard_normal((N, N))
    V, A = _plain_step(schedule, V0, A0, 0, inst, dense, Xi, Xi_V)
    Vr, Ar = _plain_step(reference, np.outer(inst.mu, np.ones(N)), np.full((T, N), 1.0 / T), 0,
                         inst, dense, Xi, Xi_V)
    h = {k: v[1] for k, v in hist["run"].items()}
    assert h["dist_V"] == pytest.approx(mu_dist(V, inst.P, inst.mu), rel=1e-10)
    assert h["dist_A"] == pytest.approx(mu_dist(A, dense.Q_star, inst.mu), rel=1e-10)
    assert h["ref_dist_V"] == pytest.approx(mu_dist(V, Vr, inst.mu), rel=1e-9, abs=1e-14)
    assert h["ref_dist_A"] == pytest.approx(mu_dist(A, Ar, inst.mu), rel=1e-9, abs=1e-14)
    # the other metrics: the sparse-Q* formulas agree with the dense analysis
    aV, aA, rV, rA = sb_analysis.signals({"V": V, "A": A}, dense)
    assert h["alpha_V"] == pytest.approx(aV, rel=1e-9, abs=1e-13)
    assert h["alpha_A"] == pytest.approx(aA, rel=1e-9, abs=1e-13)
    # a residual is sqrt(max(|x|^2 - <x, y>^2/|y|^2, 0)): near 0 its rounding is sqrt(eps) |x|
    assert h["resid_V"] == pytest.approx(rV, rel=1e-9, abs=1e-7)
    assert h["resid_A"] == pytest.approx(rA, rel=1e-9, abs=1e-7)
    assert hist["run"]["step"].tolist() == [0, 1]
