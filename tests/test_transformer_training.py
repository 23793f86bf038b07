"""Adam, SGD and the schedule against their hand-written equations; the trainer and the
perturbation spectra it logs."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitheory.transformer import analysis, training
from minitheory.transformer.model import TransformerConfig, init_params
from minitheory.validation import DivergenceError, Interrupted


def _params(seed, shapes=(("a", (3, 2)), ("b", (4,)))):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in shapes}


@given(st.integers(0, 2**31), st.floats(1e-4, 1.0))
def test_one_adam_step_is_the_hand_written_update(seed, lr):
    p, g = _params(seed), _params(seed + 1)
    copies = {k: v.copy() for k, v in p.items()}
    state = training.adam_init(p)
    new, state = training.adam_update(p, g, state, lr)
    for k in p:
        m = 0.1 * g[k]                          # (1 - beta1) g
        v = 0.001 * g[k] ** 2                   # (1 - beta2) g^2
        expect = copies[k] - lr * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
        np.testing.assert_allclose(new[k], expect, rtol=1e-13, atol=1e-15)
        # the first step moves every coordinate by ~lr, against the gradient's sign
        np.testing.assert_allclose(np.abs(new[k] - p[k]), lr * np.abs(g[k]) / (np.abs(g[k]) + 1e-8),
                                   rtol=1e-10)
        np.testing.assert_array_equal(p[k], copies[k])         # inputs untouched
        np.testing.assert_allclose(state["m"][k], m, rtol=1e-15)
    assert state["t"] == 1


def test_adam_second_step_uses_bias_corrected_moments():
    p, g1, g2 = _params(0), _params(1), _params(2)
    lr = 0.01
    s = training.adam_init(p)
    p1, s = training.adam_update(p, g1, s, lr)
    p2, s = training.adam_update(p1, g2, s, lr)
    for k in p:
        for idx in np.ndindex(p[k].shape):               # scalar formula, entry by entry
            m = v = 0.0
            x = p[k][idx]
            for t, g in enumerate((g1[k][idx], g2[k][idx]), start=1):
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                x -= lr * (m / (1 - 0.9**t)) / (math.sqrt(v / (1 - 0.999**t)) + 1e-8)
            assert math.isclose(p2[k][idx], x, rel_tol=1e-12, abs_tol=1e-15)
    assert s["t"] == 2


def test_sgd_step_and_the_optimizer_names():
    p, g = _params(0), _params(1)
    new, state = training.sgd_update(p, g, training.sgd_init(p), 0.5)
    for k in p:
        np.testing.assert_array_equal(new[k], p[k] - 0.5 * g[k])
    assert state["t"] == 1
    assert training.optimizer("adam")[1] is training.adam_update
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training.optimizer("rmsprop")


def test_schedule_at_warmup_end_midpoint_and_end():
    lr, warmup, total = 0.3, 10, 110
    rates = training.lr_schedule(lr=lr, warmup=warmup, total=total)
    assert rates.shape == (total,)
    np.testing.assert_allclose(rates[:warmup], lr * np.arange(1, warmup + 1) / warmup)
    assert rates[warmup - 1] == lr and rates[warmup] == lr          # warmup end, decay start
    assert math.isclose(training.lr_at(60, lr=lr, warmup=warmup, total=total), lr / 2)
    assert training.lr_at(total, lr=lr, warmup=warmup, total=total) == 0.0
    assert np.all(np.diff(rates[warmup:]) < 0) and rates[-1] > 0
    c = np.cos(np.pi / 4)
    np.testing.assert_allclose(training.lr_schedule(lr=1.0, warmup=0, total=4),
                               [1.0, 0.5 * (1 + c), 0.5, 0.5 * (1 - c)])
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(ValueError, match="lr must be"):
            training.lr_schedule(lr=bad, warmup=1, total=5)
    with pytest.raises(ValueError, match="warmup must be in"):
        training.lr_schedule(lr=1.0, warmup=6, total=5)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------
def _heads(seed, depth=2, heads=3, d=6, d_h=2):
    rng = np.random.default_rng(seed)
    return {f"layer{l}.{k}": rng.standard_normal((heads, d, d_h))
            for l in range(depth) for k in ("W_Q", "W_K", "W_V", "W_O")}


def test_head_products_are_the_per_head_sums():
    p = _heads(0)
    KQ = analysis.head_products(p, "KQ")
    assert KQ.shape == (2, 3, 6, 6)
    for l in range(2):
        for h in range(3):
            want = sum(np.outer(p[f"layer{l}.W_K"][h, :, c], p[f"layer{l}.W_Q"][h, :, c])
                       for c in range(2))
            np.testing.assert_allclose(KQ[l, h], want, rtol=1e-13)
    np.testing.assert_allclose(analysis.head_products(p, "VO")[1, 2],
                               p["layer1.W_V"][2] @ p["layer1.W_O"][2].T)
    with pytest.raises(ValueError, match="which must be one of"):
        analysis.head_products(p, "QK")


@given(st.integers(0, 2**31))
def test_planted_rank_one_perturbation_has_stable_rank_one(seed):
    p0 = _heads(seed)
    p = {k: v.copy() for k, v in p0.items()}
    rng = np.random.default_rng(seed + 1)
    # W_K <- W_K + u c^T leaves W_Q alone: Δ(W_K W_Q^T) = u (W_Q c)^T, rank 1
    p["layer1.W_K"][2] += np.outer(rng.standard_normal(6), rng.standard_normal(2))
    spec = analysis.spectra(p, p0)
    assert spec["sv_KQ"].shape == (2, 3, 4) and spec["srank_KQ"].shape == (2, 3)
    assert math.isclose(spec["srank_KQ"][1, 2], 1.0, rel_tol=1e-9)
    assert np.all(spec["sv_KQ"][1, 2, 1:] <= 1e-10 * spec["sv_KQ"][1, 2, 0])
    untouched = np.ones((2, 3), bool)
    untouched[1, 2] = False
    assert np.all(spec["srank_KQ"][untouched] == 0) and np.all(spec["srank_VO"] == 0)
    # a generic perturbation of both factors has rank 2 d_h = 4 (the difference of two rank-2)
    q = _heads(seed + 2)
    assert np.all(analysis.spectra(q, p0)["sv_KQ"][..., -1] > 1e-8)


def test_init_spectra_have_rank_d_h():
    spec = analysis.init_spectra(_heads(0))
    assert spec["sv_KQ_init"].shape == (2, 3, 4)
    assert np.all(spec["sv_KQ_init"][..., :2] > 1e-8)
    assert np.all(spec["sv_KQ_init"][..., 2:] < 1e-12)
    assert np.all((spec["srank_VO_init"] >= 1) & (spec["srank_VO_init"] <= 2))


def test_log_steps():
    s = analysis.log_steps(1000, 20)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 1000 and np.all(np.diff(s) > 0)
    assert 12 <= len(s) <= 20
    assert analysis.log_steps(3, 30).tolist() == [0, 1, 2, 3]
    assert analysis.log_steps(0, 5).tolist() == [0]


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
TINY = TransformerConfig(task="vision", n_tokens=5, n_in=4, n_out=3, d=8, heads=2, d_h=4,
                         depth=2, d_mlp=16)


def _problem(seed=0, n=48):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4, 4))
    y = (x[:, :, 0].sum(1) > 0).astype(int) + (x[:, 0, 1] > 1).astype(int)
    return x, y


def _batch(x, y, B=16):
    return lambda step: (x[(step * B) % len(x):][:B], y[(step * B) % len(x):][:B])


def test_trainer_starts_from_a_zero_perturbation_and_learns():
    x, y = _problem()
    p0 = init_params(np.random.default_rng(0), TINY)
    copies = {k: v.copy() for k, v in p0.items()}
    params, hist = training.train(p0, TINY, _batch(x, y), steps=60, lr=3e-3, warmup=5,
                                  log_at=[0, 1, 10, 60])
    assert hist["step"].tolist() == list(range(61)) and hist["log_step"].tolist() == [0, 1, 10, 60]
    assert np.all(hist["sv_KQ"][0] == 0) and np.all(hist["srank_VO"][0] == 0)     # step 0
    assert np.all(hist["srank_KQ"][1:] >= 1) and np.all(hist["srank_KQ"][1:] <= 8)
    assert hist["lr"][4] == 3e-3 and hist["lr"][-1] == 0
    assert hist["loss"][-10:].mean() < 0.7 * hist["loss"][:3].mean()
    for k in p0:
        np.testing.assert_array_equal(p0[k], copies[k])
    # the logged spectra are those of the returned parameters
    np.testing.assert_allclose(hist["srank_KQ"][-1], analysis.spectra(params, p0)["srank_KQ"])


def test_trainer_is_deterministic_and_sgd_is_plain_sgd():
    x, y = _problem()
    p0 = init_params(np.random.default_rng(1), TINY)
    a = training.train(p0, TINY, _batch(x, y), steps=3, lr=0.1, warmup=0, optimizer_name="sgd")
    b = training.train(p0, TINY, _batch(x, y), steps=3, lr=0.1, warmup=0, optimizer_name="sgd")
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
    one = training.train(p0, TINY, _batch(x, y), steps=1, lr=0.1, warmup=0, optimizer_name="sgd")
    from minitheory.transformer.model import loss_and_grads
    _, g = loss_and_grads(p0, *_batch(x, y)(0), TINY)
    for k in p0:
        np.testing.assert_allclose(one[0][k], p0[k] - 0.1 * g[k], rtol=1e-12, atol=1e-15)


def test_divergence_names_the_step_and_lr_and_keeps_the_history():
    x, y = _problem()
    p0 = init_params(np.random.default_rng(0), TINY)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: .* lr=") as info:
        training.train(p0, TINY, _batch(x, y), steps=50, lr=1e150, warmup=0,
                       optimizer_name="sgd", log_at=range(51))
    err = info.value
    params, hist = err.partial
    assert len(hist["step"]) == err.step and len(hist["log_step"]) == err.step
    assert hist["srank_KQ"].shape[0] == err.step and np.all(np.isfinite(hist["loss"]))
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_ctrl_c_keeps_every_step_before_it():
    x, y = _problem()
    p0 = init_params(np.random.default_rng(0), TINY)
    inner = _batch(x, y)

    def batch(step):
        if step == 4:
            raise KeyboardInterrupt
        return inner(step)

    with pytest.raises(Interrupted) as info:
        training.train(p0, TINY, batch, steps=10, lr=1e-3, warmup=2, log_at=range(11))
    params, hist = info.value.partial
    assert info.value.step == 4 and hist["step"].tolist() == [0, 1, 2, 3]
    assert hist["log_step"].tolist() == [0, 1, 2, 3] and hist["sv_KQ"].shape[0] == 4


def test_a_schedule_that_is_all_warmup_holds_the_rate_after_it():
    # warmup == total: the rate climbs to lr and stays there (no cosine phase to divide by)
    np.testing.assert_allclose([training.lr_at(s, lr=0.1, warmup=4, total=4) for s in range(6)],
                               [0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=1e-15)
