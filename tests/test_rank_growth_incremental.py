"""Algorithm 1 (the alpha -> 0 limit): its invariants and its agreement with gradient descent."""
import numpy as np
import pytest

from minitheory.rank_growth import analysis, data, incremental, model, training


@pytest.fixture(scope="module")
def toy():
    X, Y = data.diagonal_toy(0, 256, 8, 4)
    return X, Y, incremental.incremental_learning(X, Y)


def test_plateau_points_are_stationary_on_their_support(toy):
    X, Y, res = toy
    d = res.d
    for w in res.plateau_w:
        _, g = model.loss_and_grads_ab({"a": w[:d], "b": w[d:]}, X, Y)
        grad = np.concatenate([g["a"], g["b"]])
        assert np.max(np.abs(grad[w != 0])) < 1e-8
    assert np.all(res.stationarity < 1e-9)


def test_stages_add_one_coordinate_at_increasing_times_and_falling_loss(toy):
    _, _, res = toy
    assert np.all(np.diff(res.times) > 0) and res.times[0] > 0
    assert np.all(np.diff(np.concatenate([[res.loss0], res.plateau_loss])) < 0)
    support = np.count_nonzero(res.plateau_w, axis=1)
    np.testing.assert_array_equal(support, np.arange(1, len(res.times) + 1))
    assert np.all(res.margin > 0)                                      # unique argmin
    for k, i in enumerate(res.coordinate):                              # the named one joined
        assert res.plateau_w[k, i] != 0 and (k == 0 or res.plateau_w[k - 1, i] == 0)


def test_first_stage_is_a_value_output_direction_at_the_closed_form_time(toy):
    # dL/da = 0 while b = 0, so b goes first, at tbar_1 = 1 / max_j |dL/db_j(0)| (spec (d))
    X, Y, res = toy
    _, g = model.loss_and_grads_ab({"a": np.zeros(4), "b": np.zeros(4)}, X, Y)
    assert res.names()[0].startswith("b")
    assert res.times[0] == pytest.approx(1 / np.max(np.abs(g["b"])), rel=1e-12)


def test_reference_stages_of_the_spec(toy):
    # spec (g): b0 0.560, a0 0.635, b2 1.347, b1 1.951, a1 2.087; losses 5.277 ... ~0
    _, _, res = toy
    assert res.names() == ["b0", "a0", "b2", "b1", "a1"]
    np.testing.assert_allclose(res.times, [0.560, 0.635, 1.347, 1.951, 2.087], atol=1e-3)
    np.testing.assert_allclose(res.plateau_loss[:4], [5.277, 2.179, 1.995, 1.909], atol=1e-3)
    assert res.plateau_loss[-1] < 1e-12
    np.testing.assert_allclose(res.plateau_w[-1], data.A_STAR + data.B_STAR, atol=1e-6)
    assert res.staircase([0.0, 0.6, 10.0]).tolist() == [res.loss0, res.plateau_loss[0],
                                                          res.plateau_loss[-1]]


def test_agrees_with_gradient_descent_at_alpha_1e_8():
    X, Y = data.diagonal_toy(0, 64, 8, 4)
    res = incremental.incremental_learning(X, Y)
    p0 = data.init_diagonal(np.random.default_rng(1), 4, [1e-8])
    n = training.steps_for([1e-8], 1.2 * res.times[-1], 0.02)
    _, h = training.train_diagonal(p0, X, Y, eta=0.02, n_steps=n)
    tbar = analysis.rescaled_time(h["step"], 0.02, [1e-8])
    act = analysis.activation_times(tbar, np.concatenate([h["a"], h["b"]], -1))[0]
    observed_order = np.argsort(act)[:len(res.coordinate)]
    np.testing.assert_array_equal(observed_order, res.coordinate)
    np.testing.assert_allclose(act[res.coordinate], res.times, rtol=0.15)
    # and GD sits on the predicted plateaus that last (>= 0.5 in rescaled time; on a short one
    # GD at finite alpha is still in the jump, which is late by O(1/log(1/alpha)))
    obs = analysis.observed_plateau_losses(res, tbar[:, 0], h["loss"][:, 0], 1.2 * res.times[-1])
    long = np.diff(res.times) >= 0.5
    assert long.sum() >= 2
    np.testing.assert_allclose(obs[:-1][long], res.plateau_loss[:-1][long], rtol=0.01)


def test_bad_arguments():
    X, Y = data.diagonal_toy(0, 4, 3, 4)
    with pytest.raises(ValueError, match="euler_step"):
        incremental.incremental_learning(X, Y, euler_step=0.0)
    with pytest.raises(ValueError, match="eps"):
        incremental.incremental_learning(X, Y, eps=0.5)
    with pytest.raises(ValueError, match="X must"):
        incremental.incremental_learning(X[0], Y)
    with pytest.raises(RuntimeError, match="max_evals"):
        incremental.incremental_learning(X, Y, max_evals=50)


def test_support_data_gives_the_full_loss_and_the_gradient_on_the_support():
    # a_j = b_j = 0 off J: the restricted arrays give the same loss and the exact gradient on J
    rng = np.random.default_rng(3)
    X, Y, _, _ = data.paper_toy(1, n_seq=20, n_tokens=5, d=9, nnz_a=3, nnz_b=4)
    J = np.array([1, 4, 5, 8])
    a, b = np.zeros(9), np.zeros(9)
    a[[1, 5]], b[[4, 5, 8]] = rng.standard_normal(2), rng.standard_normal(3)   # a_4 = b_1 = 0
    full = model.diagonal_data(X, Y, 1)
    y_sq = 0.5 * np.einsum("sjk,sjk->j", full["Yt"], full["Yt"]) / X.shape[0]
    data_J, rest = incremental.support_data(full, J, y_sq)
    loss, ga, gb = model.ab_loss_and_grads_unchecked(a[None], b[None], full)
    loss_J, ga_J, gb_J = model.ab_loss_and_grads_unchecked(a[None, J], b[None, J], data_J)
    assert loss_J[0] + rest == pytest.approx(loss[0], rel=1e-13)
    np.testing.assert_allclose(ga_J[0], ga[0, J], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gb_J[0], gb[0, J], rtol=1e-12, atol=1e-15)
    assert rest > 0 and np.all(ga[0, J] != 0)                  # the check is not vacuous
