"""Proximal step, normalization, and the claim: the two-stage method recovers Q* where SGD stalls."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.sparse_bigrams import data, training
from minitheory.validation import DivergenceError
from strategies import seeds


@given(seed=seeds, theta=st.floats(0.0, 2.0))
def test_soft_threshold_is_the_prox_of_the_l1_norm(seed, theta):
    x = 2 * np.random.default_rng(seed).standard_normal(50)
    z = training.soft_threshold(x, theta)
    np.testing.assert_array_equal(z, np.where(x > theta, x - theta, np.where(x < -theta, x + theta, 0)))
    # optimality of argmin_z 1/2 (z - x)^2 + theta |z|
    zero = z == 0
    assert np.all(np.abs(x[zero]) <= theta)
    np.testing.assert_allclose((x - z)[~zero], theta * np.sign(z[~zero]), atol=1e-15)
    # Moreau identity: x - prox(x) = projection on [-theta, theta]
    np.testing.assert_allclose(x - z, np.clip(x, -theta, theta), atol=1e-15)
    # and no nearby point has a smaller objective
    obj = lambda u: 0.5 * np.sum((u - x) ** 2) + theta * np.sum(np.abs(u))  # noqa: E731
    rng = np.random.default_rng(seed + 1)
    assert all(obj(z) <= obj(z + 0.01 * rng.standard_normal(50)) + 1e-12 for _ in range(10))


def test_normalizations():
    inst = data.make_instance(np.random.default_rng(0), 5, 6, 2)
    rng = np.random.default_rng(1)
    V, A = rng.standard_normal((2, 5, 5)), rng.random((2, 6, 5)) + 0.1
    Vb, Ab = training.normalize(V, A, inst.mu, "balance")
    np.testing.assert_allclose(np.einsum("rtk,k->r", Ab, inst.mu), 1.0, atol=1e-14)
    X = rng.random((5, 6))                                                   # any context
    np.testing.assert_allclose(Vb @ X @ Ab, V @ X @ A, atol=1e-13)            # f unchanged
    small = A * 0.01 / np.einsum("rtk,k->r", A, inst.mu)[:, None, None]       # |c| = 0.01 < 0.1
    V2, A2 = training.normalize(V, small, inst.mu, "balance")
    np.testing.assert_array_equal(A2, small)
    Vv, _ = training.normalize(V, A, inst.mu, "v_cols")
    np.testing.assert_allclose(Vv.sum(1), 1.0, atol=1e-12)
    V_flat = V.copy()
    V_flat[0, :, 2] = [0.5, -0.5, 1.0, -1.0, 0.0]                            # column sum 0
    Vf, _ = training.normalize(V_flat, A, inst.mu, "v_cols")
    np.testing.assert_array_equal(Vf[0, :, 2], V_flat[0, :, 2])              # left as it is
    np.testing.assert_allclose(np.delete(Vf[0].sum(0), 2), 1.0, atol=1e-12)
    A_neg = A.copy()
    A_neg[0, :, 0] = -1.0                                                     # an empty column
    _, Aa = training.normalize(V, A_neg, inst.mu, "a_cols")
    assert np.all(Aa >= 0)
    np.testing.assert_allclose(Aa.sum(1), 1.0, atol=1e-14)
    assert training.normalize(V, A, inst.mu, "none") == (V, A)


def test_two_stage_recovers_the_attention_where_sgd_at_the_same_samples_does_not():
    # spec (h) / issue: on the default instance the proximal method reaches ||A - Q*||_mu < 0.1;
    # SGD with the same batches (seed) and the same number of samples stays above it.
    inst = data.make_instance(np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]), 10, 50, 2)
    steps = 1200
    _, h_prox = training.train(inst, training.Method(), [1], steps=steps)
    assert h_prox["dist_A"][-1, 0] < 0.1
    for eta in (0.5, 0.05):
        _, h_sgd = training.train(inst, training.Method(kind="sgd", eta=eta), [1], steps=steps)
        assert np.all(h_sgd["dist_A"][:, 0] > 0.1)
    assert h_prox["support"][-1, 0] == 1.0


def test_runs_on_the_run_axis_equal_single_runs():
    inst = data.make_instance(np.random.default_rng(3), 4, 5, 2)
    both, _ = training.train(inst, training.Method(tau=5), [7, 8], steps=12, batch=8)
    one, _ = training.train(inst, training.Method(tau=5), [8], steps=12, batch=8)
    for key in both:
        np.testing.assert_allclose(both[key][1], one[key][0], rtol=1e-13, atol=1e-15)


def test_divergence_stops_with_step_and_rate():
    inst = data.make_instance(np.random.default_rng(0), 10, 50, 2)
    with pytest.raises(DivergenceError) as info:
        training.train(inst, training.Method(eta1=5.0), [0], steps=300)
    err = info.value
    assert "lr=5.0" in str(err) and err.lr == 5.0 and f"step {err.step}" in str(err)
    params, hist = err.partial
    assert hist["step"][-1] < err.step
    assert all(np.all(np.isfinite(v)) for v in params.values())
    assert np.all(np.isfinite(hist["dist_A"]))


def test_bad_settings():
    inst = data.make_instance(np.random.default_rng(0), 4, 5, 2)
    with pytest.raises(ValueError, match=r"init has V \(3, 3\) and A \(5, 3\), but the task needs V \(4, 4\) and A \(5, 4\)"):
        training.train(inst, training.Method(), [0], steps=1, init={"V": np.eye(3), "A": np.ones((5, 3))})
    with pytest.raises(ValueError, match="normalize must be one of"):
        training.Method(normalize="rows")
    with pytest.raises(ValueError, match="eta1 must be in"):
        training.Method(eta1=0.0)
    with pytest.raises(ValueError, match="lam must be in"):
        training.Method(lam=-1.0)


def test_sgd_branched_from_the_stage_one_endpoint_does_not_recover_within_the_budget():
    # Fig. 1 of the paper: SGD continues from the stage-1 endpoint (tau = 400). Within 1200 steps
    # of batch 64 (76,800 samples, stage 1 included) the proximal branch reaches
    # ||A - Q*||_mu < 0.1 and neither the large nor the small SGD rate gets there.
    inst = data.make_instance(np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]), 10, 50, 2)
    start = training.stage_one(inst, training.Method(), [1])
    _, h_prox = training.branch(inst, training.Method(), start, steps=1200)
    assert h_prox["dist_A"][-1, 0] < 0.1 and h_prox["support"][-1, 0] == 1.0
    for eta in (0.5, 0.05):
        _, h_sgd = training.branch(inst, training.Method(kind="sgd", eta=eta), start, steps=1200)
        assert np.all(h_sgd["dist_A"][:, 0] > 0.1)
        assert np.isinf(training.first_reach(h_sgd, ("dist_A",), 0.1)[0][0])
