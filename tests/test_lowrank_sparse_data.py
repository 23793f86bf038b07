"""The pattern data model (arXiv:2406.17167v1, Sec. 2): orthonormal patterns, counts, labels."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.lowrank_sparse import analysis, data, training
from minitheory.spectral import energy_share
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
    (dict(d=0), "d must be in"), (dict(pattern_set="basis"), "pattern_set must be one of"),
    (dict(pattern_seed=-1), "pattern_seed must be in")])
def test_bad_configs_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        data.DataConfig(**kw)


@given(d=st.integers(3, 12), seed=seeds, data_seed=seeds)
def test_random_pattern_set_is_orthonormal_seeded_and_used_by_sample(d, seed, data_seed):
    M = max(3, d - 1)
    cfg = data.DataConfig(d=d, M=M, L=4, n_rel=2, n_conf=1, sigma=0.0,
                          pattern_set="random", pattern_seed=seed)
    mu = data.patterns(cfg)
    assert mu.shape == (M, d)
    np.testing.assert_allclose(mu @ mu.T, np.eye(M), atol=1e-12)
    np.testing.assert_array_equal(mu, data.patterns(cfg))                  # reproducible
    other = data.patterns(data.DataConfig(**{**cfg.__dict__, "pattern_seed": seed + 1}))
    assert not np.allclose(np.abs(mu), np.abs(other))
    assert not np.allclose(np.abs(mu), np.eye(M, d))                       # not the basis
    X, _, pat, _ = data.sample(np.random.default_rng(data_seed), 10, cfg)  # default mu = cfg's
    np.testing.assert_array_equal(X, mu[pat])
    np.testing.assert_array_equal(data.patterns(data.DataConfig(d=d, M=M, L=4, n_rel=2, n_conf=1)),
                                  np.eye(M, d))                            # default unchanged


def test_training_on_random_patterns_learns_updates_along_them():
    dcfg = data.DataConfig(pattern_set="random", pattern_seed=5)
    mu = data.patterns(dcfg)
    res = training.train([0, 1], dcfg, training.ModelConfig(),
                         training.SGDConfig(steps=40, n_test=200))
    assert np.all(res.history["test_hinge"][-1] < 0.1)
    dK = res.params["W_K"] - res.params0["W_K"]
    dV = res.params["W_V"] - res.params0["W_V"]
    assert np.all(energy_share(dK, 2) > 0.9)                 # rank two, as on the basis
    assert np.all(analysis.relevant_share(dV, mu) > 0.9)     # along mu_1, mu_2 ...
    assert np.all(analysis.relevant_share(dV, np.eye(dcfg.M, dcfg.d)) < 0.5)   # ... not e_1, e_2
