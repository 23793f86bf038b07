"""The fast transformer: equal to the reference, gradients against finite differences, the
initialization and its scale factor, properties of the mask, and refused bad input."""
import dataclasses
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from minitheory.gradcheck import check_gradients
from minitheory.primitives import exp_is_safe
from minitheory.transformer import checks, model, reference
from tests.strategies import seeds
from tests.test_transformer_reference import _case, _perturb, configs

IMPLS = {"reference": reference, "fast": model}


def _fd_target(impl, inputs, targets, cfg):
    """``params -> (loss, grads)`` for the checker; only the first call (the point of the
    check) runs the backward pass, the perturbed points need only the loss."""
    calls = []

    def f(params):
        calls.append(None)
        if len(calls) == 1:
            return impl.loss_and_grads(params, inputs, targets, cfg)
        z, _ = impl.forward(params, inputs, cfg)
        return reference.cross_entropy(z, targets)[0], None
    return f


def _relu_pattern(inputs, cfg):
    """The sign pattern of every MLP pre-activation (the ReLU kinks), from the reference."""
    def pattern(params):
        blocks = reference.forward(params, inputs, cfg)[1][1]
        return np.concatenate([b[3][2][0].ravel() for b in blocks])
    return pattern


@settings(max_examples=30)
@given(configs())
def test_fast_equals_reference(case):
    cfg, params, inputs, targets = _case(**case)
    params = _perturb(np.random.default_rng(case["seed"] + 1), params)
    loss_r, g_r = reference.loss_and_grads(params, inputs, targets, cfg)
    loss_f, g_f = model.loss_and_grads(params, inputs, targets, cfg)
    assert np.isclose(loss_f, loss_r, rtol=1e-12, atol=0)
    assert set(g_f) == set(g_r) == set(params)
    # atol on the scale of the largest gradient: a LayerNorm backward is a difference of
    # terms of that size (at d = 2 it cancels to ~1e-6 of it), so rounding is relative to it;
    # and LayerNorm multiplies the rounding of its input by 1/std, which a few nearly equal
    # features make large (a d = 2 draw differed by 5e-13 on gradients of 1.7)
    scale = max(np.max(np.abs(g)) for g in g_r.values())
    scale *= max(1.0, 1.0 / _smallest_layer_norm_std(params, inputs, cfg))
    for key in params:
        assert g_f[key].shape == params[key].shape
        np.testing.assert_allclose(g_f[key], g_r[key], rtol=1e-12, atol=1e-13 * scale,
                                   err_msg=key)
    np.testing.assert_allclose(model.logits(params, inputs, cfg),
                               reference.logits(params, inputs, cfg), rtol=1e-12, atol=1e-12)


def _smallest_layer_norm_std(params, inputs, cfg):
    """The smallest standard deviation of any token's LayerNorm input in the reference forward.
    Where it is tiny (a few features that nearly agree, e.g. d = 2) the normalization bends
    sharply, and the finite-difference reference itself is off: a draw with std ~1e-3 at d = 2
    had a central difference at h = 1e-4 wrong by 6e-6 relative, while h = 1e-6 agreed with the
    analytic gradient to 1e-7."""
    seen = []

    def spy(x, g, b):
        y, cache = layer_norm(x, g, b)
        seen.append(float(np.max(cache[1])))              # inv_std = 1 / sqrt(var + eps)
        return y, cache
    layer_norm = reference.layer_norm
    reference.layer_norm = spy
    try:
        reference.forward(params, inputs, cfg)
    finally:
        reference.layer_norm = layer_norm
    return 1.0 / max(seen)


@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=8)
@given(case=configs())
def test_gradients_match_finite_differences(impl, case):
    cfg, params, inputs, targets = _case(**case)
    params = _perturb(np.random.default_rng(case["seed"] + 1), params)
    # off the sharp bends of LayerNorm, as off the kinks of ReLU (the fast == reference test
    # covers every draw)
    assume(_smallest_layer_norm_std(params, inputs, cfg) > 0.05)
    pattern = _relu_pattern(inputs, cfg) if cfg.activation == "relu" else None
    report = check_gradients(_fd_target(IMPLS[impl], inputs, targets, cfg), params,
                             rng=np.random.default_rng(case["seed"]), full_max=12,
                             n_directions=2, pattern=pattern)
    assert set(report.n_compared) == set(params)


@pytest.mark.parametrize("task", ["vision", "language"])
@pytest.mark.parametrize("causal", [True, False])
def test_every_gradient_entry_on_a_tiny_model(task, causal):
    # the full per-entry check of every parameter (no random directions)
    kw = dict(n_tokens=3, n_in=2, n_out=3) if task == "vision" else dict(n_tokens=3, n_in=3, n_out=3)
    cfg, params, inputs, targets = _case(11, task, B=2, d=3, heads=2, d_h=2, depth=1, d_mlp=2,
                                         causal=causal, **kw)
    params = _perturb(np.random.default_rng(12), params)
    report = check_gradients(_fd_target(model, inputs, targets, cfg), params,
                             full_max=10**6)
    assert sum(report.n_compared.values()) == sum(v.size for v in params.values())


def test_fast_softmax_branch_for_huge_scores():
    # scores beyond |700|: the fast softmax subtracts the row maximum (and masks with -inf)
    cfg, params, inputs, targets = _case(5, "language", 6, 5, 5, 2, d=4, heads=2, d_h=2,
                                         depth=1, d_mlp=3)
    params = dict(params, **{"layer0.W_Q": 300 * params["layer0.W_Q"],
                             "layer0.W_K": 300 * params["layer0.W_K"]})
    loss_r, g_r = reference.loss_and_grads(params, inputs, targets, cfg)
    loss_f, g_f = model.loss_and_grads(params, inputs, targets, cfg)
    assert np.isfinite(loss_f) and np.isclose(loss_f, loss_r, rtol=1e-12)
    for key in params:
        np.testing.assert_allclose(g_f[key], g_r[key], rtol=1e-10,
                                   atol=1e-10 * np.max(np.abs(g_r[key])), err_msg=key)


def _reference_cross_entropy_forbidden(*args):
    raise AssertionError("the fast cross-entropy fell back to the reference")


@given(seed=seeds, N=st.integers(1, 5), C=st.integers(2, 7),
       scale=st.sampled_from([0.1, 3.0, 300.0, 1e4]))
def test_fast_cross_entropy_equals_reference(seed, N, C, scale):
    rng = np.random.default_rng(seed)
    z, y = scale * rng.standard_normal((N, 2, C)), rng.integers(0, C, (N, 2))
    z_before = z.copy()
    loss_r, dz_r = reference.cross_entropy(z, y)
    if exp_is_safe(z, z.size):                  # the fast path must run, not the reference
        with mock.patch.object(reference, "cross_entropy", _reference_cross_entropy_forbidden):
            loss_f, dz_f = model.cross_entropy(z, y)
    else:                                       # the fallback is the reference itself
        loss_f, dz_f = model.cross_entropy(z, y)
        assert loss_f == loss_r
        np.testing.assert_array_equal(dz_f, dz_r)
    np.testing.assert_array_equal(z, z_before)
    assert np.isfinite(loss_f) and dz_f.shape == z.shape
    # the two differ by the row maximum they subtract: rounding on the scale of the logits
    assert np.isclose(loss_f, loss_r, rtol=1e-12, atol=1e-14 * (1.0 + np.max(np.abs(z))))
    np.testing.assert_allclose(dz_f, dz_r, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("far", [-800.0, 800.0, 1e4])
def test_fast_cross_entropy_shifts_far_logits(far):
    # one row beyond the range of exp beside an ordinary one: the fast twin must take the
    # reference's shifted path (unshifted, the far row's exponentials overflow or vanish)
    z = np.array([[0.0, 1.0, -1.0], [far, far - 1.0, far + 0.5]])
    y = np.array([2, 0])
    loss_r, dz_r = reference.cross_entropy(z, y)
    loss_f, dz_f = model.cross_entropy(z, y)
    assert np.isfinite(loss_f) and loss_f == loss_r
    np.testing.assert_array_equal(dz_f, dz_r)


def test_fast_cross_entropy_many_rows_near_the_bound():
    # every row sum is finite, but N times one is not (N = 1e5 rows of logits just below
    # 700 - log 3): the gradient's 1 / (N sum) would be 0 without the N C bound
    N, C = 100_000, 3
    z = np.full((N, C), np.nextafter(700.0 - np.log(C), 0.0))
    y = np.zeros(N, dtype=int)
    loss_r, dz_r = reference.cross_entropy(z, y)
    loss_f, dz_f = model.cross_entropy(z, y)
    assert np.isclose(loss_f, loss_r, rtol=1e-12)
    np.testing.assert_allclose(dz_f, dz_r, rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=10)
@given(case=configs())
def test_inputs_and_params_not_mutated(impl, case):
    cfg, params, inputs, targets = _case(**case)
    before = ({k: v.copy() for k, v in params.items()}, inputs.copy(), targets.copy())
    IMPLS[impl].loss_and_grads(params, inputs, targets, cfg)
    for k in params:
        np.testing.assert_array_equal(params[k], before[0][k])
    np.testing.assert_array_equal(inputs, before[1])
    np.testing.assert_array_equal(targets, before[2])


# --------------------------------------------------------------------------------------------
# Properties of the mask and of the positions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=10)
@given(seed=seeds, n=st.integers(2, 6), t=st.integers(0, 4), causal=st.booleans())
def test_causal_model_ignores_later_tokens(impl, seed, n, t, causal):
    t = min(t, n - 2)
    cfg, params, inputs, _ = _case(seed, "language", n, 6, 6, 2, d=4, heads=2, d_h=2, depth=2,
                                   d_mlp=5, causal=causal)
    changed = inputs.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 6                # every later token differs
    z0 = IMPLS[impl].logits(params, inputs, cfg)
    z1 = IMPLS[impl].logits(params, changed, cfg)
    gap = np.max(np.abs(z0[:, :t + 1] - z1[:, :t + 1]))
    if causal:
        assert gap < 1e-12
    else:
        assert gap > 1e-6                                            # the test can fail


@pytest.mark.parametrize("impl", list(IMPLS))
@settings(max_examples=10)
@given(seed=seeds, n=st.integers(3, 6))
def test_vision_without_positions_is_invariant_to_patch_order(impl, seed, n):
    # self-attention is permutation-equivariant: with pos = 0 the class token's view of the
    # patches is a set
    cfg, params, inputs, _ = _case(seed, "vision", n, 3, 4, 3, d=4, heads=2, d_h=3, depth=2,
                                   d_mlp=5)
    perm = np.roll(np.arange(n - 1), 1)                             # never the identity
    flat = dict(params, pos=np.zeros_like(params["pos"]))
    np.testing.assert_allclose(IMPLS[impl].logits(flat, inputs[:, perm], cfg),
                               IMPLS[impl].logits(flat, inputs, cfg), rtol=1e-11, atol=1e-12)
    assert not np.allclose(IMPLS[impl].logits(params, inputs[:, perm], cfg),
                           IMPLS[impl].logits(params, inputs, cfg), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------
VISION = dict(task="vision", n_tokens=17, n_in=4, n_out=10)
LANGUAGE = dict(task="language", n_tokens=16, n_in=20, n_out=20)


@pytest.mark.parametrize("kw", [VISION, LANGUAGE], ids=["vision", "language"])
@pytest.mark.parametrize("scale", [0.03, 0.3, 2.0])
def test_init_scale_multiplies_everything_but_the_embedding(kw, scale):
    cfg = model.TransformerConfig(**kw, depth=2)
    base = model.init_params(np.random.default_rng(4), cfg)
    scaled = model.init_params(np.random.default_rng(4), cfg, scale=scale)
    assert list(scaled) == list(checks.param_shapes(cfg))
    np.testing.assert_array_equal(scaled["embed"], base["embed"])
    for key in base:
        if key != "embed":
            np.testing.assert_allclose(scaled[key], scale * base[key], rtol=1e-15, err_msg=key)
    assert np.all(scaled["layer1.ln1_g"] == scale) and np.all(scaled["layer0.b_1"] == 0)


@pytest.mark.parametrize("kw", [VISION, LANGUAGE], ids=["vision", "language"])
def test_default_init_has_the_documented_scales(kw):
    cfg = model.TransformerConfig(**kw, d=64, heads=4, d_h=16, depth=3, d_mlp=128)
    p = model.init_params(np.random.default_rng(0), cfg)
    want = {"W_Q": 1 / 8, "W_K": 1 / 8, "W_V": 1 / 8, "W_O": 1 / 8, "W_1": 1 / 8,
            "W_2": 1 / np.sqrt(128)}
    for l in range(3):
        for name, std in want.items():
            assert abs(np.std(p[f"layer{l}.{name}"]) / std - 1) < 0.05, name
        assert np.all(p[f"layer{l}.ln1_g"] == 1) and np.all(p[f"layer{l}.ln2_b"] == 0)
    assert abs(np.std(p["head"]) * 8 - 1) < 0.1
    assert abs(np.std(p["pos"]) - 1) < 0.05
    embed_std = 0.5 if cfg.task == "vision" else 1.0               # 1/sqrt(n_in) or a lookup
    assert abs(np.std(p["embed"]) / embed_std - 1) < 0.1
    assert ("cls" in p) == (cfg.task == "vision")


def test_init_params_refuses_bad_arguments():
    cfg = model.TransformerConfig(**VISION)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            model.init_params(np.random.default_rng(0), cfg, scale=bad)
    with pytest.raises(TypeError, match="rng"):
        model.init_params(0, cfg)
    with pytest.raises(TypeError, match="cfg"):
        model.init_params(np.random.default_rng(0), dict(VISION))


# --------------------------------------------------------------------------------------------
# Bad input is refused, naming the field
# --------------------------------------------------------------------------------------------
BAD_FIELDS = [("task", "audio"), ("task", 3), ("n_tokens", 1), ("n_tokens", 0),
              ("n_tokens", 2.0), ("n_in", 0), ("n_out", 0), ("n_out", True), ("d", 0),
              ("heads", 0), ("heads", -2), ("d_h", 0), ("depth", 0), ("d_mlp", 0),
              ("activation", "tanh"), ("activation", None), ("causal", "yes"), ("causal", 1)]


@pytest.mark.parametrize("field, bad", BAD_FIELDS, ids=[f"{f}={b!r}" for f, b in BAD_FIELDS])
def test_config_refuses_bad_fields_by_name(field, bad):
    with pytest.raises((ValueError, TypeError)) as info:
        model.TransformerConfig(**dict(VISION, **{field: bad}))
    assert field in str(info.value)


def test_config_defaults_and_causal_resolution():
    assert model.TransformerConfig(**VISION).causal is False
    assert model.TransformerConfig(**LANGUAGE).causal is True
    assert model.TransformerConfig(**VISION, causal=True).causal is True
    assert model.TransformerConfig(**LANGUAGE, causal=False).causal is False
    model.TransformerConfig(task="language", n_tokens=1, n_in=3, n_out=3)  # one token is fine
    model.TransformerConfig(**VISION, heads=3, d_h=5)                   # heads * d_h != d is fine
    with pytest.raises(ValueError, match="n_out"):
        model.TransformerConfig(task="language", n_tokens=4, n_in=5, n_out=6)
    cfg = model.TransformerConfig(**VISION)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d = 3


def _bad_batches():
    cfg_v = model.TransformerConfig(task="vision", n_tokens=3, n_in=2, n_out=3, d=4, heads=1,
                                    d_h=2, depth=1, d_mlp=3)
    cfg_l = model.TransformerConfig(task="language", n_tokens=3, n_in=4, n_out=4, d=4, heads=1,
                                    d_h=2, depth=1, d_mlp=3)
    rng = np.random.default_rng(0)
    pv, pl = model.init_params(rng, cfg_v), model.init_params(rng, cfg_l)
    xv, yv = rng.standard_normal((2, 2, 2)), np.array([0, 2])
    xl, yl = rng.integers(0, 4, (2, 3)), rng.integers(0, 4, (2, 3))
    nan_x = xv.copy()
    nan_x[0, 0, 0] = np.nan
    nan_p = dict(pv, **{"layer0.W_Q": np.full((1, 4, 2), np.inf)})
    return [
        ("inputs", cfg_v, pv, xv[:, :1], yv), ("inputs", cfg_v, pv, nan_x, yv),
        ("inputs", cfg_v, pv, np.zeros((0, 2, 2)), yv[:0]), ("inputs", cfg_v, pv, xv[0], yv),
        ("targets", cfg_v, pv, xv, np.array([0, 3])), ("targets", cfg_v, pv, xv, np.array([0])),
        ("targets", cfg_v, pv, xv, np.array([0.0, 1.0])), ("targets", cfg_v, pv, xv, -yv - 1),
        ("inputs", cfg_l, pl, xl + 4, yl), ("inputs", cfg_l, pl, xl - 4, yl),
        ("inputs", cfg_l, pl, xl.astype(float), yl), ("inputs", cfg_l, pl, xl[:, :2], yl),
        ("targets", cfg_l, pl, xl, yl[:, :2]), ("targets", cfg_l, pl, xl, yl + 4),
        ("layer0.W_Q", cfg_v, nan_p, xv, yv),
        ("pos", cfg_v, dict(pv, pos=np.zeros((4, 4))), xv, yv),
        ("cls", cfg_v, {k: v for k, v in pv.items() if k != "cls"}, xv, yv),
        ("params", cfg_v, list(pv.values()), xv, yv),
        ("cfg", dict(VISION), pv, xv, yv),
    ]


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("i", range(len(_bad_batches())))
def test_bad_batches_are_refused_by_name(impl, i):
    name, cfg, params, inputs, targets = _bad_batches()[i]
    with pytest.raises((ValueError, TypeError)) as info:
        IMPLS[impl].loss_and_grads(params, inputs, targets, cfg)
    assert name in str(info.value), str(info.value)
