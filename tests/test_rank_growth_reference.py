"""The rank-growth heads tied together: the reference against an independent scalar oracle, the
fast twins against the reference, finite differences on the reference, and a test of those tests
(planted wrong forwards and backwards are rejected by the same helpers)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory import primitives
from minitheory.gradcheck import GradcheckError, check_gradients
from minitheory.rank_growth import model
from minitheory.rank_growth import reference as ref
from strategies import contract_runs, scales, seeds, small

runs = st.sampled_from([None, 1, 3])                # None: no run axis
tokens = st.integers(1, 5)


# --------------------------------------------------------------------------------------------
# The oracle: the paper's scalar definitions, one loop per index
# --------------------------------------------------------------------------------------------
def oracle_head(M, N, X):
    r"""f_{r,s,i} = sum_k beta_{r,s,i,k} N_r^T x_{s,k} with
    beta_{r,s,i,k} = exp(x_{s,i}^T M_r x_{s,k}) / sum_k' exp(x_{s,i}^T M_r x_{s,k'}),
    for M ``(R, d, d)``, N ``(R, d, d_out)``; plain loops, raw exponentials (tiny sizes only)."""
    R, d_out = M.shape[0], N.shape[-1]
    n_seq, n, d = X.shape
    f = np.zeros((R, n_seq, n, d_out))
    for r in range(R):
        for s in range(n_seq):
            for i in range(n):
                logit = [sum(X[s, i, p] * M[r, p, q] * X[s, k, q] for p in range(d) for q in range(d))
                         for k in range(n)]
                total = sum(math.exp(z) for z in logit)
                for k in range(n):
                    beta = math.exp(logit[k]) / total
                    for o in range(d_out):
                        f[r, s, i, o] += beta * sum(N[r, p, o] * X[s, k, p] for p in range(d))
    return f


def oracle_loss(f, Y):
    """L_r = 1/(2 n_seq) sum_{s,i,j} (f_{r,s,i,j} - Y_{s,i,j})^2, one loop per index."""
    R, n_seq, n, d_out = f.shape
    loss = np.zeros(R)
    for r in range(R):
        for s in range(n_seq):
            for i in range(n):
                for j in range(d_out):
                    loss[r] += (f[r, s, i, j] - Y[s, i, j]) ** 2
    return loss / (2 * n_seq)


def _with_runs(x, R):
    return x[None] if R is None else x


# --------------------------------------------------------------------------------------------
# The comparison helpers (the planted-error tests below pass wrong implementations to them)
# --------------------------------------------------------------------------------------------
def assert_head_matches_oracle(head, M, N, X):
    """``head(M, N, X) -> f`` ``(R, n_seq, n, d_out)`` equals the scalar oracle."""
    np.testing.assert_allclose(head(M, N, X), oracle_head(M, N, X), rtol=1e-11, atol=1e-13)


def assert_loss_matches_oracle(loss, M, N, X, Y):
    """``loss(M, N, X, Y) -> (R,)`` equals the oracle loss of the oracle head."""
    np.testing.assert_allclose(loss(M, N, X, Y), oracle_loss(oracle_head(M, N, X), Y),
                               rtol=1e-11, atol=1e-14)


def assert_same_loss_and_grads(first, second, rtol=1e-12):
    """Two ``(loss, grads)`` results agree: the loss to ``rtol``, every gradient entry to ``rtol``
    of the largest gradient entry (an entry that is exactly 0 in one, e.g. the key-query
    gradient with one token, carries the rounding of the terms that cancel in the other)."""
    (loss1, g1), (loss2, g2) = first, second
    np.testing.assert_allclose(loss1, loss2, rtol=rtol, atol=0)
    assert set(g1) == set(g2)
    scale = max(np.max(np.abs(g)) for g in g2.values())
    for k in g1:
        assert g1[k].shape == g2[k].shape, k
        np.testing.assert_allclose(g1[k], g2[k], rtol=rtol, atol=rtol * scale,
                                   err_msg=f"gradient {k!r}")


def _draw(seed, R, n_seq, n, d, d_out, scale, d_h=None):
    """Data and parameters of every head from one seed; M is generic (not symmetric)."""
    rng = np.random.default_rng(seed)
    lead = () if R is None else (R,)
    X = rng.standard_normal((n_seq, n, d))
    Y = rng.standard_normal((n_seq, n, d_out))
    d_h = d_h or d
    full = {k: scale * rng.standard_normal(lead + shp) for k, shp in
            [("W_K", (d, d_h)), ("W_Q", (d, d_h)), ("W_V", (d, d_h)), ("W_O", (d_out, d_h))]}
    diag = {k: scale * rng.standard_normal(lead + (d,)) for k in model.DIAG_KEYS}
    return rng, X, Y, full, diag


# --------------------------------------------------------------------------------------------
# Reference against the oracle
# --------------------------------------------------------------------------------------------
@given(n_seq=small, n=tokens, d=small, d_out=small, R=runs, seed=seeds, scale=scales)
def test_reference_head_matches_the_scalar_oracle(n_seq, n, d, d_out, R, seed, scale):
    _, X, Y, p, _ = _draw(seed, R, n_seq, n, d, d_out, scale)
    M, N = (_with_runs(A, R) for A in ref.full_products(p))
    assert_head_matches_oracle(lambda M, N, X: ref.head_forward(M, N, X)[0], M, N, X)
    assert_loss_matches_oracle(lambda M, N, X, Y: ref.products_loss_and_grads(M, N, X, Y)[0],
                               M, N, X, Y)
    # the full head's own loss, with and without a run axis
    loss, _ = ref.full_loss_and_grads(p, X, Y)
    np.testing.assert_allclose(_with_runs(np.asarray(loss), R),
                               oracle_loss(oracle_head(M, N, X), Y), rtol=1e-11)


@given(n_seq=small, n=tokens, d=small, R=runs, seed=seeds, scale=scales)
def test_reference_diagonal_head_matches_the_scalar_oracle(n_seq, n, d, R, seed, scale):
    _, X, Y, _, p = _draw(seed, R, n_seq, n, d, d, scale)
    a, b = (_with_runs(v, R) for v in ref.diag_products(p))
    M, N = a[:, :, None] * np.eye(d), b[:, :, None] * np.eye(d)       # diag(a), diag(b)
    f, _ = ref.ab_forward(a, b, X)
    np.testing.assert_allclose(f, oracle_head(M, N, X), rtol=1e-11, atol=1e-13)
    loss, _ = ref.loss_and_grads(p, X, Y)
    np.testing.assert_allclose(_with_runs(np.asarray(loss), R),
                               oracle_loss(oracle_head(M, N, X), Y), rtol=1e-11)


def test_oracle_is_the_textbook_formula_on_one_hand_computed_case():
    # n = 2 tokens, d = 1: logits x_i m x_k; f_i = sum_k beta_ik nu x_k (nu = N)
    X = np.array([[[1.0], [2.0]]])
    M, N = np.array([[[0.5]]]), np.array([[[3.0]]])
    w = np.exp([0.5 * 1 * 1, 0.5 * 1 * 2])                             # query 1
    f1 = 3.0 * (w[0] * 1 + w[1] * 2) / w.sum()
    w = np.exp([0.5 * 2 * 1, 0.5 * 2 * 2])                             # query 2
    f2 = 3.0 * (w[0] * 1 + w[1] * 2) / w.sum()
    np.testing.assert_allclose(oracle_head(M, N, X)[0, 0, :, 0], [f1, f2], rtol=1e-15)
    np.testing.assert_allclose(ref.head_forward(M, N, X)[0][0, 0, :, 0], [f1, f2], rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Fast twins against the reference
# --------------------------------------------------------------------------------------------
@given(n_seq=small, n=tokens, d=small, R=runs, seed=seeds, scale=scales)
def test_fast_diagonal_head_equals_reference(n_seq, n, d, R, seed, scale):
    _, X, Y, _, p = _draw(seed, R, n_seq, n, d, d, scale)
    assert_same_loss_and_grads(model.loss_and_grads(p, X, Y), ref.loss_and_grads(p, X, Y))
    pr = {k: _with_runs(v, R) for k, v in p.items()}                  # the unchecked core
    core = model.diag_loss_and_grads_unchecked(pr, model.diagonal_data(X, Y, pr["w_K"].shape[0]))
    assert_same_loss_and_grads(core, ref.loss_and_grads(pr, X, Y))


@given(n_seq=small, n=tokens, d=small, R=runs, seed=seeds, scale=scales)
def test_fast_product_space_equals_reference(n_seq, n, d, R, seed, scale):
    _, X, Y, _, p = _draw(seed, R, n_seq, n, d, d, scale)
    a, b = ref.diag_products(p)
    w = {"a": a, "b": b}
    assert_same_loss_and_grads(model.loss_and_grads_ab(w, X, Y), ref.loss_and_grads_ab(w, X, Y))
    a, b = _with_runs(a, R), _with_runs(b, R)
    loss, ga, gb = model.ab_loss_and_grads_unchecked(a, b, model.diagonal_data(X, Y, a.shape[0]))
    loss_r, ga_r, gb_r = ref.ab_loss_and_grads(a, b, X, Y)
    assert_same_loss_and_grads((loss, {"a": ga, "b": gb}), (loss_r, {"a": ga_r, "b": gb_r}))


@given(n_seq=small, n=tokens, d=small, d_h=small, d_out=small, R=runs, seed=seeds, scale=scales)
def test_fast_full_head_equals_reference(n_seq, n, d, d_h, d_out, R, seed, scale):
    _, X, Y, p, _ = _draw(seed, R, n_seq, n, d, d_out, scale, d_h=d_h)
    assert_same_loss_and_grads(model.full_loss_and_grads(p, X, Y), ref.full_loss_and_grads(p, X, Y))
    pr = {k: _with_runs(v, R) for k, v in p.items()}
    assert_same_loss_and_grads(model.full_loss_and_grads_unchecked(pr, X, Y, model.augment(X)),
                               ref.full_loss_and_grads(pr, X, Y))
    M, N = ref.full_products(pr)
    loss, dM, dN = model.products_loss_and_grads_unchecked(M, N, X, Y)
    loss_r, dM_r, dN_r = ref.products_loss_and_grads(M, N, X, Y)
    assert_same_loss_and_grads((loss, {"M": dM, "N": dN}), (loss_r, {"M": dM_r, "N": dN_r}))
    np.testing.assert_allclose(model.head_forward(M, N, X)[0], ref.head_forward(M, N, X)[0],
                               rtol=1e-12, atol=1e-14)


@given(R=runs, seed=seeds, big=st.sampled_from([300.0, 1e3, 1e4]))
def test_both_twins_stay_finite_and_equal_at_huge_logits(R, seed, big):
    # logits far beyond exp's range: the reference subtracts the row maximum, the fast twin
    # switches to it (shifted_exp); both stay finite and agree
    # (in the product space: the chain rule to w_Q = big * ... would only scale the rounding)
    _, X, Y, _, p = _draw(seed, R, 3, 4, 3, 3, 1.0)
    a, b = ref.diag_products(p)
    w = {"a": big * a, "b": b}
    lf, gf = model.loss_and_grads_ab(w, X, Y)
    lr, gr = ref.loss_and_grads_ab(w, X, Y)
    assert np.all(np.isfinite(lf)) and all(np.all(np.isfinite(v)) for v in gf.values())
    assert_same_loss_and_grads((lf, gf), (lr, gr))


# --------------------------------------------------------------------------------------------
# Finite differences on the reference (the fast twins': tests/test_rank_growth_model.py)
# --------------------------------------------------------------------------------------------
@given(n_seq=small, n=tokens, d=small, R=runs, seed=seeds, scale=scales)
def test_reference_diagonal_gradients_match_finite_differences(n_seq, n, d, R, seed, scale):
    rng, X, Y, _, p = _draw(seed, R, n_seq, n, d, d, scale)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    check_gradients(contract_runs(lambda q: ref.loss_and_grads(q, X, Y), R, cot), p, rng=rng)
    a, b = ref.diag_products(p)
    check_gradients(contract_runs(lambda q: ref.loss_and_grads_ab(q, X, Y), R, cot),
                    {"a": a, "b": b}, rng=rng)


@given(n_seq=small, n=tokens, d=small, d_h=small, d_out=small, R=runs, seed=seeds, scale=scales)
def test_reference_full_gradients_match_finite_differences(n_seq, n, d, d_h, d_out, R, seed, scale):
    rng, X, Y, p, _ = _draw(seed, R, n_seq, n, d, d_out, scale, d_h=d_h)
    cot = rng.uniform(0.5, 1.5, size=R or 1)
    check_gradients(contract_runs(lambda q: ref.full_loss_and_grads(q, X, Y), R, cot), p, rng=rng,
                    full_max=24)


@given(n_seq=small, n=tokens, d=small, seed=seeds, scale=scales)
def test_reference_diagonal_head_is_the_full_head_at_diagonal_weights(n_seq, n, d, seed, scale):
    _, X, Y, _, p = _draw(seed, None, n_seq, n, d, d, scale)
    full = {k.replace("w_", "W_"): np.diag(v) for k, v in p.items()}
    loss_d, g_d = ref.loss_and_grads(p, X, Y)
    loss_f, g_f = ref.full_loss_and_grads(full, X, Y)
    np.testing.assert_allclose(loss_d, loss_f, rtol=1e-13)
    for k in model.DIAG_KEYS:
        g = g_f[k.replace("w_", "W_")]
        np.testing.assert_allclose(np.diag(g), g_d[k], rtol=1e-11, atol=1e-14 * np.abs(g).max())


# --------------------------------------------------------------------------------------------
# A test of the tests: every planted error is rejected
# --------------------------------------------------------------------------------------------
def _plant_case(R=2):
    """A small case where every plant shows: n_seq, n >= 2, generic non-symmetric M."""
    rng, X, Y, p, pd = _draw(7, R, 3, 4, 3, 2, 1.0, d_h=3)
    M, N = ref.full_products(p)
    assert np.abs(M - M.swapaxes(-1, -2)).max() > 0.1
    return rng, X, Y, p, pd, M, N


def _query_axis_softmax(z, axis=-1):
    return primitives.softmax(z, axis=-2)               # normalized over the queries i


def _vjp_without_row_term(s, g, axis=-1):
    return s * g


def _forward_planted(monkeypatch, plant):
    """Install a planted error in the reference; return the planted ``head(M, N, X) -> f``."""
    if plant == "query-axis softmax":
        monkeypatch.setattr(ref, "softmax", _query_axis_softmax)
        return lambda M, N, X: ref.head_forward(M, N, X)[0]
    if plant == "logits X M^T X^T":
        return lambda M, N, X: ref.head_forward(M.swapaxes(-1, -2), N, X)[0]
    raise AssertionError(plant)


@pytest.mark.parametrize("plant", ["query-axis softmax", "logits X M^T X^T"])
def test_oracle_rejects_planted_wrong_forwards(monkeypatch, plant):
    _, X, Y, p, pd, M, N = _plant_case()
    head = _forward_planted(monkeypatch, plant)
    with pytest.raises(AssertionError):
        assert_head_matches_oracle(head, M, N, X)
    if plant == "query-axis softmax":                  # the diagonal head is caught as well
        a, b = ref.diag_products(pd)
        d = a.shape[-1]
        with pytest.raises(AssertionError):
            assert_head_matches_oracle(lambda M, N, X: ref.ab_forward(a, b, X)[0],
                                       a[..., None] * np.eye(d), b[..., None] * np.eye(d), X)
        with pytest.raises(AssertionError):            # and by the fast == reference check
            assert_same_loss_and_grads(model.loss_and_grads(pd, X, X), ref.loss_and_grads(pd, X, X))


def test_oracle_rejects_a_dropped_mean_over_sequences(monkeypatch):
    _, X, Y, p, pd, M, N = _plant_case()
    n_seq = X.shape[0]
    summed = lambda M, N, X, Y: n_seq * ref.products_loss_and_grads(M, N, X, Y)[0]  # noqa: E731
    with pytest.raises(AssertionError):
        assert_loss_matches_oracle(summed, M, N, X, Y)
    # the same error planted inside the reference: a sum over sequences instead of the mean
    monkeypatch.setattr(ref, "squared_loss",
                        lambda f, Y: (0.5 * np.sum((f - Y) ** 2, axis=(-3, -2, -1)), f - Y))
    with pytest.raises(AssertionError):
        assert_loss_matches_oracle(lambda M, N, X, Y: ref.products_loss_and_grads(M, N, X, Y)[0],
                                   M, N, X, Y)
    with pytest.raises(AssertionError):
        assert_same_loss_and_grads(model.loss_and_grads(pd, X, X), ref.loss_and_grads(pd, X, X))


def test_finite_differences_and_twins_reject_a_dropped_mean_in_the_backward(monkeypatch):
    # the loss keeps its 1/n_seq but the cotangent drops it: gradients n_seq times too large
    rng, X, Y, p, pd, M, N = _plant_case()
    n_seq = X.shape[0]
    for name in ("head_backward", "ab_backward"):
        orig = getattr(ref, name)
        monkeypatch.setattr(ref, name, lambda cache, df, orig=orig: orig(cache, n_seq * df))
    _assert_all_gradient_checks_reject(rng, X, Y, p, pd)


def test_finite_differences_and_twins_reject_a_vjp_without_its_row_term(monkeypatch):
    rng, X, Y, p, pd, M, N = _plant_case()
    monkeypatch.setattr(ref, "softmax_vjp", _vjp_without_row_term)
    _assert_all_gradient_checks_reject(rng, X, Y, p, pd)


def _assert_all_gradient_checks_reject(rng, X, Y, p, pd):
    cot = rng.uniform(0.5, 1.5, size=2)
    with pytest.raises(GradcheckError):
        check_gradients(contract_runs(lambda q: ref.full_loss_and_grads(q, X, Y), 2, cot), p,
                        rng=rng, full_max=24)
    with pytest.raises(GradcheckError):
        check_gradients(contract_runs(lambda q: ref.loss_and_grads(q, X, X), 2, cot), pd, rng=rng)
    with pytest.raises(AssertionError):
        assert_same_loss_and_grads(model.full_loss_and_grads(p, X, Y), ref.full_loss_and_grads(p, X, Y))
    with pytest.raises(AssertionError):
        assert_same_loss_and_grads(model.loss_and_grads(pd, X, X), ref.loss_and_grads(pd, X, X))


def test_twin_check_rejects_a_fast_twin_normalized_over_the_queries(monkeypatch):
    _, X, Y, p, pd, M, N = _plant_case()
    monkeypatch.setattr(model, "fast_softmax", lambda z, out=None: primitives.softmax(z, axis=-2))
    with pytest.raises(AssertionError):
        assert_same_loss_and_grads(model.full_loss_and_grads(p, X, Y), ref.full_loss_and_grads(p, X, Y))


def test_the_unplanted_case_passes_every_check():
    # the control of the plants above: the same case with nothing planted is accepted
    rng, X, Y, p, pd, M, N = _plant_case()
    assert_head_matches_oracle(lambda M, N, X: ref.head_forward(M, N, X)[0], M, N, X)
    assert_loss_matches_oracle(lambda M, N, X, Y: ref.products_loss_and_grads(M, N, X, Y)[0],
                               M, N, X, Y)
    cot = rng.uniform(0.5, 1.5, size=2)
    check_gradients(contract_runs(lambda q: ref.full_loss_and_grads(q, X, Y), 2, cot), p, rng=rng,
                    full_max=24)
    check_gradients(contract_runs(lambda q: ref.loss_and_grads(q, X, X), 2, cot), pd, rng=rng)
    assert_same_loss_and_grads(model.full_loss_and_grads(p, X, Y), ref.full_loss_and_grads(p, X, Y))
    assert_same_loss_and_grads(model.loss_and_grads(pd, X, X), ref.loss_and_grads(pd, X, X))
