"""The one-layer transformer of the low-rank/sparse paper (arXiv:2406.17167v1, Sec. 2), fast twin:
gradients against finite differences and the invariants the model must satisfy (query/key gauge,
positive homogeneity, exact pruning, token permutation). The scalar oracle, the reference and the
planted wrong forwards are in ``test_lowrank_sparse_reference.py``."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.lowrank_sparse import analysis, checks, model, reference
from strategies import contract_runs, scales, seeds, small


def _params(rng, d, m_b, m_a, m, L, scale, R=None):
    lead = () if R is None else (R,)
    return {"W_Q": scale * rng.standard_normal(lead + (m_b, d)),
            "W_K": scale * rng.standard_normal(lead + (m_b, d)),
            "W_V": scale * rng.standard_normal(lead + (m_a, d)),
            "W_O": scale * rng.standard_normal(lead + (m, m_a)),
            "a": rng.choice([-1.0, 1.0], size=lead + (L, m))}


@given(B=small, L=small, d=small, m_b=small, m_a=small, m=small,
       R=st.sampled_from([None, 2]), seed=seeds, scale=scales)
def test_gradients_match_finite_differences_away_from_kinks(B, L, d, m_b, m_a, m, R, seed, scale):
    rng = np.random.default_rng(seed)
    lead = () if R is None else (R,)
    X = rng.standard_normal(lead + (B, L, d))
    y = rng.choice([-1.0, 1.0], size=lead + (B,))
    p = _params(rng, d, m_b, m_a, m, L, scale, R)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    # Keep the draw off the kinks (a few percent of draws have a pre-activation or margin this
    # close); the pattern guard below still skips any perturbation that crosses one.
    F, cache = model.forward(*(({k: v[None] for k, v in p.items()}, X[None]) if R is None
                               else (p, X)))
    assume(np.min(np.abs(cache["P"])) > 1e-3 and np.min(np.abs(1 - y * F)) > 1e-3)
    # ... and off flat points (every margin met, or every ReLU off), where a wrong gradient
    # would pass too
    assume(any(np.abs(g).max() > 1e-6 for g in model.loss_and_grads(p, X, y)[1].values()))

    f = contract_runs(lambda q: model.loss_and_grads(q, X, y), R, cot)
    report = check_gradients(f, p, rng=rng, full_max=30,
                             pattern=lambda q: model.relu_pattern(q, X, y))
    assert set(report.n_compared) == set(model.TRAINED)        # "a" is fixed: never checked
    compared = sum(report.n_compared.values())
    assert compared >= 0.8 * (compared + sum(report.n_skipped.values()))


def test_fixed_a_gets_no_gradient():
    rng = np.random.default_rng(0)
    p = _params(rng, 3, 2, 2, 4, 5, 1.0)
    _, grads = model.loss_and_grads(p, rng.standard_normal((6, 5, 3)), np.ones(6))
    assert set(grads) == {"W_Q", "W_K", "W_V", "W_O"}


def test_saturated_samples_contribute_exactly_zero():
    rng = np.random.default_rng(1)
    p = _params(rng, 3, 2, 2, 4, 5, 1.0)
    X = rng.standard_normal((6, 5, 3))
    y = np.sign(model.output(p, X))
    p["W_O"] *= 10.0 / np.min(np.abs(model.output(p, X)))       # every margin yF >= 10
    loss, grads = model.loss_and_grads(p, X, y)
    assert loss == 0.0 and all(np.all(g == 0.0) for g in grads.values())


@given(seed=seeds, scale=scales)
def test_query_key_gauge_and_positive_homogeneity(seed, scale):
    rng = np.random.default_rng(seed)
    p = _params(rng, 4, 3, 3, 5, 6, scale)
    X = rng.standard_normal((3, 6, 4))
    F = model.output(p, X)
    Rm = np.eye(3) + 0.3 * rng.standard_normal((3, 3))
    q = dict(p, W_Q=Rm @ p["W_Q"], W_K=np.linalg.inv(Rm).T @ p["W_K"])
    np.testing.assert_allclose(model.output(q, X), F, rtol=1e-9, atol=1e-12)
    c = rng.uniform(0.1, 10.0)
    tol = 1e-12 * c * np.abs(F).max()       # rounding scale of the sum; an entry can cancel
    np.testing.assert_allclose(model.output(dict(p, W_O=c * p["W_O"]), X), c * F, atol=tol)
    np.testing.assert_allclose(model.output(dict(p, W_V=c * p["W_V"]), X), c * F, atol=tol)


def test_token_permutation_invariance_holds_only_with_shared_a():
    rng = np.random.default_rng(2)
    p = _params(rng, 4, 4, 4, 6, 5, 1.0)
    X = rng.standard_normal((3, 5, 4))
    perm = rng.permutation(5)
    shared = dict(p, a=np.repeat(p["a"][:1], 5, axis=0))
    np.testing.assert_allclose(model.output(shared, X[:, perm]), model.output(shared, X),
                               rtol=1e-12)
    assert not np.allclose(model.output(p, X[:, perm]), model.output(p, X), rtol=1e-6)


def test_pruning_a_row_removes_exactly_its_contribution():
    rng = np.random.default_rng(3)
    p = _params(rng, 4, 4, 4, 6, 5, 1.0)
    X = rng.standard_normal((3, 5, 4))
    F, cache = model.forward({k: v[None] for k, v in p.items()}, X[None])
    P = cache["P"][0]                                                   # (B, L, m)
    for i in range(6):
        W_O = p["W_O"].copy()
        W_O[i] = 0.0
        expected = F[0] - np.maximum(P[:, :, i], 0) @ p["a"][:, i] / 5
        np.testing.assert_allclose(model.output(dict(p, W_O=W_O), X), expected, atol=1e-13)


def test_attention_mass_in_unit_interval_and_uniform_when_W_Q_is_zero():
    rng = np.random.default_rng(4)
    p = {k: v[None] for k, v in _params(rng, 4, 4, 4, 6, 10, 1.0).items()}
    X = rng.standard_normal((1, 7, 10, 4))
    y = rng.choice([-1.0, 1.0], size=(1, 7))
    rel = np.zeros((1, 7, 10), bool)
    rel[..., :4] = True
    att = analysis.evaluate(p, X, y, rel)[2]
    assert 0 <= att[0] <= 1
    p["W_Q"][:] = 0.0
    assert analysis.evaluate(p, X, y, rel)[2][0] == pytest.approx(4 / 10, abs=1e-15)


@pytest.mark.parametrize("twin", [model, reference], ids=["fast", "reference"])
def test_bad_inputs_name_the_parameter(twin):
    rng = np.random.default_rng(5)
    p = _params(rng, 4, 3, 3, 5, 6, 1.0)
    X, y = rng.standard_normal((2, 6, 4)), np.array([1.0, -1.0])
    with pytest.raises(ValueError, match=r"X must have shape \(B, L, 4\)"):
        twin.loss_and_grads(p, X[..., :3], y)
    with pytest.raises(ValueError, match=r"params\['a'\] must have shape \(L, m\) = \(7, 5\)"):
        twin.loss_and_grads(p, rng.standard_normal((2, 7, 4)), y)
    with pytest.raises(ValueError, match=r"y must have shape"):
        twin.loss_and_grads(p, X, np.ones(3))
    with pytest.raises(ValueError, match="y must contain only -1 and \\+1"):
        twin.loss_and_grads(p, X, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"params\['W_K'\] must have shape"):
        twin.loss_and_grads(dict(p, W_K=np.ones((2, 4))), X, y)
    with pytest.raises(ValueError, match=r"params\['W_O'\] must contain only finite"):
        twin.loss_and_grads(dict(p, W_O=np.full((5, 3), np.nan)), X, y)
    with pytest.raises(ValueError, match="missing keys"):
        twin.loss_and_grads({"W_Q": p["W_Q"]}, X, y)


def test_both_twins_check_through_the_same_module():
    rng = np.random.default_rng(6)
    p = _params(rng, 4, 3, 3, 5, 6, 1.0)
    X = rng.standard_normal((2, 6, 4))
    assert model.KEYS == reference.KEYS == checks.KEYS
    runs, X_r, _, squeeze = checks.check_inputs(p, X, None)
    assert squeeze and X_r.shape == (1, 2, 6, 4) and runs["W_O"].shape == (1, 5, 3)
    for twin in (model, reference):
        with pytest.raises(ValueError, match="y must contain only -1 and \\+1"):
            twin.relu_pattern(p, X, np.array([1.0, 2.0]))
        with pytest.raises(TypeError, match="params must be a dict"):
            twin.output([p["W_Q"]], X)
