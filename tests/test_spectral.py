import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.spectral import energy_share, numerical_rank, singular_values, stable_rank
from strategies import seeds


def test_known_spectrum():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    V, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    s = np.array([3.0, 2.0, 0.04, 0.0])
    W = U[:, :4] @ np.diag(s) @ V.T
    np.testing.assert_allclose(singular_values(W), s, atol=1e-14)
    assert numerical_rank(W, atol=0.05) == 2
    assert numerical_rank(W, rtol=0.01) == 3           # threshold 0.03 < 0.04
    assert stable_rank(W) == pytest.approx((9 + 4 + 0.0016) / 9)
    assert energy_share(W, 2) == pytest.approx(13 / 13.0016)


@given(m=st.integers(1, 6), n=st.integers(1, 6), seed=seeds)
def test_stable_rank_between_one_and_rank(m, n, seed):
    W = np.random.default_rng(seed).standard_normal((3, m, n))
    sr = stable_rank(W)
    assert sr.shape == (3,)
    assert np.all(sr >= 1 - 1e-12) and np.all(sr <= min(m, n) + 1e-12)
    np.testing.assert_array_equal(numerical_rank(W, atol=1e-10), min(m, n))


def test_zero_matrix_and_threshold_must_be_stated():
    Z = np.zeros((3, 3))
    assert stable_rank(Z) == 0.0 and numerical_rank(Z, atol=1e-3) == 0
    assert energy_share(Z, 1) == 1.0
    with pytest.raises(ValueError, match="atol"):
        numerical_rank(Z)
    with pytest.raises(ValueError, match="2 dimensions"):
        singular_values(np.ones(3))
