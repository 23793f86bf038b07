"""Softmax model, transfer tasks and the large-T population dynamics (issue 5)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.sparse_bigrams import data, model, population as pop, reference, training
from minitheory.validation import DivergenceError
from strategies import contract_runs, scales, seeds


@given(N=st.integers(2, 5), T=st.integers(1, 6), B=st.integers(1, 8), R=st.sampled_from([None, 2]),
       seed=seeds, scale=scales)
def test_softmax_model_gradients_match_finite_differences(N, T, B, R, seed, scale):
    rng = np.random.default_rng(seed)
    lead = () if R is None else (R,)
    xs, k, xo = (rng.integers(0, N, size=lead + s) for s in ((B, T), (B,), (B,)))
    p = {"V": scale * rng.standard_normal(lead + (N, N)),
         "W": 3 * scale * rng.standard_normal(lead + (T, N))}
    cot = rng.uniform(0.5, 1.5, size=R or 1)

    check_gradients(contract_runs(lambda q: model.softmax_loss_and_grads(q, xs, k, xo), R, cot),
                    p, rng=rng, full_max=40)


def test_softmax_with_constant_columns_is_the_uniform_linear_model():
    rng = np.random.default_rng(0)
    N, T = 4, 6
    xs, k, xo = rng.integers(0, N, (5, T)), rng.integers(0, N, 5), rng.integers(0, N, 5)
    V = rng.standard_normal((N, N))
    W = np.tile(rng.standard_normal(N), (T, 1))                    # constant per column
    loss_s, g_s = model.softmax_loss_and_grads({"V": V, "W": W}, xs, k, xo)
    loss_l, g_l = model.loss_and_grads({"V": V, "A": np.full((T, N), 1 / T)}, xs, k, xo)
    assert loss_s == pytest.approx(loss_l, rel=1e-13)
    np.testing.assert_allclose(g_s["V"], g_l["V"], atol=1e-14)


def test_related_tasks_share_what_they_should():
    rng = np.random.default_rng(1)
    inst = data.make_instance(rng, 6, 8, 2)
    q = data.related_instance(rng, inst, "Q")
    np.testing.assert_array_equal(q.Q_star, inst.Q_star)
    np.testing.assert_allclose(q.P @ inst.mu, inst.mu, atol=1e-12)   # same stationary mu
    assert not np.allclose(q.P, inst.P)
    p = data.related_instance(rng, inst, "P")
    np.testing.assert_array_equal(p.P, inst.P)
    assert np.all(np.count_nonzero(p.Q_star, axis=0) == 2) and not np.array_equal(p.Q_star, inst.Q_star)
    with pytest.raises(ValueError, match="share must be"):
        data.related_instance(rng, inst, "V")


def _small(seed=0, N=5, T=7):
    inst = pop.make_large_instance(np.random.default_rng(seed), N, T, 2)
    return inst, data.check_instance(inst.P, inst.mu, inst.q.dense())


@given(seed=seeds)
def test_in_place_population_gradients_equal_the_dense_closed_form(seed):
    inst, dense = _small(seed % 100)
    rng = np.random.default_rng(seed)
    V, A = rng.standard_normal((5, 5)), rng.standard_normal((7, 5))
    G = np.empty_like(A)
    G_V = pop.preconditioned_grads_into(G, V, A, pop.column_stats(A, inst.q), inst)
    ref = reference.preconditioned_grads({"V": V, "A": A}, dense)
    np.testing.assert_allclose(G_V, ref["V"], atol=1e-13)
    np.testing.assert_allclose(G, ref["A"], atol=1e-13)


def _plain_step(s, V, A, it, inst, dense, Xi, Xi_V):
    """The large-T update as written (:func:`reference.large_t_step`); imported by
    test_training_steps."""
    return reference.large_t_step(s, V, A, it, dense, Xi, Xi_V, sigma_V=pop.SIGMA_V,
                                  sigma_A_times_sqrt_N=pop.SIGMA_A_TIMES_SQRT_N)


@pytest.mark.parametrize("schedule", [
    pop.Schedule(eta_A=2.0, B1=1e4, B2=1e3, lam=1e-3, tau=1),
    pop.Schedule(eta_A=2.0, B1=np.inf, B2=np.inf, lam=1e-3, tau=0),
    pop.Schedule(kind="sgd", B1=1e4, B2=1e3, eta_sgd=3.0, tau=1)])
@pytest.mark.parametrize("it", [0, 1])
def test_fused_step_equals_the_reference_step(schedule, it):
    inst, dense = _small()
    rng = np.random.default_rng(3)
    V, A = rng.standard_normal((5, 5)) * 0.3 + 0.2, rng.random((7, 5))
    Xi, Xi_V = rng.standard_normal((7, 5)), rng.standard_normal((5, 5))
    V2, A2 = reference.large_t_step(schedule, V, A, it, dense, Xi, Xi_V, sigma_V=pop.SIGMA_V,
                                    sigma_A_times_sqrt_N=pop.SIGMA_A_TIMES_SQRT_N)
    pop._step(schedule, V, A, it, pop.column_stats(A, inst.q), inst, np.empty_like(A), Xi,
              Xi.mean(0), Xi_V)
    np.testing.assert_allclose(V, V2, atol=1e-13)
    np.testing.assert_allclose(A, A2, atol=1e-13)


@pytest.mark.parametrize("c_bar, balanced", [(0.09, False), (0.12, True), (-0.09, False),
                                             (-0.12, True), (3.0, True)])
def test_balance_acts_only_when_the_mass_is_at_least_0_1(c_bar, balanced):
    # balance rescales (V, A) -> (c V, A / c) with c = sum_k mu_k 1^T a_k when |c| >= 0.1 [the
    # project's guard against dividing by a vanishing mass, documented in both twins], in both. Without l1 and noise the centred step keeps c, so after the step c is 1 if it
    # balanced and unchanged if not, on either side of the guard.
    inst, dense = _small()
    rng = np.random.default_rng(2)
    V = rng.standard_normal((5, 5)) * 0.3 + 0.2
    A = rng.random((7, 5))
    A *= c_bar / (inst.mu @ A.sum(0))
    s = pop.Schedule(eta_A=0.5, B1=np.inf, B2=np.inf, lam=0.0, tau=0)
    zero_A, zero_V = np.zeros_like(A), np.zeros_like(V)
    _, A_ref = reference.large_t_step(s, V, A, 1, dense, zero_A, zero_V, sigma_V=pop.SIGMA_V,
                                      sigma_A_times_sqrt_N=pop.SIGMA_A_TIMES_SQRT_N)
    V_fast, A_fast = V.copy(), A.copy()
    pop._step(s, V_fast, A_fast, 1, pop.column_stats(A_fast, inst.q), inst, np.empty_like(A),
              zero_A, zero_A.mean(0), zero_V)
    for A_new in (A_ref, A_fast):
        np.testing.assert_allclose(inst.mu @ A_new.sum(0), 1.0 if balanced else c_bar, rtol=1e-12)


def test_injected_noise_has_the_configured_variance():
    # With identical states, the difference between a noisy and a noiseless step is
    # eta_A * (sigma_A / sqrt(B)) * (Xi - mean Xi): its variance per entry is known.
    inst = pop.make_large_instance(np.random.default_rng(4), 10, 4000, 2)
    B = 1e4
    noisy = pop.Schedule(eta_A=1.0, B1=B, B2=B, lam=0.0, tau=10)
    clean = pop.Schedule(eta_A=1.0, B1=np.inf, B2=np.inf, lam=0.0, tau=10)
    hist = pop.simulate(inst, {"noisy": noisy}, steps=1, rng=np.random.default_rng(5),
                        reference=clean)
    d = hist["noisy"]["ref_dist_A"][1] ** 2                 # sum_k mu_k ||eta f (Xi - mean)||^2
    f = pop.SIGMA_A_TIMES_SQRT_N / np.sqrt(10 * B)
    expect = f**2 * (inst.T - 1)                            # sum_k mu_k = 1
    n = inst.T * 10
    assert abs(d / expect - 1) < 5 * np.sqrt(2 / n)         # chi-square: relative sd sqrt(2/n)


def test_population_step_is_the_mean_of_sampled_steps():
    # On a small instance, the preconditioned population gradient (the drift of the simulated
    # dynamics) equals the mean of many preconditioned sampled gradients.
    inst, dense = _small(6, N=4, T=5)
    rng = np.random.default_rng(7)
    V, A = rng.random((4, 4)), rng.random((5, 4))
    G = np.empty_like(A)
    G_V = pop.preconditioned_grads_into(G, V, A, pop.column_stats(A, inst.q), inst)
    xs, k, xo = data.sample(rng, dense, 400_000)
    gs = [model.loss_and_grads({"V": V, "A": A}, xs[i:i + 2000], k[i:i + 2000], xo[i:i + 2000])[1]
          for i in range(0, 400_000, 2000)]
    for key, pop_g in (("V", G_V), ("A", G)):
        stack = np.stack([g[key] / inst.mu for g in gs])
        se = stack.std(0) / np.sqrt(len(gs))
        assert np.all(np.abs(stack.mean(0) - pop_g) < 5 * se + 1e-12)


def test_two_stage_recovers_at_large_T_and_without_l1_it_does_not():
    inst = pop.make_large_instance(np.random.default_rng(8), 20, 2000, 2)
    d = pop.defaults_for(20)
    runs = {"two_stage": pop.Schedule(eta_A=d["eta_A"], B1=d["B1"], B2=d["B2"], lam=d["lam"]),
            "no_l1": pop.Schedule(eta_A=d["eta_A"], B1=d["B1"], B2=d["B2"], lam=0.0, balance=False)}
    hist = pop.simulate(inst, runs, steps=120, rng=np.random.default_rng(9))
    assert hist["two_stage"]["dist_A"][-1] < 0.05 and hist["no_l1"]["dist_A"][-1] > 0.1


def test_bad_inputs():
    inst, _ = _small()
    with pytest.raises(ValueError, match=r"init of 'x' has V \(4, 4\) and A \(7, 5\), but the task needs V \(5, 5\) and A \(7, 5\)"):
        pop.simulate(inst, {"x": pop.Schedule()}, steps=1, rng=np.random.default_rng(0),
                     inits={"x": {"V": np.eye(4), "A": np.ones((7, 5))}})
    with pytest.raises(ValueError, match="B1 must be >= 1 or inf"):
        pop.Schedule(B1=0.5)
    with pytest.raises(ValueError, match="Q must be in"):
        pop.make_large_instance(np.random.default_rng(0), 5, 3, 4)
    with pytest.raises(ValueError, match="runs must name"):
        pop.simulate(inst, {}, steps=1, rng=np.random.default_rng(0))


def test_divergence_is_reported():
    inst, _ = _small()
    with pytest.raises(DivergenceError) as info:
        pop.simulate(inst, {"sgd": pop.Schedule(kind="sgd", B1=np.inf, B2=np.inf, eta_sgd=1e8)},
                     steps=50, rng=np.random.default_rng(0))
    err = info.value
    assert "run 'sgd' (sgd, step size 1e+08)" in str(err) and err.lr == 1e8
    assert f"step {err.step}" in str(err)
    hist = err.partial
    assert np.all(np.isfinite(hist["sgd"]["dist_A"]))
    assert hist["sgd"]["step"].tolist() == list(range(err.step))
