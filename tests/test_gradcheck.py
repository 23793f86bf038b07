import numpy as np
import pytest

from minitheory.gradcheck import GradcheckError, check_gradients


def quadratic(p):
    """f = sum(A x * x) / 2 + sum(y^3): gradient (A + A^T) x / 2, 3 y^2."""
    A = np.arange(9.0).reshape(3, 3) / 9
    x, y = p["x"], p["y"]
    return 0.5 * x @ A @ x + np.sum(y**3), {"x": 0.5 * (A + A.T) @ x, "y": 3 * y**2}


def test_accepts_a_correct_gradient_full_and_directional():
    rng = np.random.default_rng(0)
    p = {"x": rng.standard_normal(3), "y": rng.standard_normal(100)}
    rep = check_gradients(quadratic, p, rng=rng, full_max=10)
    assert rep.n_compared == {"x": 3, "y": 4}
    assert rep.max_abs_error["x"] < 1e-8


@pytest.mark.parametrize("full_max", [1000, 10])
def test_rejects_a_wrong_entry_and_names_it(full_max):
    def wrong(p):
        loss, g = quadratic(p)
        g = dict(g)
        g["y"] = g["y"].copy()
        g["y"][7] *= 1.001                             # one entry off by 0.1%
        return loss, g

    rng = np.random.default_rng(1)
    p = {"x": rng.standard_normal(3), "y": rng.standard_normal(20) + 2.0}
    with pytest.raises(GradcheckError, match=r"'y'") as info:
        check_gradients(wrong, p, rng=rng, full_max=full_max)
    if full_max == 1000:
        assert "(7,)" in str(info.value)               # the worst entry is named


def test_fixed_keys_are_not_perturbed_and_shapes_are_checked():
    calls = []

    def f(p):
        calls.append(p["fixed"].copy())
        return np.sum(p["x"] ** 2) * p["fixed"][0], {"x": 2 * p["x"] * p["fixed"][0]}

    check_gradients(f, {"x": np.ones(2), "fixed": np.array([3.0])})
    assert all(np.array_equal(c, [3.0]) for c in calls)
    with pytest.raises(GradcheckError, match="shape"):
        check_gradients(lambda p: (0.0, {"x": np.zeros(3)}), {"x": np.ones(2)})


def test_kink_guard_skips_perturbations_that_cross_a_kink():
    relu_sum = lambda p: (np.sum(np.maximum(p["x"], 0)), {"x": (p["x"] > 0).astype(float)})  # noqa
    x = np.array([1.0, -1.0, 1e-8])                    # the last entry sits within eps of the kink
    with pytest.raises(GradcheckError):
        check_gradients(relu_sum, {"x": x})
    rep = check_gradients(relu_sum, {"x": x}, pattern=lambda p: p["x"] > 0)
    assert rep.n_compared["x"] == 2 and rep.n_skipped["x"] == 1


def test_refuses_float32_and_array_losses():
    with pytest.raises(ValueError, match="float64"):
        check_gradients(quadratic, {"x": np.ones(3, np.float32), "y": np.ones(2)})
    with pytest.raises(ValueError, match="scalar"):
        check_gradients(lambda p: (p["x"], {"x": np.ones(2)}), {"x": np.ones(2)})


def test_rounding_term_only_matters_for_large_losses():
    # a loss of ~1e3 with a tiny gradient entry: the reference's own rounding (~u|f|/h)
    # exceeds atol, and the checker accounts for it; a real 0.1% error is still caught.
    def big(p):
        return 1e3 + 1e-5 * p["x"][0] ** 2 + np.sum(p["x"]), {"x": np.array([2e-5 * p["x"][0] + 1, 1.0])}

    check_gradients(big, {"x": np.array([0.3, 0.2])})

    def wrong(p):
        loss, g = big(p)
        return loss, {"x": g["x"] * np.array([1.001, 1.0])}

    with pytest.raises(GradcheckError):
        check_gradients(wrong, {"x": np.array([0.3, 0.2])})
