"""Sparse contextual bigrams as the paper's captions describe them (Ren, Wang, Lee 2024,
arXiv:2410.23438): SGD branches from the stage-1 endpoint (Fig. 1), the distance to the
population process (Figs. 3, 5), the similarity with the truth (Fig. 4), first_reach over
several metrics."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minitheory.sparse_bigrams import analysis, data, model, population as pop, reference, training
from minitheory.validation import DivergenceError
from strategies import seeds

TWO = training.Method(tau=6, eta1=0.05, eta2=0.05, eta2_A=0.05, lam=0.01)
SGD = training.Method(kind="sgd", eta=0.3)


def _inst(seed=0, N=4, T=5):
    return data.make_instance(np.random.default_rng(seed), N, T, 2)


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --------------------------------------------------------------------------------------------
# Fig. 1: the methods share stage 1 and branch at tau
# --------------------------------------------------------------------------------------------
def test_the_branches_start_from_the_stage_one_endpoint():
    inst = _inst()
    start = training.stage_one(inst, TWO, [1, 2], batch=8, log_every=2)
    assert start.step == TWO.tau
    at_tau, h_tau = training.train(inst, TWO, [1, 2], steps=TWO.tau, batch=8, log_every=2)
    _assert_same(start.params, at_tau)                        # params at tau: the two-stage run's
    _assert_same(start.history, h_tau)
    sgd, h_sgd = training.branch(inst, SGD, start, steps=TWO.tau, log_every=2)
    _assert_same(sgd, at_tau)                                 # a branch of length 0 is the endpoint
    # a longer SGD branch: the same history up to tau, then its own
    sgd, h_sgd = training.branch(inst, SGD, start, steps=20, log_every=2)
    two, h_two = training.train(inst, TWO, [1, 2], steps=20, batch=8, log_every=2)
    upto = h_two["step"] <= TWO.tau
    np.testing.assert_array_equal(h_sgd["step"], h_two["step"])
    np.testing.assert_array_equal(h_sgd["samples"], h_two["samples"])
    for key in ("dist_A", "dist_V", "alpha_A"):
        np.testing.assert_array_equal(h_sgd[key][upto], h_two[key][upto])
        assert not np.any(h_sgd[key][~upto] == h_two[key][~upto])
    # and SGD from scratch is another run (the branch is not the baseline of before)
    scratch, _ = training.train(inst, SGD, [1, 2], steps=20, batch=8)
    assert not np.allclose(scratch["A"], sgd["A"])


def test_the_two_stage_branch_is_the_two_stage_run_and_branches_share_batches():
    inst = _inst(1)
    start = training.stage_one(inst, TWO, [3], batch=8, population=True)
    full, h_full = training.train(inst, TWO, [3], steps=25, batch=8, population=True)
    cont, h_cont = training.branch(inst, TWO, start, steps=25)
    _assert_same(cont, full)
    # logged on the run's grid 0, 10, 20 and the last step, plus the branch point tau = 6
    assert h_cont["step"].tolist() == [0, 6, 10, 20, 25]
    same = h_cont["step"] != TWO.tau
    _assert_same({k: v[same] for k, v in h_cont.items()}, h_full)
    again, _ = training.branch(inst, TWO, start, steps=25)    # the checkpoint is not consumed
    _assert_same(again, full)


def test_one_sgd_step_after_the_branch_is_plain_sgd_on_the_next_batch():
    inst = _inst(2)
    start = training.stage_one(inst, TWO, [4], batch=8)
    rng = np.random.default_rng(4)
    for _ in range(TWO.tau):                                  # the batches stage 1 used
        data.sample(rng, inst, 8)
    xs, k, xo = data.sample(rng, inst, 8)
    V, A = start.params["V"][0], start.params["A"][0]
    _, g = reference.loss_and_grads({"V": V, "A": A}, xs, k, xo)
    sgd, _ = training.branch(inst, SGD, start, steps=TWO.tau + 1)
    np.testing.assert_allclose(sgd["V"][0], V - SGD.eta * g["V"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sgd["A"][0], A - SGD.eta * g["A"], rtol=1e-12, atol=1e-14)


def test_a_diverging_branch_keeps_stage_one_in_its_partial_history():
    inst = data.make_instance(np.random.default_rng(0), 10, 50, 2)
    start = training.stage_one(inst, training.Method(tau=20), [0])
    with pytest.raises(DivergenceError) as info:
        training.branch(inst, training.Method(kind="sgd", eta=1e4), start, steps=200)
    _, hist = info.value.partial
    assert hist["step"][0] == 0 and hist["step"][-1] < info.value.step
    assert info.value.step >= 20 and "eta=" in str(info.value)


def test_bad_branch_settings():
    inst = _inst()
    with pytest.raises(ValueError, match="stage_one needs a two-stage method"):
        training.stage_one(inst, SGD, [0])
    start = training.stage_one(inst, TWO, [0], batch=4)
    with pytest.raises(ValueError, match="steps must be in"):
        training.branch(inst, SGD, start, steps=TWO.tau - 1)
    with pytest.raises(ValueError, match="softmax"):
        training.branch(inst, training.Method(kind="softmax"), start, steps=10)


# --------------------------------------------------------------------------------------------
# Figs. 3 and 5: the distance to the population process
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [TWO, SGD, training.Method(kind="softmax", eta=0.3, eta_W=5.0)],
                         ids=["two_stage", "sgd", "softmax"])
def test_population_distance_is_exactly_zero_with_exact_gradients(method):
    inst = _inst(3)
    _, h = training.train(inst, method, [0, 1], steps=15, batch=8, population=True, exact=True)
    assert np.all(h["delta_V"] == 0) and np.all(h["delta_A"] == 0)
    _, h = training.train(inst, method, [0, 1], steps=15, batch=8, population=True)
    assert np.all(h["delta_V"][0] == 0) and np.all(h["delta_A"][0] == 0)   # the same start
    assert np.all(h["delta_V"][1:] > 0) and np.all(h["delta_A"][1:] > 0)   # then batch noise


def test_population_distance_of_a_branch_is_zero_with_exact_gradients():
    inst = _inst(4)
    start = training.stage_one(inst, TWO, [0], population=True, exact=True)
    _, h = training.branch(inst, SGD, start, steps=20)
    assert np.all(h["delta_A"] == 0) and np.all(h["delta_V"] == 0)


def test_the_population_process_steps_on_the_closed_form_gradients():
    inst = _inst(5)
    V0, A0 = training.uninformative_init(inst, 1)["V"][0], np.full((5, 4), 0.2)
    exact, _ = training.train(inst, TWO, [0], steps=1, init={"V": V0, "A": A0}, exact=True)
    g = reference.preconditioned_grads({"V": V0, "A": A0}, inst)
    np.testing.assert_allclose(exact["V"][0], V0 - TWO.eta1 * g["V"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(exact["A"][0], A0 - TWO.eta1 * g["A"], rtol=1e-12, atol=1e-15)
    # the logged delta is the mu-distance between the sampled run and that process
    run, h = training.train(inst, TWO, [0], steps=1, init={"V": V0, "A": A0}, population=True)
    for key in ("V", "A"):
        d = np.sqrt(model.mu_norm2(run[key][0] - exact[key][0], inst.mu))
        assert h[f"delta_{key}"][-1, 0] == pytest.approx(d, rel=1e-12)


def test_large_T_population_process_is_the_noiseless_schedule():
    inst = pop.make_large_instance(np.random.default_rng(8), 6, 40, 2)
    noisy = pop.Schedule(eta_A=1.0, B1=1e3, B2=1e2, lam=1e-3, tau=3)
    clean = dataclasses.replace(noisy, B1=np.inf, B2=np.inf)
    V0, A0 = np.outer(inst.mu, np.ones(6)) * 1.1, np.full((40, 6), 1 / 40) + 0.01
    inits = {"noisy": {"V": V0, "A": A0}, "clean": {"V": V0, "A": A0},
             "reference": {"V": V0, "A": A0}}
    hist = pop.simulate(inst, {"noisy": noisy, "clean": clean}, steps=8,
                        rng=np.random.default_rng(1), population=True, reference=clean,
                        inits=inits)
    # a noiseless run against its own (separately run) process: exactly 0
    assert np.all(hist["clean"]["delta_A"] == 0) and np.all(hist["clean"]["delta_V"] == 0)
    # the noisy run against its process = against the noiseless run from the same start
    np.testing.assert_allclose(hist["noisy"]["delta_A"], hist["noisy"]["ref_dist_A"],
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hist["noisy"]["delta_V"], hist["noisy"]["ref_dist_V"],
                               rtol=1e-12, atol=1e-15)
    assert hist["noisy"]["delta_A"][0] == 0 and np.all(hist["noisy"]["delta_A"][1:] > 0)


def test_large_T_processes_coinciding_with_the_reference_share_it():
    inst = pop.make_large_instance(np.random.default_rng(9), 5, 30, 2)
    noisy = pop.Schedule(eta_A=1.0, B1=1e3, B2=1e2, tau=2)
    small = dataclasses.replace(noisy, B1=1e2)
    clean = dataclasses.replace(noisy, B1=np.inf, B2=np.inf)
    hist = pop.simulate(inst, {"noisy": noisy, "small": small}, steps=5,
                        rng=np.random.default_rng(2), reference=clean, population=True)
    for name in ("noisy", "small"):
        np.testing.assert_array_equal(hist[name]["delta_A"], hist[name]["ref_dist_A"])
    assert set(hist) == {"noisy", "small"}                    # processes are not reported as runs


# --------------------------------------------------------------------------------------------
# Fig. 4: similarity with the ground truth
# --------------------------------------------------------------------------------------------
@given(seed=seeds, c=st.floats(1e-3, 1e3), d=st.floats(1e-3, 1e3))
def test_similarity_is_one_at_the_truth_and_scale_free(seed, c, d):
    inst = _inst(seed % 50, N=5, T=7)
    sV, sA = analysis.similarity({"V": inst.P, "A": inst.Q_star}, inst)
    assert sV == pytest.approx(1.0, abs=1e-14) and sA == pytest.approx(1.0, abs=1e-14)
    rng = np.random.default_rng(seed)
    V, A = inst.P + 0.3 * rng.random((5, 5)), inst.Q_star + 0.3 * rng.random((7, 5))
    sV, sA = analysis.similarity({"V": V, "A": A}, inst)
    assert sV < 1 - 1e-6 and sA < 1 - 1e-6
    sV2, sA2 = analysis.similarity({"V": c * V, "A": A / d}, inst)
    assert sV2 == pytest.approx(sV, rel=1e-12) and sA2 == pytest.approx(sA, rel=1e-12)
    sVn, sAn = analysis.similarity({"V": -V, "A": -A}, inst)
    assert sVn == pytest.approx(-sV, rel=1e-12) and sAn == pytest.approx(-sA, rel=1e-12)
    # the mu-weighted inner product, written out
    num = sum(inst.mu[k] * A[:, k] @ inst.Q_star[:, k] for k in range(5))
    den = np.sqrt(sum(inst.mu[k] * A[:, k] @ A[:, k] for k in range(5))
                  * sum(inst.mu[k] * inst.Q_star[:, k] @ inst.Q_star[:, k] for k in range(5)))
    assert sA == pytest.approx(num / den, rel=1e-12)


def test_similarity_of_a_zero_matrix_is_zero_and_runs_are_separate():
    inst = _inst(6)
    V = np.stack([inst.P, np.zeros((4, 4))])
    A = np.stack([np.zeros((5, 4)), inst.Q_star])
    sV, sA = analysis.similarity({"V": V, "A": A}, inst)
    np.testing.assert_allclose(sV, [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(sA, [0.0, 1.0], atol=1e-14)


@pytest.mark.parametrize("scale", [0.0, 0.05, 1.0, 20.0])
def test_large_T_metrics_equal_their_dense_definitions(scale):
    # every logged large-T metric, from the column statistics, against the dense definition in
    # analysis; scales with mu-norms 0 (the guards), below one and above one
    inst = pop.make_large_instance(np.random.default_rng(3), 5, 9, 2)
    dense = data.check_instance(inst.P, inst.mu, inst.q.dense())
    rng = np.random.default_rng(0)
    V, A = scale * rng.random((5, 5)), scale * rng.random((9, 5))
    m = pop.metrics(V, A, pop.column_stats(A, inst.q), inst)
    p = {"V": V, "A": A}
    want = dict(zip(("sim_V", "sim_A"), analysis.similarity(p, dense)))
    want.update(zip(("dist_V", "dist_A"), analysis.distances(p, dense)))
    want.update(zip(("alpha_V", "alpha_A", "resid_V", "resid_A"), analysis.signals(p, dense)))
    assert set(m) == set(want)
    for key in want:
        assert m[key] == pytest.approx(float(want[key]), rel=1e-10, abs=1e-12), key


# --------------------------------------------------------------------------------------------
# first_reach over several metrics
# --------------------------------------------------------------------------------------------
def test_first_reach_needs_every_metric_below_the_level():
    h = {"step": np.array([0, 10, 20, 30, 40]), "samples": np.array([0, 640, 1280, 1920, 2560]),
         "dist_A": np.array([[0.9, 0.9], [0.05, 0.5], [0.2, 0.05], [0.05, 0.05], [0.05, 0.5]]),
         "dist_V": np.array([[0.9, 0.9], [0.5, 0.05], [0.05, 0.05], [0.05, 0.5], [0.05, 0.5]])}
    step, samples = training.first_reach(h, "dist_A", 0.1)
    np.testing.assert_array_equal(step, [10, 20])
    step, samples = training.first_reach(h, ["dist_A", "dist_V"], 0.1)
    np.testing.assert_array_equal(step, [30, 20])             # not 10: dist_V is still 0.5 there
    np.testing.assert_array_equal(samples, [1920, 1280])
    step, _ = training.first_reach(h, ("dist_A", "dist_V"), 0.01)
    assert np.all(np.isinf(step))
    with pytest.raises(ValueError, match="not in the history"):
        training.first_reach(h, ["dist_A", "delta_A"], 0.1)
    with pytest.raises(ValueError, match="at least one metric"):
        training.first_reach(h, [], 0.1)


@given(seed=seeds)
def test_population_gradients_of_both_models_match_finite_differences(seed):
    # the population process's exact gradients, of the linear model and of the softmax model
    # through the softmax over positions, are the gradients of the closed-form loss
    from minitheory.gradcheck import check_gradients, contract_runs
    rng = np.random.default_rng(seed)
    inst = _inst(seed % 7)
    cot = rng.uniform(0.5, 1.5, 2)
    for params in ({"V": rng.standard_normal((2, inst.N, inst.N)),
                    "A": rng.standard_normal((2, inst.T, inst.N))},
                   {"V": rng.standard_normal((2, inst.N, inst.N)),
                    "W": rng.standard_normal((2, inst.T, inst.N))}):
        f = contract_runs(lambda p: training.population_loss_and_grads(p, inst), cot)
        report = check_gradients(f, params, rng=rng)
        assert set(report.n_compared) == set(params)


def test_support_recovery_counts_columns_and_false_positives_per_run():
    # Q = 2 of T = 5 positions per column; run 0 finds the support in columns 0 and 2 (of 4) and
    # puts 3 non-zeros off the support; run 1 is the truth itself
    inst = _inst(7)
    truth = inst.Q_star > 0
    A0 = inst.Q_star.copy()
    for k in (1, 3):                                     # move one support entry off the support
        t_in, t_out = np.flatnonzero(truth[:, k])[0], np.flatnonzero(~truth[:, k])[0]
        A0[t_out, k], A0[t_in, k] = 2.0, 0.0
    A0[np.flatnonzero(~truth[:, 0])[0], 0] = 1e-3        # a small off-support non-zero
    right, off = analysis.support_recovery(np.stack([A0, inst.Q_star]), inst)
    np.testing.assert_allclose(right, [0.5, 1.0])
    np.testing.assert_allclose(off, [3 / (~truth).sum(), 0.0])
