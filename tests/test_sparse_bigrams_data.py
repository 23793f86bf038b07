"""SCB instances and the sampler (spec (b), (h) 7)."""
import numpy as np
import pytest

from minitheory.sparse_bigrams import data, model


def test_instance_satisfies_its_assumptions_and_the_spec_ranges():
    inst = data.make_instance(np.random.default_rng(0), 10, 50, 2)
    np.testing.assert_allclose(inst.P.sum(0), 1.0, atol=1e-14)
    np.testing.assert_allclose(inst.P @ inst.mu, inst.mu, atol=1e-14)
    assert 0.3 < 10 * inst.mu.min() and 10 * inst.mu.max() < 2.5
    assert np.all(np.count_nonzero(inst.Q_star, axis=0) == 2)
    assert inst.Q_star[inst.Q_star > 0].min() >= 0.25                  # weights >= 0.25 for Q = 2
    assert 10 * model.sigma_inner(inst.P, inst.P, inst.mu) > 0.5       # a context signal


def test_sampler_frequencies_match_mu_P_and_q():
    rng = np.random.default_rng(1)
    inst = data.make_instance(rng, 4, 6, 2)
    n = 200_000
    xs, k, xo = data.sample(rng, inst, n)

    def close(counts, p, total):                                        # 5 standard errors
        assert np.all(np.abs(counts / total - p) < 5 * np.sqrt(p * (1 - p) / total) + 1e-12)

    close(np.bincount(k, minlength=4), inst.mu, n)
    close(np.bincount(xs.ravel(), minlength=4), inst.mu, xs.size)
    # x_o given k: sum_s q_k[s] (P mu)... use the exact conditional law E[e_xo | k] = P (X q_k)
    # averaged over X: P mu; and given (k, x_s) the output follows P[:, x_s]. Check the joint
    # law of (x_o, source token) through the positions' law: recover s from an unambiguous case.
    for kk in range(4):
        sel = k == kk
        close(np.bincount(xo[sel], minlength=4), inst.P @ inst.mu, sel.sum())


def test_positions_follow_q_and_outputs_follow_P():
    # Make every context token distinct so the source position is identifiable from x_o's law:
    # with N = T and a deterministic P (a permutation), x_o reveals x_s and hence s.
    T = N = 5
    perm = np.roll(np.eye(N), 1, axis=0)                                # P[i, j] = 1 if i = j+1
    Q_star = np.zeros((T, N))
    Q_star[[0, 3], :] = [[0.3], [0.7]]
    inst = data.check_instance(perm, np.full(N, 1 / N), Q_star)
    rng = np.random.default_rng(2)
    xs, k, xo = data.sample(rng, inst, 100_000)
    src = (xo - 1) % N
    match = xs == src[:, None]                                          # positions holding it
    unique = match.sum(1) == 1
    s = np.argmax(match[unique], axis=1)
    freq = np.bincount(s, minlength=T) / unique.sum()
    np.testing.assert_allclose(freq, Q_star[:, 0], atol=0.01)


@pytest.mark.parametrize("kw, match", [
    (dict(N=1), "N must be in"), (dict(Q=60), "Q must be in"), (dict(T=0), "T must be in")])
def test_bad_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        data.make_instance(np.random.default_rng(0), **(dict(N=10, T=50, Q=2) | kw))


def test_bad_instances_name_the_parameter():
    P = np.array([[0.5, 0.2], [0.5, 0.8]])
    mu = data.stationary(P)
    Q = np.array([[1.0, 0.5], [0.0, 0.5]])
    data.check_instance(P, mu, Q)
    with pytest.raises(ValueError, match="P must be column-stochastic"):
        data.check_instance(P.T, mu, Q)                                  # row-stochastic
    with pytest.raises(ValueError, match="P must be column-stochastic"):
        data.check_instance(np.array([[1.2, 0.2], [-0.2, 0.8]]), mu, Q)
    with pytest.raises(ValueError, match="mu must be positive"):
        data.check_instance(P, np.array([0.5, 0.5]), Q)
    with pytest.raises(ValueError, match="q\\^\\(k\\) of Q_star must be a distribution"):
        data.check_instance(P, mu, np.array([[1.0, 0.7], [0.0, 0.5]]))
    with pytest.raises(ValueError, match="P must contain only finite"):
        data.check_instance(np.full((2, 2), np.nan), mu, Q)
    with pytest.raises(ValueError, match="P must be square with N >= 2"):
        data.check_instance(np.ones((1, 1)), np.ones(1), np.ones((1, 1)))


def test_transitions_follow_P():
    # All attention on position 0: s = 0 always, so x_o | x_0 ~ P[:, x_0] for a random P.
    rng = np.random.default_rng(3)
    N, T = 4, 3
    P = data.random_transition(rng, N)
    Q_star = np.zeros((T, N))
    Q_star[0] = 1.0
    inst = data.check_instance(P, data.stationary(P), Q_star)
    xs, k, xo = data.sample(rng, inst, 200_000)
    counts = np.zeros((N, N))
    np.add.at(counts, (xo, xs[:, 0]), 1.0)
    total = counts.sum(0)
    se = np.sqrt(P * (1 - P) / total)
    assert np.all(np.abs(counts / total - P) < 5 * se + 1e-12)
