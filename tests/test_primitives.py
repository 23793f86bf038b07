"""The softmax and its VJP: the textbook reference against per-row scalar oracles (with planted
wrong versions that the oracles must reject), and the fast twin against the reference."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.primitives import (exp_is_safe, fast_softmax, fast_softmax_vjp, shifted_exp,
                                   softmax, softmax_vjp)
from strategies import scales, seeds

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
rowlen = st.sampled_from([1, 2, 7, 33, 60])          # both sides of the fast twin's short-row path
both = pytest.mark.parametrize("smax", [softmax, fast_softmax], ids=["reference", "fast"])


# --------------------------------------------------------------------------------------------
# Oracles: one row at a time, the scalar definitions
# --------------------------------------------------------------------------------------------
def oracle_softmax(z):
    """s_i = exp(z_i) / sum_k exp(z_k) along the last axis, a Python loop per row."""
    out = np.empty_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        e = [math.exp(v) for v in z[idx]]
        out[idx] = [v / sum(e) for v in e]
    return out


def oracle_softmax_vjp(s, g):
    """J g per row with the dense Jacobian J = diag(s) - s s^T (tiny rows only)."""
    out = np.empty_like(g)
    for idx in np.ndindex(s.shape[:-1]):
        J = np.diag(s[idx]) - np.outer(s[idx], s[idx])
        out[idx] = J @ g[idx]
    return out


def assert_softmax_matches_oracle(smax, z):
    np.testing.assert_allclose(smax(z), oracle_softmax(z), rtol=1e-13, atol=1e-300)


def assert_vjp_matches_oracle(vjp, s, g):
    np.testing.assert_allclose(vjp(s, g), oracle_softmax_vjp(s, g), rtol=1e-12, atol=1e-15)


@both
@given(shape=shapes, n=st.integers(1, 6), seed=seeds, scale=scales)
def test_softmax_matches_the_scalar_oracle(smax, shape, n, seed, scale):
    z = 3 * scale * np.random.default_rng(seed).standard_normal(shape + (n,))
    assert_softmax_matches_oracle(smax, z.copy())


@given(shape=shapes, n=st.integers(1, 6), seed=seeds, scale=scales)
def test_vjp_matches_the_dense_jacobian(shape, n, seed, scale):
    rng = np.random.default_rng(seed)
    s = softmax(3 * scale * rng.standard_normal(shape + (n,)))
    g = rng.standard_normal(s.shape)
    assert_vjp_matches_oracle(softmax_vjp, s, g)
    assert_vjp_matches_oracle(lambda s, g: fast_softmax_vjp(s, g), s, g)
    gc = g.copy()                                                       # in place, same values
    assert fast_softmax_vjp(s, gc, out=gc) is gc
    np.testing.assert_allclose(gc, oracle_softmax_vjp(s, g), rtol=1e-12, atol=1e-15)
    # along another axis: the same rows, moved
    np.testing.assert_allclose(softmax_vjp(s.swapaxes(-1, 0), g.swapaxes(-1, 0), axis=0),
                               oracle_softmax_vjp(s, g).swapaxes(-1, 0), rtol=1e-12, atol=1e-15)


def test_oracles_reject_planted_wrong_softmaxes():
    # a test of the tests: the wrong normalization axis, and a VJP without its row term
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4))
    with pytest.raises(AssertionError):
        assert_softmax_matches_oracle(lambda z: softmax(z, axis=0), z)
    with pytest.raises(AssertionError):
        assert_softmax_matches_oracle(np.exp, z)                        # never normalized
    s, g = softmax(z), rng.standard_normal(z.shape)
    with pytest.raises(AssertionError):
        assert_vjp_matches_oracle(lambda s, g: s * g, s, g)              # no row term
    with pytest.raises(AssertionError):
        assert_vjp_matches_oracle(lambda s, g: softmax_vjp(s, g, axis=0), s, g)
    assert_softmax_matches_oracle(softmax, z)                           # the control
    assert_vjp_matches_oracle(softmax_vjp, s, g)


@both
@pytest.mark.parametrize("row", [[0.0, 800.0], [800.0, 801.0, 1000.0], [-800.0, -1000.0],
                                 [-1e4, -1e4 - 1.0], [1e4, 1e4], [-745.0, -746.0]])
def test_guard_rows_beyond_the_range_of_exp(smax, row):
    # every exponential of such a row alone would overflow or vanish; shifted, the row is finite
    z = np.array([row, row[::-1]])
    s = smax(z.copy())
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s, oracle_softmax(z - z.max(-1, keepdims=True)), rtol=1e-13,
                               atol=1e-300)


@both
@pytest.mark.parametrize("far", [-800.0, 800.0, -1e4])
def test_guard_looks_at_both_extremes_of_the_whole_array(smax, far):
    # one global check decides the path: an ordinary row next to a row far out on either side
    # must take the shifted path (a check of only the largest or only the smallest logit would
    # exponentiate the far row unshifted, to 0/0 or inf/inf)
    z = np.array([[0.0, 1.0, -1.0], [far, far - 1.0, far + 0.5]])
    s = smax(z.copy())
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, oracle_softmax(z - z.max(-1, keepdims=True)), rtol=1e-13,
                               atol=1e-300)


@both
@given(shape=shapes, n=rowlen, seed=seeds, scale=st.floats(0.1, 50.0))
def test_rows_sum_to_one_and_shift_invariant(smax, shape, n, seed, scale):
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal(shape + (n,))
    s = smax(z.copy())
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=0, atol=1e-13)
    assert np.all(s >= 0)
    shift = 100 * rng.standard_normal(shape + (1,))
    np.testing.assert_allclose(smax(z + shift), s, rtol=1e-12, atol=1e-15)


@both
@given(n=rowlen, seed=seeds)
def test_finite_at_extreme_logits(smax, n, seed):
    rng = np.random.default_rng(seed)
    z = rng.choice([-1e4, 1e4], size=(3, n))
    s = smax(z.copy())
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-14)
    big = z == z.max(-1, keepdims=True)               # the mass sits on the maxima, equally
    np.testing.assert_allclose(s, big / big.sum(-1, keepdims=True), atol=1e-300)


@given(shape=shapes, n=rowlen, seed=seeds, scale=st.floats(0.1, 50.0))
def test_fast_twin_equals_reference(shape, n, seed, scale):
    z = scale * np.random.default_rng(seed).standard_normal(shape + (n,))
    s = softmax(z)
    np.testing.assert_allclose(fast_softmax(z.copy()), s, rtol=1e-13, atol=1e-300)
    zc = z.copy()
    assert fast_softmax(zc, out=zc) is zc                               # in place, same values
    np.testing.assert_allclose(zc, s, rtol=1e-13, atol=1e-300)


@given(axis=st.integers(0, 2), seed=seeds)
def test_other_axis_equals_moving_it_last(axis, seed):
    z = np.random.default_rng(seed).standard_normal((3, 4, 5))
    expected = np.moveaxis(softmax(np.moveaxis(z, axis, -1)), -1, axis)
    np.testing.assert_allclose(softmax(z, axis=axis), expected, rtol=1e-14)
    np.testing.assert_allclose(softmax(z, axis=axis).sum(axis), 1.0, atol=1e-13)


@given(shape=shapes, n=rowlen, axis=st.sampled_from([0, -1]), seed=seeds, scale=scales)
def test_vjp_matches_finite_differences(shape, n, axis, seed, scale):
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal(shape + (n,))
    assume(z.shape[axis] >= 2)                        # a softmax over one entry is constant
    cot = rng.standard_normal(z.shape)                # a random cotangent, never all ones

    def f(p):
        s = softmax(p["z"], axis=axis)
        return np.sum(s * cot), {"z": softmax_vjp(s, cot, axis=axis)}

    check_gradients(f, {"z": z}, rng=rng)


def test_vjp_of_constant_cotangent_is_zero():
    # softmax is invariant to shifts, so an all-equal cotangent has zero pullback: a property
    # that the wrong formula s * g (no centring) would fail.
    s = softmax(np.random.default_rng(0).standard_normal((5, 6)))
    np.testing.assert_allclose(softmax_vjp(s, np.full_like(s, 3.0)), 0.0, atol=1e-15)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(s * 3.0, 0.0, atol=1e-15)


@given(n=rowlen, seed=seeds)
def test_both_paths_of_the_fast_twin_agree(n, seed):
    # |z| < 700 - log n skips the row-max shift; larger logits take the shifted path. By shift
    # invariance the same rows shifted by 1000 must give the same softmax.
    z = 5 * np.random.default_rng(seed).standard_normal((6, n))
    np.testing.assert_allclose(fast_softmax(z + 1000.0), fast_softmax(z.copy()), rtol=1e-12,
                               atol=1e-300)
    np.testing.assert_allclose(fast_softmax(z - 1000.0), fast_softmax(z.copy()), rtol=1e-12,
                               atol=1e-300)


@given(n=rowlen, seed=seeds, shift=st.sampled_from([0.0, 1000.0, -1000.0]))
def test_shifted_exp_is_the_softmax_numerator(n, seed, shift):
    # Unshifted when every |z| is safe (then it is exactly exp), otherwise shifted per row so the
    # largest entry of each row is exp(0) = 1: finite either way, normalizing to the softmax.
    z = 5 * np.random.default_rng(seed).standard_normal((6, n)) + shift
    e = shifted_exp(z.copy())
    assert np.all(np.isfinite(e)) and np.all(e > 0)
    if shift == 0.0:
        np.testing.assert_array_equal(e, np.exp(z))
    else:
        np.testing.assert_allclose(e.max(-1), 1.0, rtol=0, atol=0)
    np.testing.assert_allclose(e / e.sum(-1, keepdims=True), softmax(z), rtol=1e-12, atol=1e-300)
    # logits stored transposed (softmax over axis -2): the same numerator, transposed
    zt = np.ascontiguousarray(z.T)
    np.testing.assert_array_equal(shifted_exp(zt.copy(), axis=-2), e.T)
    np.testing.assert_array_equal(shifted_exp(zt.copy(), out=zt, axis=-2), e.T)


@pytest.mark.parametrize("n", [1, 8, 100])
def test_exp_is_safe_exactly_below_its_bound(n):
    # safe strictly below 700 - log n on either side, not at it, never for an empty array
    bound = 700.0 - math.log(n)
    below = np.nextafter(bound, 0.0)
    for sign in (1.0, -1.0):
        assert exp_is_safe(np.array([[0.0, sign * below]]), n)
        assert not exp_is_safe(np.array([[0.0, sign * bound]]), n)
        assert not exp_is_safe(np.array([[sign * 1e4, 0.0]]), n)
    assert not exp_is_safe(np.empty((0, n)), n)
