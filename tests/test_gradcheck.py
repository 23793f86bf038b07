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


# --------------------------------------------------------------------------------------------
# The checker as a student calls it
# --------------------------------------------------------------------------------------------
import re
import warnings
from pathlib import Path

from minitheory.gradcheck import GradcheckWarning, contract_runs


def linear_least_squares(p, X, y):
    """f = |X w - y|^2 / 2: gradient X^T (X w - y)."""
    resid = X @ p["w"] - y
    return 0.5 * resid @ resid, {"w": X.T @ resid}


def test_extra_positional_arguments_are_passed_through_to_the_model_and_pattern():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    seen = []
    rep = check_gradients(linear_least_squares, {"w": rng.standard_normal(3)}, X, y,
                          pattern=lambda p, X_, y_: seen.append((X_ is X, y_ is y)) or np.ones(1))
    assert rep.n_compared == {"w": 3} and seen and all(a and b for a, b in seen)

    def wrong(p, X, y):
        loss, g = linear_least_squares(p, X, y)
        return loss, {"w": 1.01 * g["w"]}
    with pytest.raises(GradcheckError, match="'w'"):
        check_gradients(wrong, {"w": rng.standard_normal(3)}, X, y)


def test_readme_example_runs_and_catches_a_wrong_gradient():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## How gradients are checked"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)          # the student's example as is
    report = namespace["report"]
    assert sum(report.n_compared.values()) > 0 and not report.only_zeros
    # the same call with a wrong gradient fails
    model, params, X, y = (namespace[k] for k in ("model", "params", "X", "y"))

    def wrong(p, X, y):
        loss, g = model.loss_and_grads(p, X, y)
        return loss, dict(g, W_V=g["W_V"] * 1.01)
    with pytest.raises(GradcheckError, match="W_V"):
        check_gradients(wrong, params, X, y, pattern=model.relu_pattern)


def test_a_check_that_compares_nothing_fails_and_only_zeros_warns():
    relu = lambda p: (np.sum(np.maximum(p["x"], 0)), {"x": (p["x"] > 0).astype(float)})  # noqa
    with pytest.raises(GradcheckError, match="nothing was compared"):
        check_gradients(relu, {"x": np.array([1e-8, -1e-9])}, pattern=lambda p: p["x"] > 0)
    with pytest.raises(GradcheckError, match="no gradients"):
        check_gradients(lambda p: (0.0, {}), {"x": np.ones(2)})
    # a hinge at zero loss: loss and every gradient are 0, so any formula would "pass"
    hinge = lambda p: (np.sum(np.maximum(0.0, 1 - p["w"] * 3.0)),  # noqa: E731
                       {"w": np.where(1 - p["w"] * 3.0 > 0, -3.0, 0.0)})
    with pytest.warns(GradcheckWarning, match="cannot tell a right gradient from a wrong one"):
        rep = check_gradients(hinge, {"w": np.array([2.0, 5.0])})
    assert rep.only_zeros == ["w"]
    with pytest.warns(GradcheckWarning, match="cannot tell"):     # "zero" includes |value| = atol
        rep = check_gradients(hinge, {"w": np.array([2.0, 5.0])}, atol=0.0)
    assert rep.only_zeros == ["w"]
    with warnings.catch_warnings():                       # away from zero loss: no warning
        warnings.simplefilter("error", GradcheckWarning)
        check_gradients(hinge, {"w": np.array([0.1, 0.2])})


def test_large_arrays_get_a_default_generator_and_repeat_exactly():
    p = {"x": np.linspace(-1, 1, 3), "y": np.linspace(0.5, 2, 100)}        # 100 > full_max
    a = check_gradients(quadratic, p)
    b = check_gradients(quadratic, p)
    assert a.n_compared["y"] == 4 and a.max_abs_error == b.max_abs_error

    def wrong(p):
        loss, g = quadratic(p)
        return loss, dict(g, y=g["y"] * (1 + 1e-3 * (np.arange(100) == 40)))
    with pytest.raises(GradcheckError, match="'y' at direction"):
        check_gradients(wrong, p)                          # caught along random directions


def test_contract_runs_uses_a_cotangent_and_catches_a_gradient_mixing_runs():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 4, 3))                  # two runs, each its own data

    def per_run(p, X):
        resid = np.einsum("rbi,ri->rb", X, p["w"])
        return 0.5 * np.sum(resid**2, -1), {"w": np.einsum("rbi,rb->ri", X, resid)}
    p = {"w": rng.standard_normal((2, 3))}
    with pytest.raises(ValueError, match="contract_runs"):
        check_gradients(per_run, p, X)                 # a per-run loss is not a scalar
    cot = rng.uniform(0.5, 1.5, 2)
    check_gradients(contract_runs(per_run, cot), p, X)

    def swapped(p, X):                                  # run 0 gets run 1's gradient
        loss, g = per_run(p, X)
        return loss, {"w": g["w"][::-1]}
    with pytest.raises(GradcheckError):
        check_gradients(contract_runs(swapped, cot), p, X)
    with pytest.raises(ValueError, match="cotangent"):
        check_gradients(contract_runs(per_run, [1.0, 2.0, 3.0]), p, X)


def test_a_function_that_does_not_return_loss_and_grads_is_named():
    with pytest.raises(TypeError, match=r"must return \(loss, grads\)"):
        check_gradients(lambda p: np.sum(p["x"]), {"x": np.ones(2)})
