"""Truncation (Eckart-Young), pruning, and a short training run that shows the claim."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.lowrank_sparse import analysis, data, model, training
from minitheory.spectral import energy_share
from minitheory.validation import DivergenceError
from strategies import seeds


@given(p=st.integers(1, 6), q=st.integers(1, 6), r=st.integers(0, 6), seed=seeds)
def test_truncation_is_the_best_rank_r_approximation(p, q, r, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((p, q))
    T = analysis.truncate(W, r)
    assert np.linalg.matrix_rank(T, tol=1e-10) == min(r, p, q)
    best = np.linalg.norm(W - T)
    for _ in range(20):                               # no random rank-r matrix is closer
        k = min(r, p, q)
        C = rng.standard_normal((p, k)) @ rng.standard_normal((k, q))
        # a random matrix near T, so the competition is close
        C = T + 0.1 * C
        assert np.linalg.norm(W - analysis.truncate(C, r)) >= best - 1e-12
    s = np.linalg.svd(W, compute_uv=False)
    assert best == pytest.approx(np.sqrt(np.sum(s[r:] ** 2)), abs=1e-12)


def test_truncation_end_points():
    rng = np.random.default_rng(0)
    p0 = {k: rng.standard_normal((1, 4, 4)) for k in ("W_Q", "W_K", "W_V", "W_O")}
    p = {k: v + rng.standard_normal((1, 4, 2)) @ rng.standard_normal((1, 2, 4)) for k, v in p0.items()}
    for r in (2, 3, 4):                               # r >= rank(dW) = 2 reproduces the model
        t = analysis.truncated_params(p, p0, r)
        for k in ("W_Q", "W_K", "W_V"):
            np.testing.assert_allclose(t[k], p[k], atol=1e-12)
        np.testing.assert_array_equal(t["W_O"], p["W_O"])
    t = analysis.truncated_params(p, p0, 0)           # r = 0 is the initial model
    for k in ("W_Q", "W_K", "W_V"):
        np.testing.assert_array_equal(t[k], p0[k])


def test_pruning_removes_exactly_the_requested_rows_in_order():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((2, 10, 3)) * rng.uniform(0.1, 3, size=(2, 10, 1))
    norms = np.linalg.norm(W, axis=-1)
    for rate, k in ((0.0, 0), (0.25, 3), (0.3, 3), (0.31, 4), (1.0, 10)):
        for order, key in (("magnitude", norms), ("largest", -norms)):
            out, removed = analysis.prune_rows(W, rate, order)
            assert removed.shape == (2, k)
            np.testing.assert_array_equal(removed, np.argsort(key, axis=-1)[:, :k])
            zero = np.all(out == 0, axis=-1)
            for r in range(2):
                assert set(np.flatnonzero(zero[r])) == set(removed[r])
                keep = ~zero[r]
                np.testing.assert_array_equal(out[r][keep], W[r][keep])
    out, removed = analysis.prune_rows(W, 0.5, "random", np.random.default_rng(0))
    assert removed.shape == (2, 5) and len(set(removed[0])) == 5


def test_pruning_everything_gives_F_zero_and_hinge_one():
    rng = np.random.default_rng(2)
    cfg = data.DataConfig(d=6, M=4, L=5, n_rel=3, n_conf=1)
    p = {k: v[None] for k, v in training.init_params(rng, cfg, training.ModelConfig(m=8)).items()}
    X, y, _, rel = data.sample(rng, 20, cfg)
    out, _ = analysis.prune_rows(p["W_O"], 1.0, "magnitude")
    assert np.all(model.forward(dict(p, W_O=out), X[None])[0] == 0)
    assert analysis.evaluate(dict(p, W_O=out), X[None], y[None], rel[None])[0][0] == 1.0
    same, _ = analysis.prune_rows(p["W_O"], 0.0, "largest")
    np.testing.assert_array_equal(same, p["W_O"])


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_pruning_rate(rate):
    with pytest.raises(ValueError, match="rate must"):
        analysis.prune_rows(np.ones((1, 4, 2)), rate, "magnitude")
    with pytest.raises(ValueError, match="order must be one of"):
        analysis.prune_rows(np.ones((1, 4, 2)), 0.5, "smallest")


def test_short_training_run_makes_the_key_update_rank_two():
    # spec (h): after a short run the top-2 singular values of dW_K hold > 90% of ||dW_K||_F^2,
    # and W_O splits into rows at init scale and rows that grew
    res = training.train([0, 1], data.DataConfig(), training.ModelConfig(),
                         training.SGDConfig(steps=40))
    dK = res.params["W_K"] - res.params0["W_K"]
    assert np.all(energy_share(dK, 2) > 0.9)
    assert np.all(energy_share(dK, 1) < 0.99)               # and not rank one: two patterns
    assert np.all(res.history["test_hinge"][-1] < 0.1)
    assert np.all(res.history["att_rel"][-1] > res.history["att_rel"][0] + 0.2)


def test_runs_on_the_run_axis_equal_single_runs():
    args = (data.DataConfig(d=8, M=5, L=6, n_rel=3, n_conf=1), training.ModelConfig(m=8),
            training.SGDConfig(steps=5, n_train=64, n_test=32))
    both = training.train([3, 4], *args)
    one = training.train([4], *args)
    for k in model.TRAINED:
        np.testing.assert_allclose(both.params[k][1], one.params[k][0], rtol=1e-12, atol=1e-14)


def test_divergence_is_reported_with_step_and_rate():
    with pytest.raises(DivergenceError) as info:
        training.train([0], data.DataConfig(), training.ModelConfig(),
                       training.SGDConfig(lr=1e200, steps=10))
    err, res = info.value, info.value.partial
    assert "lr=1e+200" in str(err) and err.lr == 1e200
    assert res.history["test_hinge"].shape[0] == err.step          # steps 0 .. step-1 kept
    assert all(np.all(np.isfinite(v)) for v in res.params.values())
