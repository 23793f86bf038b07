"""Sparse contextual bigrams: the fast cores equal the plain reference, the reference equals an
independent scalar oracle (loops over runs, samples and positions evaluating the paper's
definitions), and planted wrong models are rejected by those same checks."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.primitives import softmax
from minitheory.sparse_bigrams import data, model, population as pop, reference
from strategies import contract_runs, scales, seeds

RTOL = 1e-12


def _close(fast, ref, scale=1.0):
    """Equal to float64 rounding: rtol 1e-12 plus an atol of 1e-13 times the size of the values."""
    np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=1e-13 * max(scale, 1.0))


def _batch(rng, N, T, B, R=None):
    lead = () if R is None else (R,)
    return tuple(rng.integers(0, N, size=lead + s) for s in ((B, T), (B,), (B,)))


def _params(rng, N, T, scale, R=None, second="A"):
    lead = () if R is None else (R,)
    return {"V": scale * rng.standard_normal(lead + (N, N)),
            second: scale * rng.standard_normal(lead + (T, N))}


# --------------------------------------------------------------------------------------------
# The oracle: the paper's scalar definitions, plain Python loops, tiny sizes only
# --------------------------------------------------------------------------------------------
def oracle_f(V, A, xs_b, k_b):
    """f_n = sum_s V[n, x_s] A[s, k] for one sample."""
    N, T = len(V), len(xs_b)
    return [sum(V[n][xs_b[s]] * A[s][k_b] for s in range(T)) for n in range(N)]


def oracle_loss(V, A, xs, k, xo):
    """1/B sum_b 1/2 sum_n ([n = x_o] - f_n)^2 for one run."""
    B, N = len(xs), len(V)
    total = 0.0
    for b in range(B):
        f = oracle_f(V, A, xs[b], k[b])
        total += 0.5 * sum(((1.0 if n == xo[b] else 0.0) - f[n]) ** 2 for n in range(N))
    return total / B


def oracle_softmax(W):
    """s_k[t] = exp(W[t, k]) / sum_t' exp(W[t', k]) (softmax over positions)."""
    T, N = len(W), len(W[0])
    S = [[0.0] * N for _ in range(T)]
    for kk in range(N):
        Z = sum(math.exp(W[t][kk]) for t in range(T))
        for t in range(T):
            S[t][kk] = math.exp(W[t][kk]) / Z
    return S


def oracle_population_loss(V, A, inst):
    """E l by exact enumeration of the generative process: x_1..x_T iid ~ mu, k ~ mu,
    s ~ q^(k), x_o ~ P[:, x_s]."""
    P, mu, Q_star = inst.P.tolist(), inst.mu.tolist(), inst.Q_star.tolist()
    N, T = len(mu), len(Q_star)
    total = 0.0
    for xs_b in itertools.product(range(N), repeat=T):
        p_xs = math.prod(mu[x] for x in xs_b)
        for k_b in range(N):
            f = oracle_f(V, A, xs_b, k_b)
            for s in range(T):
                for o in range(N):
                    p = p_xs * mu[k_b] * Q_star[s][k_b] * P[o][xs_b[s]]
                    loss = 0.5 * sum(((1.0 if n == o else 0.0) - f[n]) ** 2 for n in range(N))
                    total += p * loss
    return total


# --------------------------------------------------------------------------------------------
# The checks (each real test below calls one; the planted-model tests call them too)
# --------------------------------------------------------------------------------------------
def check_reference_against_oracle(seed, N, T, B, R, scale):
    rng = np.random.default_rng(seed)
    xs, k, xo = _batch(rng, N, T, B, R)
    p = _params(rng, N, T, scale, R)
    pw = {"V": p["V"], "W": 2 * p["A"]}
    loss, _ = reference.loss_and_grads(p, xs, k, xo)
    loss_s, _ = reference.softmax_loss_and_grads(pw, xs, k, xo)
    runs = [None] if R is None else range(R)
    for i in runs:
        at = (lambda x: x) if i is None else (lambda x: x[i])
        V, A, W = at(p["V"]).tolist(), at(p["A"]).tolist(), at(pw["W"]).tolist()
        ref_f, _ = reference.forward({"V": at(p["V"]), "A": at(p["A"])}, at(xs), at(k))
        for b in range(B):
            _close(ref_f[b], oracle_f(V, A, at(xs)[b].tolist(), int(at(k)[b])), scale**2 * T)
        _close(at(np.asarray(loss)), oracle_loss(V, A, at(xs).tolist(), at(k).tolist(),
                                                 at(xo).tolist()), scale**4 * T**2)
        _close(at(np.asarray(loss_s)), oracle_loss(V, oracle_softmax(W), at(xs).tolist(),
                                                   at(k).tolist(), at(xo).tolist()), scale**4)


def check_fast_against_reference(seed, N, T, B, R, scale):
    rng = np.random.default_rng(seed)
    xs, k, xo = _batch(rng, N, T, B, R)
    p = _params(rng, N, T, scale, R)
    pw = {"V": p["V"], "W": 2 * p["A"]}
    for fast, ref, params in ((model.loss_and_grads, reference.loss_and_grads, p),
                              (model.softmax_loss_and_grads, reference.softmax_loss_and_grads, pw)):
        loss_f, g_f = fast(params, xs, k, xo)
        loss_r, g_r = ref(params, xs, k, xo)
        size = max(1.0, scale**4 * T**2)
        _close(loss_f, loss_r, size)
        assert g_f.keys() == g_r.keys() == params.keys()
        for key in g_f:
            _close(g_f[key], g_r[key], size)


def check_population_reference_against_enumeration(seed, N, T, scale):
    inst = data.make_instance(np.random.default_rng(seed), N, T, min(2, T))
    p = _params(np.random.default_rng(seed + 1), N, T, scale)
    expect = oracle_population_loss(p["V"].tolist(), p["A"].tolist(), inst)
    _close(reference.population_loss(p, inst), expect, scale**4 * T**2)
    truth = oracle_population_loss(inst.P.tolist(), inst.Q_star.tolist(), inst)
    _close(reference.bayes_error(inst), truth)


def check_population_fast_against_reference(seed, N, T, R, scale):
    inst = data.make_instance(np.random.default_rng(seed), N, T, min(2, T))
    p = _params(np.random.default_rng(seed + 1), N, T, scale, R)
    size = max(1.0, scale**4 * T**2)
    _close(model.population_loss(p, inst), reference.population_loss(p, inst), size)
    for fast, ref in ((model.population_grads, reference.population_grads),
                      (model.preconditioned_grads, reference.preconditioned_grads)):
        g_f, g_r = fast(p, inst), ref(p, inst)
        for key in ("V", "A"):
            _close(g_f[key], g_r[key], size / inst.mu.min())
    runs = [None] if R is None else range(R)
    for i in runs:
        V, A = (p[key] if i is None else p[key][i] for key in ("V", "A"))
        _close(model.sigma_inner(V, inst.P, inst.mu), reference.sigma_inner(V, inst.P, inst.mu),
               scale**2)
        _close(model.mu_norm2(A, inst.mu), reference.mu_norm2(A, inst.mu), scale**2 * T)


SCHEDULES = {
    "two_stage": dict(kind="two_stage", eta_A=2.0, B1=1e4, B2=1e3, lam=1e-3),
    "noiseless": dict(kind="two_stage", eta_A=2.0, B1=np.inf, B2=np.inf, lam=1e-3),
    "no_l1": dict(kind="two_stage", eta_A=2.0, B1=1e4, B2=1e3, lam=0.0, balance=False),
    "sgd": dict(kind="sgd", B1=1e4, B2=1e3, eta_sgd=3.0),
}


def check_step_fast_against_reference(seed, N, T, name, tau, it):
    inst = pop.make_large_instance(np.random.default_rng(seed), N, T, min(2, T))
    dense = data.check_instance(inst.P, inst.mu, inst.q.dense())
    s = pop.Schedule(tau=tau, **SCHEDULES[name])
    rng = np.random.default_rng(seed + 1)
    V, A = 0.3 * rng.standard_normal((N, N)) + 0.2, rng.random((T, N))
    Xi, Xi_V = rng.standard_normal((T, N)), rng.standard_normal((N, N))
    V_ref, A_ref = reference.large_t_step(s, V, A, it, dense, Xi, Xi_V, sigma_V=pop.SIGMA_V,
                                          sigma_A_times_sqrt_N=pop.SIGMA_A_TIMES_SQRT_N)
    pop._step(s, V, A, it, pop.column_stats(A, inst.q), inst, np.empty_like(A), Xi, Xi.mean(0),
              Xi_V)
    size = max(1.0, float(np.abs(V_ref).max()), float(np.abs(A_ref).max()))
    _close(V, V_ref, 10 * size)
    _close(A, A_ref, 10 * size)


# --------------------------------------------------------------------------------------------
# The real tests
# --------------------------------------------------------------------------------------------
@given(N=st.integers(2, 4), T=st.integers(1, 5), B=st.integers(1, 6),
       R=st.sampled_from([None, 1, 3]), seed=seeds, scale=scales)
def test_reference_equals_the_scalar_oracle(N, T, B, R, seed, scale):
    check_reference_against_oracle(seed, N, T, B, R, scale)


@given(N=st.integers(2, 6), T=st.integers(1, 8), B=st.integers(1, 10),
       R=st.sampled_from([None, 1, 2, 5]), seed=seeds, scale=scales)
def test_fast_sample_model_equals_reference(N, T, B, R, seed, scale):
    # small N and several samples: tokens repeat in a sequence and last tokens repeat in a batch
    check_fast_against_reference(seed, N, T, B, R, scale)


@pytest.mark.parametrize("N, T", [(2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (2, 4)])
def test_population_reference_equals_exact_enumeration(N, T):
    check_population_reference_against_enumeration(N * 10 + T, N, T, 1.0)


@given(N=st.integers(2, 7), T=st.integers(1, 9), R=st.sampled_from([None, 1, 4]), seed=seeds,
       scale=scales)
def test_fast_population_equals_reference(N, T, R, seed, scale):
    check_population_fast_against_reference(seed % 2**31, N, T, R, scale)


@given(N=st.integers(2, 6), T=st.integers(2, 9), name=st.sampled_from(sorted(SCHEDULES)),
       tau=st.integers(0, 2), it=st.integers(0, 3), seed=seeds)
def test_fast_large_t_step_equals_reference(N, T, name, tau, it, seed):
    # the same noise draw (Xi, Xi_V) goes to both; stage 1 and stage 2, with and without noise
    check_step_fast_against_reference(seed % 2**31, N, T, name, tau, it)


@given(N=st.integers(2, 4), T=st.integers(1, 5), B=st.integers(1, 6),
       R=st.sampled_from([None, 2]), seed=seeds, scale=scales)
def test_reference_gradients_match_finite_differences(N, T, B, R, seed, scale):
    rng = np.random.default_rng(seed)
    xs, k, xo = _batch(rng, N, T, B, R)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    for fn, second in ((reference.loss_and_grads, "A"), (reference.softmax_loss_and_grads, "W")):
        p = _params(rng, N, T, scale, R, second)
        check_gradients(contract_runs(lambda q: fn(q, xs, k, xo), R, cot), p, rng=rng,
                        full_max=40)


@given(seed=seeds, scale=scales, R=st.sampled_from([None, 2]))
def test_reference_population_gradients_match_finite_differences(seed, scale, R):
    inst = data.make_instance(np.random.default_rng(seed), 3, 4, 2)
    rng = np.random.default_rng(seed)
    p = _params(rng, 3, 4, scale, R)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    check_gradients(contract_runs(lambda q: (reference.population_loss(q, inst),
                                             reference.population_grads(q, inst)), R, cot),
                    p, rng=rng)


def test_reference_does_not_mutate_its_inputs():
    rng = np.random.default_rng(0)
    inst = data.make_instance(rng, 4, 5, 2)
    p, batch = _params(rng, 4, 5, 1.0), _batch(rng, 4, 5, 6)
    copies = {key: v.copy() for key, v in p.items()}, [b.copy() for b in batch]
    reference.loss_and_grads(p, *batch)
    reference.softmax_loss_and_grads({"V": p["V"], "W": p["A"]}, *batch)
    reference.preconditioned_grads(p, inst)
    s = pop.Schedule(eta_A=2.0, B1=1e4, B2=1e3, lam=1e-3, tau=0)
    reference.large_t_step(s, p["V"], p["A"], 1, inst, rng.standard_normal((5, 4)),
                           rng.standard_normal((4, 4)), sigma_V=0.7, sigma_A_times_sqrt_N=1.1)
    for key in p:
        np.testing.assert_array_equal(p[key], copies[0][key])
    for b, c in zip(batch, copies[1]):
        np.testing.assert_array_equal(b, c)


# --------------------------------------------------------------------------------------------
# Tests of the tests: plant known wrong models; the checks above must reject every one
# --------------------------------------------------------------------------------------------
def _ref_forward_wrong_token(params, xs, k):
    """a read at the last context token x_T instead of the query k."""
    V, A = params["V"], params["A"]
    N = V.shape[0]
    Xa = np.einsum("bnt,bt->bn", reference.one_hot(xs, N).swapaxes(1, 2),
                   reference.one_hot(xs[:, -1], N) @ A.T)
    return Xa @ V.T, Xa


def _ref_forward_V_transposed(params, xs, k):
    f, Xa = _ORIGINAL["ref_forward"](params, xs, k)
    return Xa @ params["V"], Xa


def _ref_forward_histogram_off_by_one(params, xs, k):
    return _ORIGINAL["ref_forward"](params, (xs + 1) % params["V"].shape[0], k)


def _ref_loss_without_1_over_B(params, xs, k, xo):
    loss, grads = _ORIGINAL["ref_loss"](params, xs, k, xo)
    return loss * len(k), grads


def _ref_softmax_over_tokens(W):
    return _ORIGINAL["ref_softmax"](W.T).T


def _fast_forward_histogram_off_by_one(params, xs, k):
    return _ORIGINAL["fast_forward"](params, (xs + 1) % params["V"].shape[-1], k)


def _fast_forward_V_transposed(params, xs, k):
    f, Xa = _ORIGINAL["fast_forward"](params, xs, k)
    return Xa @ params["V"], Xa


def _fast_forward_wrong_token(params, xs, k):
    return _ORIGINAL["fast_forward"](params, xs, xs[..., -1])


def _fast_backward_without_1_over_B(params, xs, k, resid, Xa):
    grads = _ORIGINAL["fast_backward"](params, xs, k, resid, Xa)
    return {key: g * resid.shape[1] for key, g in grads.items()}


def _fast_softmax_over_tokens(W, axis=-1, out=None):
    return softmax(W, axis=-1)


def _fast_softmax_vjp_without_row_term(S, g, axis=-1, out=None):
    return S * g


def _fast_sigma_inner_without_mean_term(V, W, mu):
    return np.einsum("...ij,...ij,j->...", V, W, mu)


def _ref_Sigma_without_mean_term(mu):
    return np.diag(mu)


def _fast_soft_threshold_twice(A, theta, tmp):
    _ORIGINAL["soft_threshold_"](A, 2 * theta, tmp)


def _fast_grads_unigram_sign_flipped(G_A, V, A, stats, inst):
    """G_V with + cbar mu 1^T in place of - cbar mu 1^T."""
    G_V = _ORIGINAL["grads_into"](G_A, V, A, stats, inst)
    return G_V + 2 * (inst.mu @ stats[1]) * np.outer(inst.mu, np.ones(inst.N))


_ORIGINAL = {"ref_forward": reference.forward, "ref_loss": reference.loss_and_grads,
             "ref_softmax": reference.softmax_over_positions, "fast_forward": model.forward,
             "fast_backward": model.backward, "soft_threshold_": pop.soft_threshold_,
             "grads_into": pop.preconditioned_grads_into}

ORACLE_CHECK = lambda: check_reference_against_oracle(5, 4, 5, 6, 2, 1.0)  # noqa: E731
FAST_CHECK = lambda: check_fast_against_reference(5, 4, 5, 6, 2, 1.0)  # noqa: E731
POP_ORACLE_CHECK = lambda: check_population_reference_against_enumeration(3, 3, 3, 1.0)  # noqa: E731
POP_FAST_CHECK = lambda: check_population_fast_against_reference(3, 4, 5, 2, 1.0)  # noqa: E731
STEP_CHECK = lambda: check_step_fast_against_reference(3, 4, 6, "two_stage", 0, 1)  # noqa: E731

PLANTS = [
    # (module, name, wrong version, the check that must reject it)
    (reference, "forward", _ref_forward_wrong_token, ORACLE_CHECK),
    (reference, "forward", _ref_forward_V_transposed, ORACLE_CHECK),
    (reference, "forward", _ref_forward_histogram_off_by_one, ORACLE_CHECK),
    (reference, "loss_and_grads", _ref_loss_without_1_over_B, ORACLE_CHECK),
    (reference, "softmax_over_positions", _ref_softmax_over_tokens, ORACLE_CHECK),
    (reference, "Sigma_of", _ref_Sigma_without_mean_term, POP_ORACLE_CHECK),
    (model, "forward", _fast_forward_wrong_token, FAST_CHECK),
    (model, "forward", _fast_forward_V_transposed, FAST_CHECK),
    (model, "forward", _fast_forward_histogram_off_by_one, FAST_CHECK),
    (model, "backward", _fast_backward_without_1_over_B, FAST_CHECK),
    (model, "softmax", _fast_softmax_over_tokens, FAST_CHECK),
    (model, "softmax_vjp", _fast_softmax_vjp_without_row_term, FAST_CHECK),
    (model, "sigma_inner", _fast_sigma_inner_without_mean_term, POP_FAST_CHECK),
    (pop, "soft_threshold_", _fast_soft_threshold_twice, STEP_CHECK),
    (pop, "preconditioned_grads_into", _fast_grads_unigram_sign_flipped, STEP_CHECK),
]


@pytest.mark.parametrize("module, name, wrong, check", PLANTS,
                         ids=[f"{m.__name__.split('.')[-1]}.{w.__name__}" for m, _, w, _ in PLANTS])
def test_checks_reject_a_planted_wrong_model(monkeypatch, module, name, wrong, check):
    check()                                             # the check passes on the real code
    monkeypatch.setattr(module, name, wrong)
    with pytest.raises(AssertionError):
        check()
