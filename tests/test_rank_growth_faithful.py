"""The paper's own protocols (arXiv:2306.07042 v2): Algorithm 1 in its symbols and on a case where
a coordinate returns to zero, the assumption-check perturbation, the App. A toy, and the
configurable teacher of the full head."""
import time

import numpy as np
import pytest

from minitheory.demos import rank_growth, rank_growth_assumptions, rank_growth_full
from minitheory.rank_growth import analysis, data, incremental, model
from minitheory.spectral import singular_values

RETURN_A = (1.5, 0.0, -1.0, 0.7, 0.0)
RETURN_B = (0.0, 1.1, -0.6, 0.0, 0.45)


@pytest.fixture(scope="module")
def toy():
    X, Y = data.diagonal_toy(0, 256, 8, 4)
    return X, Y, incremental.incremental_learning(X, Y)


def grad_w(w, X, Y):
    d = X.shape[-1]
    _, g = model.loss_and_grads_ab({"a": w[:d], "b": w[d:]}, X, Y)
    return np.concatenate([g["a"], g["b"]])


def test_paper_symbols_match_the_exponent_form(toy):
    # Replay phase (A) in the exponent form s = 1 - b (tau_i = (sgn g_i - s_i) / g_i,
    # s += g tau) from the plateau points, and compare with the stored b^k, Delta_k, i_k.
    X, Y, res = toy
    p = res.plateau_w.shape[1]
    s, tbar, w = np.zeros(p), 0.0, np.zeros(p)
    for k in range(len(res.times)):
        g = -grad_w(w, X, Y)
        cand = np.flatnonzero((w == 0) & (np.abs(g) > 1e-8))
        tau = (np.sign(g[cand]) - s[cand]) / g[cand]
        i_star = int(cand[np.argmin(tau)])
        tbar += tau.min()
        s[w == 0] = np.clip(s[w == 0] + tau.min() * g[w == 0], -1, 1)
        s[i_star] = np.sign(g[i_star])
        assert i_star == res.coordinate[k]
        assert tbar == pytest.approx(res.times[k], rel=1e-12)
        np.testing.assert_allclose(res.log_weights[k], 1.0 - s, atol=1e-12)
        # and the paper's Delta_k(i) itself, from the log-weights before the jump
        b_prev = np.ones(p) if k == 0 else res.log_weights[k - 1]
        delta = incremental.activation_times(b_prev, g)
        assert delta[i_star] == pytest.approx(tau.min(), rel=1e-12)
        w = res.plateau_w[k]
    # b^0 = 1 gives Delta_0(i) = 1 / |g_i(0)|
    g0 = -grad_w(np.zeros(p), X, Y)
    np.testing.assert_allclose(incremental.activation_times(np.ones(p), g0)[g0 != 0],
                               1 / np.abs(g0[g0 != 0]))
    # active coordinates sit at b in {0, 2}
    for k in range(len(res.times)):
        on = res.plateau_w[k] != 0
        assert np.all(np.isin(res.log_weights[k][on], [0.0, 2.0]))


def test_activation_time_formula():
    b = np.array([0.3, 0.3, 1.0, 1.7])
    g = np.array([2.0, -2.0, 0.0, -0.5])
    np.testing.assert_allclose(incremental.activation_times(b, g), [0.15, 0.85, np.inf, 0.6])


def test_a_coordinate_that_returns_to_zero_is_solved_quickly_and_exactly():
    # The limiting flow shrinks a_1 only like 1/t here; the Newton polish on the support
    # must end the stage with a_1 = 0 exactly, the teacher recovered, and no spurious stage.
    X, Y = data.diagonal_toy(11, 128, 6, 5, RETURN_A, RETURN_B)
    t0 = time.perf_counter()
    res = incremental.incremental_learning(X, Y, max_evals=20_000)
    elapsed = time.perf_counter() - t0
    assert res.names() == ["b1", "a1", "b4", "a0", "b2", "a2", "a3"]
    assert res.n_evals < 20_000 and elapsed < 120          # bounded (was 509k evaluations)
    a1 = 1
    assert np.all(res.plateau_w[1:6, a1] != 0) and res.plateau_w[6, a1] == 0
    np.testing.assert_allclose(res.plateau_w[-1], RETURN_A + RETURN_B, atol=1e-9)
    assert res.plateau_loss[-1] < 1e-20
    np.testing.assert_array_equal(res.plateau_w[-1] != 0, np.array(RETURN_A + RETURN_B) != 0)
    assert np.all(np.diff(res.times) > 0) and np.all(res.stationarity < 1e-9)
    for w in res.plateau_w:                                   # stationary on each support
        assert np.max(np.abs(grad_w(w, X, Y)[w != 0])) < 1e-8


def test_non_convergence_is_a_clear_error_that_keeps_the_stages(toy):
    X, Y, full = toy
    with pytest.raises(incremental.IncrementalError, match="max_evals=900") as info:
        incremental.incremental_learning(X, Y, max_evals=900)
    part = info.value.partial
    assert isinstance(info.value, RuntimeError)
    k = len(part.times)
    assert 1 <= k < len(full.times)
    assert part.names() == full.names()[:k]
    np.testing.assert_allclose(part.plateau_w, full.plateau_w[:k], atol=1e-9)


def test_perturbation_touches_only_non_negligible_coordinates_with_the_stated_std():
    rng = np.random.default_rng(5)
    R, d = 400, 50
    scale = 10.0 ** rng.uniform(-6, 0, size=(4, R, d))           # products from 1e-12 to 1
    params = {k: scale[i] * rng.choice([-1, 1], size=(R, d)) for i, k in
              enumerate(model.DIAG_KEYS)}
    a = params["w_K"] * params["w_Q"]
    b = params["w_V"] * params["w_O"]
    big = np.concatenate([np.abs(a) > 1e-5, np.abs(b) > 1e-5], -1)
    assert 0.1 < big.mean() < 0.9
    for std in (0.05, 0.01):
        new, mask = analysis.perturb_nonnegligible(params, np.random.default_rng(1), std)
        np.testing.assert_array_equal(mask, big)
        for k, m in (("w_K", big[:, :d]), ("w_Q", big[:, :d]), ("w_V", big[:, d:]),
                     ("w_O", big[:, d:])):
            delta = new[k] - params[k]
            assert np.all(delta[~m] == 0)                            # untouched, bitwise
            assert np.all(delta[m] != 0)
            assert np.std(delta[m]) == pytest.approx(std, rel=0.05)
            assert abs(np.mean(delta[m])) < 0.05 * std


def test_factors_are_recovered_from_products_and_conserved_quantities():
    rng = np.random.default_rng(2)
    u = rng.standard_normal(1000) * 10.0 ** rng.uniform(-32, 0, 1000)
    v = rng.standard_normal(1000) * 10.0 ** rng.uniform(-32, 0, 1000)
    uu, vv = analysis.factors_from_products(u * v, u * u - v * v, np.sign(u + v), np.sign(u - v))
    size = np.abs(u) + np.abs(v)
    assert np.max(np.abs(uu - u) / size) < 1e-13 and np.max(np.abs(vv - v) / size) < 1e-13


def test_assumption_protocol_of_the_demo(tmp_path):
    cfg = rank_growth_assumptions.Config(n_seq=32, n_tokens=4, alpha=1e-8, tbar_max=2.0,
                                         epochs=40)
    m, res, err = rank_growth_assumptions.run(cfg)
    assert err is None
    kind, starts = m["kind"], m["starts"]
    assert (kind == 0).sum() == 5 and (kind == 2).sum() == 1
    # 4.5 epochs: where some coordinate first exceeds 1e-5 in the reference run
    above = np.abs(m["w_ref"]) > 1e-5
    firsts = {int(np.argmax(above[:, i])) for i in range(above.shape[1]) if above[:, i].any()}
    assert set(starts[kind == 1].tolist()) <= firsts and len(starts[kind == 1]) >= 3
    for j in np.flatnonzero(kind < 2):
        ref = m["w_ref"][starts[j]]
        np.testing.assert_array_equal(m["perturbed"][j], np.abs(ref) > 1e-5)
        keep = ~m["perturbed"][j]
        np.testing.assert_allclose(m["w_start_branch"][j][keep], ref[keep], rtol=1e-12, atol=0)
        assert np.all(m["w_start_branch"][j][~keep] != ref[~keep])
        # the unperturbed continuation is the reference: branch = reference when std -> 0 is
        # not run; instead the windows line up with the reference steps
        assert m["windows"][j] == min(40, len(m["tbar_ref"]) - 1 - starts[j])
    assert np.all(m["perturbed"][kind == 2])                        # ours: all weights


def test_paper_toy_setting():
    X, Y, a_star, b_star = data.paper_toy(0)
    assert X.shape == (1000, 10, 50) and Y.shape == X.shape
    assert np.count_nonzero(a_star) == 9 and np.count_nonzero(b_star) == 6
    loss, _ = model.loss_and_grads_ab({"a": np.zeros(50), "b": np.zeros(50)}, X, Y)
    assert float(loss) == pytest.approx(0.089, abs=5e-4)          # the paper's figure: ~0.09
    assert rank_growth.PAPER_TOY["alphas"] == (0.1, 0.01, 1e-4, 1e-8, 1e-16, 1e-32)
    with pytest.raises(ValueError, match="nnz_b"):
        data.sparse_diagonal_teacher(np.random.default_rng(0), 5, 2, 6)


def test_paper_toy_demo_runs_small(tmp_path, capsys):
    argv = ["--paper-toy", "--quick", "--n-seq", "24", "--d", "12", "--nnz-a", "3", "--nnz-b",
            "2", "--tbar-max", "3", "--out", str(tmp_path)]
    assert rank_growth.main(argv) == 0
    out = capsys.readouterr().out
    assert "paper's Fig. 2 (v2)" in out and "loss at t = 0" in out
    for name in ("rank_growth_paper_toy_loss", "rank_growth_paper_toy_entries"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert rank_growth.main(["--replot", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("d_out,m_sv,n_sv", [(4, (2.0,), (1.5, 0.7, 0.2)),
                                              (7, (1.0, 0.5, 0.25), (3.0,))])
def test_full_teacher_has_the_requested_ranks_and_singular_values(d_out, m_sv, n_sv):
    X, Y, M, N = data.full_toy(3, 16, 4, 5, d_out=d_out, m_singular=m_sv, n_singular=n_sv)
    assert M.shape == (5, 5) and N.shape == (5, d_out) and Y.shape == (16, 4, d_out)
    sm, sn = singular_values(M), singular_values(N)
    np.testing.assert_allclose(sm[:len(m_sv)], m_sv, rtol=1e-12)
    np.testing.assert_allclose(sn[:len(n_sv)], n_sv, rtol=1e-12)
    assert np.all(sm[len(m_sv):] < 1e-12) and np.all(sn[len(n_sv):] < 1e-12)


def test_full_teacher_defaults_unchanged_and_bad_options():
    X, Y, M, N = data.full_toy(0, 256, 8, 6)
    np.testing.assert_allclose(singular_values(M)[:2], data.M_SINGULAR)
    with pytest.raises(ValueError, match="n_singular"):
        data.full_toy(0, 4, 3, 3, n_singular=(1.0, -1.0))
    with pytest.raises(ValueError, match="m_singular"):
        data.full_toy(0, 4, 3, 3, m_singular=())
    with pytest.raises(ValueError, match="m_singular"):
        rank_growth_full.Config(d=4, d_h=1)
    with pytest.raises(ValueError, match="n_singular"):
        rank_growth_full.Config(d=4, d_out=2)
    with pytest.raises(ValueError, match="d_h"):
        rank_growth_full.Config(d_h=-1)
    cfg = rank_growth_full.Config(d=5, d_h=4, d_out=3, m_singular=(1.0,), n_singular=(1.0, 0.5),
                                  alphas=(1e-2,), detail_alpha=1e-2, n_seq=8, n_tokens=3,
                                  tbar_max=0.5)
    m, _, err = rank_growth_full.run(cfg)
    assert err is None and m["sv_dN"].shape[-1] == 3
    np.testing.assert_allclose(m["sv_N_star"][:2], [1.0, 0.5])


def test_perturbation_rank_counts_the_coordinates_that_moved():
    # the rank of diag(w - w0): from a full init, a move in two coordinates is rank 2
    w0 = np.array([[0.3, -0.2, 0.4, 0.1]])
    w = w0 + np.array([[1.0, 0.0, -0.5, 0.0]])
    np.testing.assert_array_equal(analysis.perturbation_rank(w, w0), [2])
    np.testing.assert_array_equal(analysis.perturbation_rank(w0, w0), [0])
