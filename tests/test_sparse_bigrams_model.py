"""The linear transformer on SCB: sample gradients, closed forms, invariants (spec (h) 1-6, 8)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.sparse_bigrams import analysis, data, model, training
from strategies import contract_runs, scales, seeds


def _inst(seed, N, T, Q):
    return data.make_instance(np.random.default_rng(seed), N, T, min(Q, T))


def _params(rng, N, T, scale, R=None):
    lead = () if R is None else (R,)
    return {"V": scale * rng.standard_normal(lead + (N, N)),
            "A": scale * rng.standard_normal(lead + (T, N))}


@given(N=st.integers(2, 5), T=st.integers(1, 6), B=st.integers(1, 8), R=st.sampled_from([None, 2]),
       seed=seeds, scale=scales)
def test_sample_gradients_match_finite_differences(N, T, B, R, seed, scale):
    # small N and several samples: tokens repeat in a sequence and last tokens repeat in a batch
    rng = np.random.default_rng(seed)
    lead = () if R is None else (R,)
    xs, k, xo = (rng.integers(0, N, size=lead + s) for s in ((B, T), (B,), (B,)))
    p = _params(rng, N, T, scale, R)
    cot = rng.uniform(0.5, 1.5, size=R or 1)

    check_gradients(contract_runs(lambda q: model.loss_and_grads(q, xs, k, xo), R, cot), p,
                    rng=rng, full_max=40)


def test_repeated_indices_accumulate_like_a_per_sample_loop():
    rng = np.random.default_rng(0)
    N, T = 3, 4
    xs = np.array([[0, 0, 1, 0], [2, 2, 2, 1], [0, 1, 1, 2]])     # repeats inside sequences
    k = np.array([1, 1, 0])                                       # shared last token
    xo = np.array([2, 0, 1])
    p = _params(rng, N, T, 1.0)
    _, g = model.loss_and_grads(p, xs, k, xo)
    loop_A, loop_V = np.zeros((T, N)), np.zeros((N, N))
    for b in range(3):
        X = np.eye(N)[:, xs[b]]                                   # (N, T) one-hot columns
        r = np.eye(N)[xo[b]] - p["V"] @ X @ p["A"][:, k[b]]
        loop_V -= np.outer(r, X @ p["A"][:, k[b]]) / 3
        loop_A[:, k[b]] -= X.T @ p["V"].T @ r / 3
    np.testing.assert_allclose(g["A"], loop_A, atol=1e-14)
    np.testing.assert_allclose(g["V"], loop_V, atol=1e-14)
    # fancy-index += applies a repeated column once, so it differs: the test can fail
    wrong = np.zeros((T, N))
    ux = np.stack([(p["V"].T @ (np.eye(N)[xo[b]] - p["V"] @ np.eye(N)[:, xs[b]] @ p["A"][:, k[b]]))[xs[b]]
                   for b in range(3)])
    wrong[:, k] += -ux.T / 3
    assert not np.allclose(wrong, loop_A)


@pytest.mark.parametrize("N, T", [(2, 2), (2, 3), (3, 2), (3, 3), (2, 4)])
def test_closed_form_loss_equals_exact_enumeration(N, T):
    inst = _inst(N * 10 + T, N, T, 2)
    p = _params(np.random.default_rng(T), N, T, 1.0)
    total = 0.0
    for seq in itertools.product(range(N), repeat=T):
        p_seq = np.prod(inst.mu[list(seq)])
        for kk in range(N):
            # E over s and x_o given (X, k): sum_s q_k[s] sum_o P[o, x_s] l(o)
            f = p["V"] @ np.eye(N)[:, list(seq)] @ p["A"][:, kk]
            loss_o = 0.5 * np.sum((np.eye(N) - f) ** 2, axis=1)        # l for each x_o
            total += p_seq * inst.mu[kk] * (inst.Q_star[:, kk] @ (loss_o @ inst.P[:, list(seq)]))
    assert model.population_loss(p, inst) == pytest.approx(total, rel=1e-13, abs=1e-15)


def test_closed_form_loss_equals_monte_carlo_within_standard_error():
    inst = _inst(1, 6, 8, 2)
    p = _params(np.random.default_rng(2), 6, 8, 0.5)
    xs, k, xo = data.sample(np.random.default_rng(3), inst, 40_000)
    f, _ = model.forward({key: v[None] for key, v in p.items()}, xs[None], k[None])
    r = -f[0]
    r[np.arange(len(xo)), xo] += 1
    losses = 0.5 * np.sum(r * r, axis=1)
    se = losses.std() / np.sqrt(len(losses))
    assert abs(losses.mean() - model.population_loss(p, inst)) < 4 * se


@given(seed=seeds, scale=scales, R=st.sampled_from([None, 3]))
def test_population_gradients_match_finite_differences(seed, scale, R):
    inst = _inst(seed % 1000, 4, 6, 2)
    rng = np.random.default_rng(seed)
    p = _params(rng, 4, 6, scale, R)
    cot = rng.uniform(0.5, 1.5, size=R or 1)

    check_gradients(contract_runs(lambda q: (model.population_loss(q, inst),
                                             model.population_grads(q, inst)), R, cot), p, rng=rng)
    g, G = model.population_grads(p, inst), model.preconditioned_grads(p, inst)
    for key in g:
        np.testing.assert_allclose(G[key] * inst.mu, g[key], rtol=1e-13, atol=1e-15)


def test_mean_of_minibatch_gradients_is_the_population_gradient():
    inst = _inst(4, 4, 5, 2)
    p = _params(np.random.default_rng(5), 4, 5, 0.5)
    xs, k, xo = data.sample(np.random.default_rng(6), inst, 200_000)
    # per-sample gradients would be large; use batches of 1000 to get a standard error
    gs = [model.loss_and_grads(p, xs[i:i + 1000], k[i:i + 1000], xo[i:i + 1000])[1]
          for i in range(0, 200_000, 1000)]
    pop = model.population_grads(p, inst)
    for key in pop:
        stack = np.stack([g[key] for g in gs])
        se = stack.std(0) / np.sqrt(len(gs))
        assert np.all(np.abs(stack.mean(0) - pop[key]) < 5 * se + 1e-12)


def test_truth_is_a_stationary_zero_excess_point():
    inst = _inst(0, 10, 50, 2)
    truth = {"V": inst.P, "A": inst.Q_star}
    for g in (model.population_grads(truth, inst), model.preconditioned_grads(truth, inst)):
        assert max(np.abs(v).max() for v in g.values()) < 1e-14
    assert analysis.excess_loss(truth, inst) == pytest.approx(0.0, abs=1e-15)


@given(seed=seeds, c=st.floats(0.2, 5.0))
def test_scale_symmetry_and_balance(seed, c):
    inst = _inst(seed % 1000, 4, 5, 2)
    rng = np.random.default_rng(seed)
    p = _params(rng, 4, 5, 1.0)
    q = {"V": c * p["V"], "A": p["A"] / c}
    xs, k, xo = data.sample(rng, inst, 6)
    f_p = model.forward({key: v[None] for key, v in p.items()}, xs[None], k[None])[0]
    f_q = model.forward({key: v[None] for key, v in q.items()}, xs[None], k[None])[0]
    np.testing.assert_allclose(f_q, f_p, rtol=1e-12, atol=1e-14)
    assert model.population_loss(q, inst) == pytest.approx(model.population_loss(p, inst), rel=1e-11)
    gp, gq = model.population_grads(p, inst), model.population_grads(q, inst)
    np.testing.assert_allclose(gq["V"], gp["V"] / c, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gq["A"], c * gp["A"], rtol=1e-9, atol=1e-12)
    V, A = training.normalize(p["V"][None], p["A"][None], inst.mu, "balance")
    f_b = model.forward({"V": V, "A": A}, xs[None], k[None])[0]
    np.testing.assert_allclose(f_b, f_p, rtol=1e-10, atol=1e-13)


@given(seed=seeds, eta_V=st.floats(0.01, 2.0), eta_A=st.floats(0.01, 20.0))
def test_signal_recursion_of_one_population_step(seed, eta_V, eta_A):
    # spec (f): alpha_V+ = (1 - eta_V ||A||_mu^2) alpha_V + eta_V (||Pi Q*||_mu^2 alpha_A + cbar/T)
    #           alpha_A+ = (1 - eta_A ||V||_Sigma^2) alpha_A + eta_A ||P||_Sigma^2 alpha_V
    inst = _inst(seed % 1000, 5, 7, 2)
    rng = np.random.default_rng(seed)
    p = _params(rng, 5, 7, 0.5)
    mu, T = inst.mu, 7
    G = model.preconditioned_grads(p, inst)
    new = {"V": p["V"] - eta_V * G["V"], "A": p["A"] - eta_A * G["A"]}
    aV, aA, _, _ = analysis.signals(p, inst)
    aV1, aA1, _, _ = analysis.signals(new, inst)
    cQ = inst.Q_star - inst.Q_star.mean(0)
    cbar = mu @ p["A"].sum(0)
    expect_V = (1 - eta_V * model.mu_norm2(p["A"], mu)) * aV + eta_V * (model.mu_norm2(cQ, mu) * aA + cbar / T)
    expect_A = (1 - eta_A * model.sigma_inner(p["V"], p["V"], mu)) * aA \
        + eta_A * model.sigma_inner(inst.P, inst.P, mu) * aV
    assert aV1 == pytest.approx(expect_V, rel=1e-9, abs=1e-12)
    assert aA1 == pytest.approx(expect_A, rel=1e-9, abs=1e-12)


def test_signals_are_exactly_zero_at_the_uninformative_init():
    inst = _inst(0, 10, 50, 2)
    p = {key: v[0] for key, v in training.uninformative_init(inst, 1).items()}
    aV, aA, rV, rA = analysis.signals(p, inst)
    # Both are 0 up to rounding: alpha_V is a difference of two O(0.1) sums divided by
    # ||P||_Sigma^2 ~ 0.08; Pi A0 is the rounding of a column mean of 1/T's (~1e-18).
    assert abs(aV) < 1e-14 and abs(aA) < 1e-14 and rA < 1e-15


@pytest.mark.parametrize("args, match", [
    (dict(xs=np.array([[0, 5]])), r"xs holds token ids outside \[0, N\) = \[0, 3\)"),
    (dict(k=np.array([-1])), "k holds token ids outside"),
    (dict(xo=np.array([0.5])), "xo must hold integer token ids"),
    (dict(xs=np.array([[0, 1, 2]])), r"xs must have shape \('B', 2\)"),
    (dict(k=np.array([0, 1])), "same number B"),
])
def test_bad_batches_name_the_parameter(args, match):
    p = {"V": np.eye(3), "A": np.ones((2, 3))}
    batch = dict(xs=np.array([[0, 1]]), k=np.array([2]), xo=np.array([1])) | args
    with pytest.raises((ValueError, TypeError), match=match):
        model.loss_and_grads(p, **batch)


def test_non_finite_parameters_are_rejected():
    with pytest.raises(ValueError, match=r"params\['A'\] must contain only finite"):
        model.loss_and_grads({"V": np.eye(3), "A": np.full((2, 3), np.nan)},
                             np.array([[0, 1]]), np.array([2]), np.array([1]))
