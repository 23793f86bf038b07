"""The pattern data model (spec (b), invariants (h) 8)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.lowrank_sparse import data
from strategies import seeds


@st.composite
def configs(draw):
    d = draw(st.integers(3, 12))
    M = draw(st.integers(3, d))
    L = draw(st.integers(2, 12))
    n_rel = draw(st.integers(1, L))
    n_conf = draw(st.integers(0, min(n_rel - 1, L - n_rel)))
    return data.DataConfig(d=d, M=M, L=L, n_rel=n_rel, n_conf=n_conf,
                           sigma=draw(st.sampled_from([0.0, 0.05, 0.3])))


@given(cfg=configs(), seed=seeds, random_patterns=st.booleans())
def test_counts_labels_and_relevant_set(cfg, seed, random_patterns):
    rng = np.random.default_rng(seed)
    mu = data.patterns(cfg, rng if random_patterns else None)
    np.testing.assert_allclose(mu @ mu.T, np.eye(cfg.M), atol=1e-13)   # orthonormal
    X, y, pat, rel = data.sample(rng, 50, cfg, mu)
    assert X.shape == (50, cfg.L, cfg.d) and set(np.unique(y)) <= {-1.0, 1.0}
    own = np.where(y > 0, 0, 1)[:, None]
    np.testing.assert_array_equal(np.sum(pat == own, 1), cfg.n_rel)
    np.testing.assert_array_equal(np.sum(pat == 1 - own, 1), cfg.n_conf)
    assert np.all((pat >= 0) & (pat < cfg.M))
    np.testing.assert_array_equal(data.majority_label(pat), y)           # label = majority vote
    np.testing.assert_array_equal(rel, pat == own)
    if cfg.sigma == 0:
        np.testing.assert_array_equal(X, mu[pat])                        # tokens are patterns


def test_positions_are_shuffled_and_seeded():
    cfg = data.DataConfig()
    a = data.sample(np.random.default_rng(0), 200, cfg)
    b = data.sample(np.random.default_rng(0), 200, cfg)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    rel = a[3]
    assert 0.3 < rel[:, 0].mean() < 0.5                  # position 0 is relevant ~40% of the time


@pytest.mark.parametrize("kw, match", [
    (dict(M=1), "M must be in"), (dict(M=21), "M must be in"),
    (dict(n_rel=15, n_conf=6), "n_rel \\+ n_conf must be <= L"),
    (dict(n_conf=8), "n_conf must be in"), (dict(sigma=-0.1), "sigma must be in"),
    (dict(sigma=float("nan")), "sigma must be finite"), (dict(M=2), "M must be >= 3"),
    (dict(d=0), "d must be in")])
def test_bad_configs_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        data.DataConfig(**kw)
