"""Gradient descent on the rank-growth heads: conservation laws, freezing, divergence."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.rank_growth import data, model, training
from minitheory.validation import DivergenceError
from strategies import scales, seeds, small


@given(N=small, n=small, d=small, seed=seeds, scale=scales, eta=st.floats(1e-3, 0.5))
def test_one_step_multiplies_c_by_exactly_one_minus_eta2_g2(N, n, d, seed, scale, eta):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    p = {k: scale * rng.standard_normal(d) for k in model.DIAG_KEYS}
    _, g = model.loss_and_grads(p, X, Y)
    _, gw = model.loss_and_grads_ab(dict(zip("ab", model.diag_products(p))), X, Y)
    new = {k: p[k] - eta * g[k] for k in p}
    for (u, v), gi in ((("w_K", "w_Q"), gw["a"]), (("w_V", "w_O"), gw["b"])):
        c, c_new = p[u] ** 2 - p[v] ** 2, new[u] ** 2 - new[v] ** 2
        scale = p[u] ** 2 + p[v] ** 2 + new[u] ** 2 + new[v] ** 2    # rounding scale of both sides
        assert np.all(np.abs(c_new - c * (1 - eta**2 * gi**2)) <= 1e-15 * scale)   # a few ulp (spec (h) 4)
    # the logged residual of the training loop measures exactly this identity
    runs = {k: v[None] for k, v in p.items()}
    assert training.conservation_residual(runs, {k: v[None] for k, v in g.items()},
                                          {k: v[None] for k, v in new.items()}, [eta])[0] < 1e-14


def test_conservation_residual_is_0_on_a_pair_at_zero_and_sees_a_violation():
    # w_K = w_Q = 0 in one coordinate stays there (both gradients vanish): c = 0 is conserved
    # exactly and the residual is 0 there, not 0/0; a step that breaks the law is seen
    p = {"w_K": np.array([[0.0, 0.5]]), "w_Q": np.array([[0.0, -0.3]]),
         "w_V": np.array([[0.2, 0.1]]), "w_O": np.array([[0.4, -0.2]])}
    zero = {k: np.zeros_like(v) for k, v in p.items()}
    assert training.conservation_residual(p, zero, p, [0.1])[0] == 0.0
    broken = dict(p, w_K=p["w_K"] + np.array([[0.01, 0.0]]))  # moves only the pair at zero
    assert training.conservation_residual(p, zero, broken, [0.1])[0] > 1e-3


def test_logged_conservation_residual_is_rounding_at_every_alpha():
    X, Y = data.diagonal_toy(0, 32, 6, 4)
    alphas = np.array([1e-2, 1e-8, 1e-32])
    p0 = data.init_diagonal(np.random.default_rng(1), 4, alphas)
    _, h = training.train_diagonal(p0, X, Y, eta=0.02, n_steps=800)
    assert h["conservation_residual"].max() < 1e-14
    # with a wrong per-step factor (no eta^2 g^2 term) the identity fails: the check can fail
    c = h["c_KQ"][:, 0]
    assert np.max(np.abs(np.diff(c, axis=0))) > 1e-12


@given(seed=seeds, eta=st.floats(1e-3, 0.1))
def test_full_head_gram_difference_update_identity(seed, eta):
    # D_KQ' = D_KQ + eta^2 (W_Q^T G^T G W_Q - W_K^T G G^T W_K), G = dL/dM (spec (d))
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 2))
    p = {"W_K": rng.standard_normal((3, 2)), "W_Q": rng.standard_normal((3, 2)),
         "W_V": rng.standard_normal((3, 2)), "W_O": rng.standard_normal((2, 2))}
    _, g = model.full_loss_and_grads(p, X, Y)
    M, Nm = model.full_products(p)
    loss, dM, dN = model.products_loss_and_grads_unchecked(M[None], Nm[None], X, Y)
    G, H = dM[0], dN[0]
    new = {k: p[k] - eta * g[k] for k in p}
    D = training._gram_differences(p)
    D_new = training._gram_differences(new)
    expect_kq = D[0] + eta**2 * (p["W_Q"].T @ G.T @ G @ p["W_Q"] - p["W_K"].T @ G @ G.T @ p["W_K"])
    expect_vo = D[1] + eta**2 * (p["W_O"].T @ H.T @ H @ p["W_O"] - p["W_V"].T @ H @ H.T @ p["W_V"])
    np.testing.assert_allclose(D_new[0], expect_kq, atol=1e-12)
    np.testing.assert_allclose(D_new[1], expect_vo, atol=1e-12)


def test_frozen_runs_stop_at_their_budget():
    X, Y = data.diagonal_toy(0, 16, 4, 4)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [0.1, 0.1])
    p, h = training.train_diagonal(p0, X, Y, eta=0.05, n_steps=[10, 25], progress=None)
    p10, _ = training.train_diagonal({k: v[:1] for k, v in p0.items()}, X, Y, eta=0.05,
                                     n_steps=10)
    for k in p:
        np.testing.assert_array_equal(p[k][0], p10[k][0])     # bitwise: same arithmetic
        assert not np.array_equal(p[k][1], p10[k][0])
    assert h["loss"].shape == (26, 2) and np.all(h["loss"][10:, 0] == h["loss"][10, 0])


def test_divergence_names_step_and_rate_and_keeps_history():
    X, Y = data.diagonal_toy(0, 16, 4, 4)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [0.5])
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        training.train_diagonal(p0, X, Y, eta=50.0, n_steps=200)
    err = info.value
    assert f"step {err.step}" in str(err) and "eta=50.0" in str(err) and err.lr == 50.0
    params, hist = err.partial
    assert len(hist["step"]) == err.step and np.all(np.isfinite(hist["loss"]))
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_divergence_names_the_runs_that_went_non_finite():
    # the larger init diverges first; its weights overflow one step before its loss does (the
    # loss is evaluated at the old weights), and the error names that run and only it
    X, Y = data.diagonal_toy(0, 16, 4, 4)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [0.01, 0.5])
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        training.train_diagonal(p0, X, Y, eta=50.0, n_steps=200)
    assert "runs [1]" in str(info.value), str(info.value)


@pytest.mark.parametrize("kw, match", [(dict(eta=0.0), "eta"), (dict(eta=-1.0), "eta"),
                                       (dict(eta=float("nan")), "eta"),
                                       (dict(n_steps=-1), "n_steps"),
                                       (dict(n_steps=1.5), "n_steps")])
def test_bad_training_arguments(kw, match):
    X, Y = data.diagonal_toy(0, 4, 3, 4)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [0.1])
    args = dict(eta=0.1, n_steps=3) | kw
    with pytest.raises(ValueError, match=match):
        training.train_diagonal(p0, X, Y, **args)


def test_tied_weights_cannot_flip_the_sign_of_a():
    # spec (h) 9: with w_K = w_Q, a = w_K^2 >= 0 for all time, so a*_1 = -1.5 is unreachable;
    # with the default untied init a_1 reaches it.
    X, Y = data.diagonal_toy(0, 256, 8, 4)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [1e-2, 1e-2])
    p0["w_Q"][1] = p0["w_K"][1]                                  # run 1 is tied
    n = int(training.steps_for([1e-2], 5.0, 0.02)[0])
    p, h = training.train_diagonal(p0, X, Y, eta=0.02, n_steps=n)
    a = h["a"]
    assert np.all(a[:, 1] >= 0)
    assert a[-1, 0, 1] == pytest.approx(-1.5, abs=0.05)
    assert a[-1, 1, 1] > -1e-12
