"""The attention heads of the rank-growth paper (fast twins, checked entry points): gradients, the
invariances and fixed points the paper implies, and the input checks."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.rank_growth import data, model
from strategies import contract_runs, scales, seeds, small

runs = st.sampled_from([None, 1, 3])                # None: no run axis


def _diag_params(rng, R, d, scale):
    shape = (d,) if R is None else (R, d)
    return {k: scale * rng.standard_normal(shape) for k in model.DIAG_KEYS}


def _full_params(rng, R, d, d_h, d_out, scale):
    lead = () if R is None else (R,)
    shapes = {"W_K": (d, d_h), "W_Q": (d, d_h), "W_V": (d, d_h), "W_O": (d_out, d_h)}
    return {k: scale * rng.standard_normal(lead + shapes[k]) for k in model.FULL_KEYS}


@given(N=small, n=small, d=small, R=runs, seed=seeds, scale=scales)
def test_diagonal_gradients_match_finite_differences(N, n, d, R, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    p = _diag_params(rng, R, d, scale)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    check_gradients(contract_runs(lambda q: model.loss_and_grads(q, X, Y), R, cot), p, rng=rng)


@given(N=small, n=small, d=small, d_h=small, d_out=small, R=runs, seed=seeds, scale=scales)
def test_full_gradients_match_finite_differences(N, n, d, d_h, d_out, R, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d_out))
    p = _full_params(rng, R, d, d_h, d_out, scale)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    check_gradients(contract_runs(lambda q: model.full_loss_and_grads(q, X, Y), R, cot), p, rng=rng,
                    full_max=24)


@given(N=small, n=small, d=small, seed=seeds, scale=scales)
def test_product_space_gradient_matches_finite_differences(N, n, d, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    w = {"a": scale * rng.standard_normal(d), "b": scale * rng.standard_normal(d)}
    check_gradients(lambda q: model.loss_and_grads_ab(q, X, Y), w)


@given(N=small, n=small, d=small, seed=seeds, scale=scales)
def test_diagonal_head_equals_full_head_with_diagonal_weights(N, n, d, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    p = _diag_params(rng, None, d, scale)
    full = {k.replace("w_", "W_"): np.diag(v) for k, v in p.items()}
    loss_d, g_d = model.loss_and_grads(p, X, Y)
    loss_f, g_f = model.full_loss_and_grads(full, X, Y)
    assert loss_d == pytest.approx(loss_f, rel=1e-13)
    # atol is relative to the largest gradient entry: with one token (n = 1) the softmax is
    # constant, the key-query gradient is exactly 0, and both heads return rounding noise of
    # ~1e-13 times the gradient scale, in different orders of summation
    atol = 1e-13 * max(1.0, max(np.abs(g).max() for g in g_d.values()))
    for k in model.DIAG_KEYS:      # the diagonal of the full gradient is the diagonal gradient
        np.testing.assert_allclose(np.diag(g_f[k.replace("w_", "W_")]), g_d[k], rtol=1e-10,
                                   atol=atol)


@given(N=small, n=small, d=small, seed=seeds, scale=scales)
def test_key_query_gradient_vanishes_when_b_is_zero(N, n, d, seed, scale):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    _, g = model.loss_and_grads_ab({"a": scale * rng.standard_normal(d), "b": np.zeros(d)}, X, Y)
    assert np.all(g["a"] == 0.0)
    assert np.any(g["b"] != 0.0)


@given(N=small, n=small, d=small, seed=seeds, scale=scales, c=st.floats(0.2, 5.0))
def test_head_depends_on_the_factors_only_through_products(N, n, d, seed, scale, c):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((N, n, d)), rng.standard_normal((N, n, d))
    p = _diag_params(rng, None, d, scale)
    q = dict(p, w_K=c * p["w_K"], w_Q=p["w_Q"] / c)
    assert model.loss_and_grads(q, X, Y)[0] == pytest.approx(model.loss_and_grads(p, X, Y)[0],
                                                             rel=1e-12)
    # and the full head only through M = W_K W_Q^T: W_K -> W_K R, W_Q -> W_Q R^{-T}
    pf = _full_params(rng, None, d, 3, 2, scale)
    Yf = rng.standard_normal((N, n, 2))
    Rm = np.eye(3) + 0.3 * rng.standard_normal((3, 3))
    qf = dict(pf, W_K=pf["W_K"] @ Rm, W_Q=pf["W_Q"] @ np.linalg.inv(Rm).T)
    assert model.full_loss_and_grads(qf, X, Yf)[0] == pytest.approx(
        model.full_loss_and_grads(pf, X, Yf)[0], rel=1e-9)


def test_teachers_are_zero_loss_stationary_points():
    X, Y = data.diagonal_toy(0, 64, 8, 4)
    loss, g = model.loss_and_grads_ab({"a": np.array(data.A_STAR), "b": np.array(data.B_STAR)},
                                      X, Y)
    assert loss < 1e-28 and max(np.abs(v).max() for v in g.values()) < 1e-13
    X, Y, M, N = data.full_toy(0, 64, 8, 6)
    U, s, Vt = np.linalg.svd(M)
    P, t, Qt = np.linalg.svd(N)
    p = {"W_K": U * np.sqrt(s), "W_Q": Vt.T * np.sqrt(s), "W_V": P * np.sqrt(t),
         "W_O": Qt.T * np.sqrt(t)}
    loss, g = model.full_loss_and_grads(p, X, Y)
    assert loss < 1e-25 and max(np.abs(v).max() for v in g.values()) < 1e-12


def test_run_axis_equals_separate_runs():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 3, 4)), rng.standard_normal((5, 3, 4))
    p = _diag_params(rng, 3, 4, 1.0)
    loss, g = model.loss_and_grads(p, X, Y)
    for r in range(3):
        loss_r, g_r = model.loss_and_grads({k: v[r] for k, v in p.items()}, X, Y)
        assert loss[r] == pytest.approx(loss_r, rel=1e-13)
        for k in g:
            np.testing.assert_allclose(g[k][r], g_r[k], rtol=1e-12, atol=1e-15)


def test_reference_losses_of_the_toys():
    # the project's toys: L(0) = 6.881 (diagonal), 3.275 (non-diagonal)
    X, Y = data.diagonal_toy(0, 256, 8, 4)
    assert 0.5 * np.sum(Y**2) / 256 == pytest.approx(6.881, abs=5e-4)
    X, Y, M, N = data.full_toy(0, 256, 8, 6)
    assert 0.5 * np.sum(Y**2) / 256 == pytest.approx(3.275, abs=5e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(w_K=np.ones(3)), r"params\['w_Q'\] has shape \(4,\), inconsistent with params\['w_K'\]"),
    (dict(w_K=np.ones((2, 2, 4))), r"params\['w_K'\] must have ndim"),
    (dict(w_V=np.array([1.0, np.nan, 0, 0])), r"params\['w_V'\] must contain only finite"),
])
def test_bad_params_name_the_parameter(bad, match):
    X = np.ones((2, 3, 4))
    p = dict({k: np.ones(4) for k in model.DIAG_KEYS}, **bad)
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(p, X, X)


def test_bad_inputs_name_the_parameter():
    p = {k: np.ones(4) for k in model.DIAG_KEYS}
    with pytest.raises(ValueError, match=r"X must have shape \(\*, \*, 4\)"):
        model.loss_and_grads(p, np.ones((2, 3, 5)), np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"Y must have shape \(2, 3, 4\)"):
        model.loss_and_grads(p, np.ones((2, 3, 4)), np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="X must contain only finite"):
        model.loss_and_grads(p, np.full((2, 3, 4), np.inf), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="missing keys"):
        model.loss_and_grads({"w_K": np.ones(4)}, np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    pf = {"W_K": np.ones((4, 2)), "W_Q": np.ones((4, 3)), "W_V": np.ones((4, 2)),
          "W_O": np.ones((4, 2))}
    with pytest.raises(ValueError, match=r"params\['W_Q'\] must have shape"):
        model.full_loss_and_grads(pf, np.ones((2, 3, 4)), np.ones((2, 3, 4)))


@pytest.mark.parametrize("alphas", [[0.0], [1.0], [-1e-3], [1e-2, 2.0], [], [np.nan]])
def test_bad_alpha_is_rejected(alphas):
    with pytest.raises(ValueError, match="alpha"):
        data.init_diagonal(np.random.default_rng(0), 4, alphas)


@pytest.mark.parametrize("alphas, ok", [([1.0], True), ([0.5, 1.0], True), ([1.5], False),
                                        ([0.0], False), ([-0.1], False), ([], False)])
def test_full_head_init_takes_alphas_in_0_to_1(alphas, ok):
    # unlike the diagonal head, the full head allows alpha = 1 (its "large init" run), no more
    if ok:
        p = data.init_full(np.random.default_rng(0), 3, 2, 3, alphas)
        assert p["W_K"].shape == (len(alphas), 3, 2)
    else:
        with pytest.raises(ValueError, match=r"alphas must be .* in \(0, 1\]"):
            data.init_full(np.random.default_rng(0), 3, 2, 3, alphas)
