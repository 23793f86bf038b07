import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.primitives import shifted_exp, softmax, softmax_vjp
from strategies import scales, seeds

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
rowlen = st.sampled_from([1, 2, 7, 33, 60])          # both sides of the short-row path


@given(shape=shapes, n=rowlen, seed=seeds, scale=st.floats(0.1, 50.0))
def test_rows_sum_to_one_and_shift_invariant(shape, n, seed, scale):
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal(shape + (n,))
    s = softmax(z)
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=0, atol=1e-13)
    assert np.all(s >= 0)
    shift = 100 * rng.standard_normal(shape + (1,))
    np.testing.assert_allclose(softmax(z + shift), s, rtol=1e-12, atol=1e-15)


@given(n=rowlen, seed=seeds)
def test_finite_at_extreme_logits(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.choice([-1e4, 1e4], size=(3, n))
    s = softmax(z)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-14)
    big = z == z.max(-1, keepdims=True)               # the mass sits on the maxima, equally
    np.testing.assert_allclose(s, big / big.sum(-1, keepdims=True), atol=1e-300)


@given(n=rowlen, seed=seeds)
def test_matches_definition(n, seed):
    z = np.random.default_rng(seed).standard_normal((4, n))
    e = np.exp(z)
    np.testing.assert_allclose(softmax(z), e / e.sum(-1, keepdims=True), rtol=1e-13)


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
def test_both_paths_agree(n, seed):
    # |z| < 700 - log n skips the row-max shift; larger logits take the shifted path. By shift
    # invariance the same rows shifted by 1000 must give the same softmax.
    z = 5 * np.random.default_rng(seed).standard_normal((6, n))
    np.testing.assert_allclose(softmax(z + 1000.0), softmax(z), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(softmax(z - 1000.0), softmax(z), rtol=1e-12, atol=1e-300)


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
