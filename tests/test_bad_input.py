"""Every public config and model entry point turns invalid input into a ValueError or TypeError
that names the parameter: never another exception, a hang, or a silent NaN."""
import dataclasses
import importlib
import typing

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minitheory.demos.__main__ import DEMOS
from minitheory.lowrank_sparse import analysis as ls_analysis, data as ls_data
from minitheory.lowrank_sparse import model as ls_model, training as ls_training
from minitheory.rank_growth import data as rg_data, model as rg_model
from minitheory.sparse_bigrams import data as sb_data, model as sb_model
from minitheory.sparse_bigrams import population as sb_pop, training as sb_training

NAN = float("nan")
CONFIGS = ([importlib.import_module(f"minitheory.demos.{name}").Config for name in DEMOS]
           + [ls_data.DataConfig, ls_training.ModelConfig, ls_training.SGDConfig,
              sb_training.Method, sb_pop.Schedule])
INVALID = {int: [-1, -10**9, 1.5, "3", None, True, NAN],
           float: [NAN, -1.0, "x", None, True, [1.0]],
           bool: ["yes", 1, None, 0.0],
           str: ["bogus", 3, None],
           tuple: [(), (NAN,), ("x",), None, 5]}


def _kind(tp):
    return tuple if typing.get_origin(tp) is tuple else tp


CASES = [(cls, f.name, bad) for cls in CONFIGS
         for f in dataclasses.fields(cls)
         for bad in INVALID[_kind(typing.get_type_hints(cls)[f.name])]]


@pytest.mark.parametrize("cls, name, bad", CASES,
                         ids=[f"{c.__module__.split('.')[-1]}.{c.__name__}.{n}={b!r}" for c, n, b in CASES])
def test_every_config_field_rejects_invalid_values_by_name(cls, name, bad):
    # exhaustive: every field of every config with every invalid value of its type
    with pytest.raises((ValueError, TypeError)) as info:
        cls(**{name: bad})
    assert name in str(info.value), f"{cls.__module__}.{cls.__name__}({name}={bad!r}): {info.value}"


def test_every_config_has_fields_and_valid_defaults():
    assert len(CASES) > 150
    for cls in CONFIGS:
        cls()                                   # the defaults themselves are valid


# --------------------------------------------------------------------------------------------
# Model entry points: corrupt one argument at a time
# --------------------------------------------------------------------------------------------
def _rg_diag():
    rng = np.random.default_rng(0)
    return rg_model.loss_and_grads, {"params": {k: rng.standard_normal(3) for k in rg_model.DIAG_KEYS},
                                     "X": rng.standard_normal((2, 4, 3)),
                                     "Y": rng.standard_normal((2, 4, 3))}


def _rg_full():
    rng = np.random.default_rng(0)
    return rg_model.full_loss_and_grads, {
        "params": {"W_K": rng.standard_normal((3, 2)), "W_Q": rng.standard_normal((3, 2)),
                   "W_V": rng.standard_normal((3, 2)), "W_O": rng.standard_normal((4, 2))},
        "X": rng.standard_normal((2, 4, 3)), "Y": rng.standard_normal((2, 4, 4))}


def _ls():
    rng = np.random.default_rng(0)
    p = ls_training.init_params(rng, ls_data.DataConfig(d=4, M=3, L=5, n_rel=2, n_conf=1),
                                ls_training.ModelConfig(m=6))
    return ls_model.loss_and_grads, {"params": p, "X": rng.standard_normal((3, 5, 4)),
                                     "y": np.array([1.0, -1.0, 1.0])}


def _sb(softmax=False):
    rng = np.random.default_rng(0)
    second = "W" if softmax else "A"
    fn = sb_model.softmax_loss_and_grads if softmax else sb_model.loss_and_grads
    return fn, {"params": {"V": rng.standard_normal((3, 3)), second: rng.standard_normal((4, 3))},
                "xs": rng.integers(0, 3, (5, 4)), "k": rng.integers(0, 3, 5),
                "xo": rng.integers(0, 3, 5)}


ENTRY_POINTS = {"rank_growth diagonal": _rg_diag, "rank_growth full": _rg_full,
                "lowrank_sparse": _ls, "sparse_bigrams linear": _sb,
                "sparse_bigrams softmax": lambda: _sb(True)}


def _corrupt(value, how, rng):
    arr = np.asarray(value)
    if how == "nan":
        if arr.dtype.kind in "iu":
            out = arr.astype(float)
        else:
            out = arr.astype(float).copy()
        out.flat[rng.integers(out.size)] = NAN
        return out
    if how == "extra axis":
        return arr[..., None]
    if how == "drop axis":
        return arr[..., 0] if arr.ndim > 1 else arr.reshape(1, -1)[:, :0]
    if how == "string":
        return np.full(arr.shape, "x")
    return None


@settings(max_examples=200)
@given(entry=st.sampled_from(sorted(ENTRY_POINTS)), data=st.data(),
       how=st.sampled_from(["nan", "extra axis", "drop axis", "string", "none"]), seed=st.integers(0, 100))
def test_entry_points_name_the_bad_argument(entry, data, how, seed):
    fn, kwargs = ENTRY_POINTS[entry]()
    rng = np.random.default_rng(seed)
    targets = [("params", k) for k in kwargs["params"]] + [(k, None) for k in kwargs if k != "params"]
    arg, key = data.draw(st.sampled_from(targets))
    if key is None:
        kwargs[arg] = _corrupt(kwargs[arg], how, rng)
        name = arg
    else:
        kwargs["params"] = dict(kwargs["params"], **{key: _corrupt(kwargs["params"][key], how, rng)})
        name = key
    with pytest.raises((ValueError, TypeError)) as info:
        with np.errstate(all="raise"):                  # a silent NaN would raise elsewhere
            fn(*kwargs.values())
    assert name in str(info.value), f"{entry}: corrupting {name} by {how}: {info.value}"


@pytest.mark.parametrize("call, name", [
    (lambda: rg_data.init_diagonal(np.random.default_rng(0), 4, [0.5, NAN]), "alphas"),
    (lambda: rg_data.init_diagonal(np.random.default_rng(0), -1, [0.5]), "d"),
    (lambda: rg_data.gaussian_inputs(np.random.default_rng(0), 0, 8, 4), "n_seq"),
    (lambda: sb_data.make_instance(np.random.default_rng(0), 5, 3, 4), "Q"),
    (lambda: sb_data.make_instance(np.random.default_rng(0), 1.5, 3, 1), "N"),
    (lambda: sb_data.sample(np.random.default_rng(0), sb_data.make_instance(
        np.random.default_rng(0), 3, 4, 2), 0), "B"),
    (lambda: ls_analysis.prune_rows(np.ones((1, 4, 2)), NAN, "magnitude"), "rate"),
    (lambda: ls_analysis.truncate(np.ones((3, 3)), -1), "r"),
    (lambda: ls_data.sample(np.random.default_rng(0), -5, ls_data.DataConfig()), "n"),
    (lambda: sb_pop.make_large_instance(np.random.default_rng(0), 1, 10, 1), "N"),
])
def test_other_public_functions_name_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert name in str(info.value)
