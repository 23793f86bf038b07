"""The low-rank/sparse transformer tied to its equation: a scalar oracle, the plain reference, the
fast twin, and wrong forwards planted in the real source that these checks must reject.

- the oracle (:func:`oracle_F`, :func:`oracle_loss`): plain Python loops over runs, samples, query
  positions l and key positions s evaluating the paper's scalar formulas
  (beta_{s,l} = exp(x_s^T W_K^T W_Q x_l) / sum_{s'} exp(x_{s'}^T W_K^T W_Q x_l), ...);
- the reference (``reference.py``) equals the oracle; the fast twin (``model.py``) equals the
  reference, loss and every gradient; both pass finite differences;
- planted bugs: the source of ``reference.py`` / ``model.py`` with one known wrong edit is
  compiled into a fresh module, and the same comparison helpers must reject it.
"""
import inspect
import math
import types

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minitheory.gradcheck import GradcheckError, check_gradients
from minitheory.lowrank_sparse import model, reference
from strategies import contract_runs, scales, seeds, small

KEYS = ("W_Q", "W_K", "W_V", "W_O", "a")


def _case(seed, B, L, d, m_b, m_a, m, R=None, scale=1.0):
    """Random parameters (no symmetry between W_Q and W_K), tokens and labels."""
    rng = np.random.default_rng(seed)
    lead = () if R is None else (R,)
    p = {"W_Q": scale * rng.standard_normal(lead + (m_b, d)),
         "W_K": scale * rng.standard_normal(lead + (m_b, d)),
         "W_V": scale * rng.standard_normal(lead + (m_a, d)),
         "W_O": scale * rng.standard_normal(lead + (m, m_a)),
         "a": rng.choice([-1.0, 1.0], size=lead + (L, m))}
    X = rng.standard_normal(lead + (B, L, d))
    y = rng.choice([-1.0, 1.0], size=lead + (B,))
    return p, X, y


# ---------------------------------------------------------------- the oracle (scalar formulas)

def oracle_F(params, X):
    """F(X_b) of one model (2-D arrays) straight from the scalar definition, one loop per index."""
    W_Q, W_K, W_V, W_O, a = (params[k] for k in KEYS)
    B, L, _ = X.shape
    F = np.zeros(B)
    for b in range(B):
        x = X[b]                                               # x[l] is the token x_l
        total = 0.0
        for l in range(L):
            weights = [math.exp(x[s] @ W_K.T @ W_Q @ x[l]) for s in range(L)]
            denominator = sum(weights)
            beta = [w / denominator for w in weights]          # beta[s] = beta_{s,l}
            h = sum(beta[s] * (W_V @ x[s]) for s in range(L))  # h_l
            p = W_O @ h                                        # p_l
            total += sum(a[l, i] * max(p[i], 0.0) for i in range(len(p)))
        F[b] = total / L
    return F


def F_scale(params, X):
    """The size of the terms that F sums, (1/L) sum_l sum_i |a_li| ReLU(p_li), maximized over
    samples and runs: F's rounding error is relative to it, not to F, whose terms can cancel
    (a draw with F = -4.7e-11 from terms of order 1 differed from the loop by 6e-16)."""
    P = reference.forward(params, X)[1]["P"]                  # (.., B, L, m)
    a = params["a"]                                            # (.., L, m)
    return float(np.max(np.sum(np.abs(a[..., None, :, :]) * np.maximum(P, 0.0), axis=(-2, -1))
                        / P.shape[-2]))


def oracle_loss(params, X, y):
    """(1/B) sum_b max{0, 1 - y_b F(X_b)} of one model, as a loop."""
    F = oracle_F(params, X)
    return sum(max(0.0, 1.0 - y[b] * F[b]) for b in range(len(y))) / len(y)


def _per_run(fn, params, *arrays):
    """Apply a one-model oracle to each run of run-axis arrays (``None``-free)."""
    return np.array([fn({k: v[r] for k, v in params.items()}, *(x[r] for x in arrays))
                     for r in range(arrays[0].shape[0])])


def assert_matches_oracle(mod, params, X, y):
    """``mod.forward`` and ``mod.loss_and_grads_unchecked`` (run axis) equal the oracle."""
    F = mod.forward(params, X)[0]
    want_F = _per_run(oracle_F, params, X)
    np.testing.assert_allclose(F, want_F, rtol=1e-10, atol=1e-12 * F_scale(params, X))
    loss = mod.loss_and_grads_unchecked(params, X, y)[0]
    np.testing.assert_allclose(loss, _per_run(oracle_loss, params, X, y), rtol=1e-10, atol=1e-13)


def assert_twins_agree(fast, ref, params, X, y):
    """Fast twin == reference: ``F``, attention, pre-activations, loss and every gradient."""
    (F, cf), (F_ref, cr) = fast.forward(params, X), ref.forward(params, X)
    np.testing.assert_allclose(F, F_ref, rtol=1e-12, atol=1e-12 * F_scale(params, X))
    for got, want in ((cf["A"], cr["A"]), (cf["P"], cr["P"])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    (loss, g), (loss_ref, g_ref) = (m.loss_and_grads_unchecked(params, X, y) for m in (fast, ref))
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12, atol=1e-15)
    assert set(g) == set(g_ref) == {"W_Q", "W_K", "W_V", "W_O"}
    atol = _gradient_atol(ref, params, X, y)
    for k in g_ref:                     # atol: rounding of a sum whose entries cancel
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-12, atol=atol[k], err_msg=k)


def _gradient_atol(ref, params, X, y):
    """Per gradient, the rounding the comparison must allow: 1e-12 of the size of the terms the
    gradient sums (the backward with the readout ``a`` and the cotangent ``dF`` replaced by
    their absolute values, so no term cancels another through their signs), plus 16 times the
    reference's own float64 error, measured against the reference run in extended precision
    (``np.longdouble``): a softmax VJP over two keys, or ``a = (-1, 1)/sqrt(m)``, cancels terms
    of order one to a gradient of ~1e-7, where the twins differed by 1e-11 relative (found by
    the default and thorough profiles)."""
    F, cache = ref.forward(params, X)
    dF = np.abs(np.where(y * F < 1.0, -y, 0.0)) / X.shape[-3]
    terms = ref.backward(dict(params, a=np.abs(params["a"])), cache, dF)
    g64 = ref.loss_and_grads_unchecked(params, X, y)[1]
    g_ext = ref.loss_and_grads_unchecked({k: v.astype(np.longdouble) for k, v in params.items()},
                                         X.astype(np.longdouble), y.astype(np.longdouble))[1]
    return {k: 1e-12 * max(np.abs(g64[k]).max(), np.abs(terms[k]).max())
            + 16 * float(np.abs(g64[k] - g_ext[k]).max()) for k in g64}


def _off_kinks(params, X, y, gap=1e-8):
    """No pre-activation and no margin within ``gap`` of a kink (the twins may round apart)."""
    F, cache = reference.forward(params, X)
    return np.min(np.abs(cache["P"])) > gap and np.min(np.abs(1 - y * F)) > gap


# ---------------------------------------------------------------- the real code

@given(B=small, L=st.integers(1, 3), d=small, m_b=small, m_a=small, m=small,
       R=st.sampled_from([None, 1, 2]), seed=seeds, scale=scales)
def test_reference_forward_and_hinge_loss_equal_the_scalar_oracle(B, L, d, m_b, m_a, m, R,
                                                                   seed, scale):
    p, X, y = _case(seed, B, L, d, m_b, m_a, m, R, scale)
    F = reference.forward(p, X)[0]                 # the reference takes either layout itself
    if R is None:
        np.testing.assert_allclose(F, oracle_F(p, X), rtol=1e-10, atol=1e-12 * F_scale(p, X))
        p, X, y = {k: v[None] for k, v in p.items()}, X[None], y[None]
    assert_matches_oracle(reference, p, X, y)


@given(B=small, L=small, d=small, m_b=small, m_a=small, m=small,
       R=st.sampled_from([None, 1, 3]), seed=seeds, scale=scales)
def test_fast_twin_equals_reference_loss_and_every_gradient(B, L, d, m_b, m_a, m, R, seed, scale):
    p, X, y = _case(seed, B, L, d, m_b, m_a, m, R, scale)
    assume(_off_kinks(p, X, y))                    # fails for ~1e-8 of draws
    for fn in (model.loss_and_grads, reference.loss_and_grads):   # checked entry points too
        assert isinstance(fn(p, X, y)[0], float if R is None else np.ndarray)
    (loss, g), (loss_ref, g_ref) = model.loss_and_grads(p, X, y), reference.loss_and_grads(p, X, y)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12, atol=1e-15)
    atol = _gradient_atol(reference, p, X, y)
    for k in g_ref:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-12, atol=atol[k], err_msg=k)
    runs = (({k: v[None] for k, v in p.items()}, X[None], y[None]) if R is None else (p, X, y))
    assert_twins_agree(model, reference, *runs)


def test_neither_twin_modifies_its_inputs():
    p, X, y = _case(0, 3, 4, 3, 2, 3, 5, R=2)
    before = ({k: v.copy() for k, v in p.items()}, X.copy(), y.copy())
    for mod in (model, reference):
        F, cache = mod.forward(p, X)
        kept = {k: v.copy() for k, v in cache.items()}
        mod.backward(p, cache, np.ones_like(F))
        mod.loss_and_grads(p, X, y)
        assert all(np.array_equal(cache[k], kept[k]) for k in kept), mod.__name__
    assert all(np.array_equal(p[k], before[0][k]) for k in p)
    assert np.array_equal(X, before[1]) and np.array_equal(y, before[2])


@given(B=small, L=small, d=small, m_b=small, m_a=small, m=small,
       R=st.sampled_from([None, 2]), seed=seeds, scale=scales)
def test_reference_gradients_match_finite_differences(B, L, d, m_b, m_a, m, R, seed, scale):
    p, X, y = _case(seed, B, L, d, m_b, m_a, m, R, scale)
    assume(_off_kinks(p, X, y, gap=1e-3))          # the pattern guard below skips the rest
    # off flat points (every margin met, or every ReLU off), where a wrong gradient passes too
    assume(any(np.abs(g).max() > 1e-6 for g in reference.loss_and_grads(p, X, y)[1].values()))
    rng = np.random.default_rng(seed)
    f = contract_runs(lambda q: reference.loss_and_grads(q, X, y), R,
                      rng.uniform(0.5, 1.5, size=R or 1))
    report = check_gradients(f, p, rng=rng, full_max=30,
                             pattern=lambda q: reference.relu_pattern(q, X, y))
    assert set(report.n_compared) == set(reference.TRAINED)
    compared = sum(report.n_compared.values())
    assert compared >= 0.8 * (compared + sum(report.n_skipped.values()))


# ---------------------------------------------------------------- planted wrong forwards

def mutant(module, *edits):
    """``module`` compiled from its own source with each ``(old, new)`` edit applied once.

    Each ``old`` must occur exactly once, so an edit of the source that moves the line makes
    this test fail loudly instead of planting nothing.
    """
    src = inspect.getsource(module)
    for old, new in edits:
        assert src.count(old) == 1, f"{old!r} occurs {src.count(old)} times in {module.__name__}"
        src = src.replace(old, new)
    mod = types.ModuleType(f"{module.__name__}_mutant")
    mod.__package__ = module.__package__
    exec(compile(src, f"<mutant of {module.__name__}>", "exec"), mod.__dict__)
    return mod


REFERENCE_BUGS = {
    "attention normalized over queries (softmax axis=-2)": [
        ("logits.max(axis=-1, keepdims=True)", "logits.max(axis=-2, keepdims=True)"),
        ("e / e.sum(axis=-1, keepdims=True)", "e / e.sum(axis=-2, keepdims=True)"),
        ("np.sum(dA * A, axis=-1, keepdims=True)", "np.sum(dA * A, axis=-2, keepdims=True)")],
    "logits x_s^T W_Q^T W_K x_l (W_K^T W_Q transposed)": [
        ('np.einsum("...bsi,...bli->...bls", Kx, Qx)', 'np.einsum("...bsi,...bli->...bls", Qx, Kx)')],
    "dropped 1/L": [("np.maximum(P, 0.0)) / L", "np.maximum(P, 0.0))")],
    "dropped 1/B": [("axis=-1) / B", "axis=-1)")],
    "ReLU replaced by the identity": [("np.maximum(P, 0.0)) / L", "P) / L")],
}
FAST_BUGS = {
    "attention normalized over queries (softmax axis=-2)": [
        ("fast_softmax(logits, out=logits)",
         "fast_softmax(logits.swapaxes(-1, -2)).swapaxes(-1, -2)"),
        ("fast_softmax_vjp(A, dA, out=dA)",
         "fast_softmax_vjp(A.swapaxes(-1, -2), dA.swapaxes(-1, -2)).swapaxes(-1, -2)")],
    "logits x_s^T W_Q^T W_K x_l (W_K^T W_Q transposed)": [
        ("logits = Qx @ Kx.swapaxes(-1, -2)", "logits = Kx @ Qx.swapaxes(-1, -2)")],
    "dropped 1/L": [("[..., 0] / L", "[..., 0]")],
    "dropped 1/B": [(".sum(-1) / B", ".sum(-1)")],
    "ReLU replaced by the identity": [("np.maximum(P, 0.0).reshape(", "P.reshape(")],
}
# Sizes at which every planted bug changes the numbers: L, B >= 2, random (non-symmetric)
# W_Q, W_K, and pre-activations of both signs.
PLANTED_CASES = [_case(seed, 3, 4, 3, 2, 3, 5, R=2) for seed in range(3)]


def _rejects(check, *args):
    try:
        check(*args)
    except AssertionError:
        return True
    return False


@pytest.mark.parametrize("bug", REFERENCE_BUGS)
def test_oracle_rejects_every_wrong_reference(bug):
    control, wrong = mutant(reference), mutant(reference, *REFERENCE_BUGS[bug])
    for case in PLANTED_CASES:
        assert_matches_oracle(control, *case)      # the compiled copy itself is right
        assert _rejects(assert_matches_oracle, wrong, *case), bug


@pytest.mark.parametrize("bug", FAST_BUGS)
def test_equality_and_oracle_reject_every_wrong_fast_twin(bug):
    control, wrong = mutant(model), mutant(model, *FAST_BUGS[bug])
    for case in PLANTED_CASES:
        assert_twins_agree(control, reference, *case)
        assert _rejects(assert_twins_agree, wrong, reference, *case), bug
        assert _rejects(assert_matches_oracle, wrong, *case), bug


def _gradcheck(mod, case):
    p, X, y = case
    rng = np.random.default_rng(7)
    f = contract_runs(lambda q: mod.loss_and_grads(q, X, y), 2, np.array([0.7, 1.3]))
    return check_gradients(f, p, rng=rng, full_max=30,
                           pattern=lambda q: mod.relu_pattern(q, X, y))


@pytest.mark.parametrize("mod", [reference, model], ids=["reference", "fast"])
def test_finite_differences_cannot_see_a_consistent_wrong_softmax_axis(mod):
    # why the oracle exists: forward and backward normalized over the same wrong axis are a
    # smooth function with its true gradient, so the gradient check passes ...
    bugs = (REFERENCE_BUGS if mod is reference else FAST_BUGS)
    wrong = mutant(mod, *bugs["attention normalized over queries (softmax axis=-2)"])
    for case in PLANTED_CASES:
        assert set(_gradcheck(wrong, case).n_compared) == set(mod.TRAINED)


def test_finite_differences_reject_a_softmax_vjp_without_its_row_term():
    # ... while a backward that drops the row term of the softmax VJP fails it
    wrong = mutant(reference, ("A * (dA - np.sum(dA * A, axis=-1, keepdims=True))", "A * dA"))
    for case in PLANTED_CASES:
        _gradcheck(reference, case)
        with pytest.raises(GradcheckError):
            _gradcheck(wrong, case)


@pytest.mark.parametrize("mod", [reference, model], ids=["reference", "fast"])
def test_kink_pattern_is_the_active_relus_and_hinges(mod):
    # the gradient checks trust this pattern to tell when a perturbation crossed a kink: its
    # hinge part must be the samples with a positive loss max(0, 1 - y F), its ReLU part the
    # positive pre-activations (margins straddle 1, up to 2.5, so a shifted threshold shows)
    p, X, _ = _case(5, 40, 4, 3, 2, 3, 5)
    F = mod.output(p, X)
    p = dict(p, a=p["a"] * 1.5 / np.median(np.abs(F)))           # |F| of order 1.5
    F = mod.output(p, X)
    y = np.sign(F)                                               # margins y F = |F|
    assert np.any((np.abs(F) > 1) & (np.abs(F) < 2)) and np.any(np.abs(F) < 1)
    pattern = mod.relu_pattern(p, X, y)
    hinge = pattern[-X.shape[0]:]
    np.testing.assert_array_equal(hinge, np.maximum(0.0, 1.0 - y * F) > 0)
    relu = pattern[:-X.shape[0]]
    P = reference.forward({k: v[None] for k, v in p.items()}, X[None])[1]["P"]
    np.testing.assert_array_equal(relu, (P > 0).ravel())


@pytest.mark.parametrize("mod", [reference, model], ids=["reference", "fast"])
def test_the_hinge_takes_the_subgradient_0_at_its_kink(mod):
    # one token, one neuron, all ones: every number below is exact, F = 1 and y F = 1 exactly,
    # so the hinge sits at its kink; the documented subgradient there is 0, in both twins
    one = np.ones((1, 1))
    p = {"W_Q": 0.5 * one, "W_K": 0.5 * one, "W_V": one, "W_O": one, "a": one}
    X, y = np.ones((1, 1, 1)), np.ones(1)
    assert mod.output(p, X)[0] == 1.0
    loss, g = mod.loss_and_grads(p, X, y)
    assert loss == 0.0 and all(np.all(v == 0.0) for v in g.values())
    loss, g = mod.loss_and_grads(p, X, -y)                  # margin -1: the hinge is active
    assert loss == 2.0 and g["W_O"][0, 0] == 1.0 and g["W_V"][0, 0] == 1.0


def test_both_twins_stay_finite_and_agree_at_logits_beyond_exp():
    # logits of order 1e3: exp alone overflows, so the softmax must shift by the row maximum
    p, X, y = _case(3, 4, 5, 3, 2, 3, 5)
    p = dict(p, W_Q=40 * p["W_Q"], W_K=40 * p["W_K"])
    Qx, Kx = X @ p["W_Q"].T, X @ p["W_K"].T
    assert np.abs(Qx @ Kx.swapaxes(-1, -2)).max() > 800
    F, F_ref = model.output(p, X), reference.output(p, X)
    assert np.all(np.isfinite(F)) and np.all(np.isfinite(F_ref))
    np.testing.assert_allclose(F, F_ref, rtol=1e-10, atol=1e-12)
