"""Input checks and the ways a training run can stop early, shared by every paper.

Bad input must fail early with a ``ValueError`` that names the parameter and the accepted
range, never as a NaN or a traceback from deep inside NumPy. These helpers keep those messages
uniform. A training loop whose loss turns non-finite stops with :class:`DivergenceError`; one
stopped by Ctrl-C stops with :class:`Interrupted`. Both are :class:`TrainingStopped` and carry
the step, the learning rate and everything computed up to that step.
"""
from __future__ import annotations

import numbers

import numpy as np


class TrainingStopped(Exception):
    """A training loop stopped before its end.

    Attributes
    ----------
    step : int
        The step at which it stopped (0 = before any update).
    lr : float
        The learning rate in use.
    partial : object
        What the loop had computed before ``step``: its history and last finite parameters,
        in the same form the loop returns on success.
    """

    def __init__(self, message: str, *, step: int, lr: float, partial=None):
        super().__init__(message)
        self.step = step
        self.lr = lr
        self.partial = partial


class DivergenceError(TrainingStopped, FloatingPointError):
    """Training produced a non-finite loss or weights (reduce the learning rate)."""


class Interrupted(TrainingStopped):
    """Training was stopped by Ctrl-C (``KeyboardInterrupt``); what was computed is kept."""

    def __init__(self, *, step: int, lr: float = float("nan"), partial=None):
        super().__init__(f"interrupted by Ctrl-C at step {step}", step=step, lr=lr,
                         partial=partial)


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer in ``[low, high]``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in {'[' if low is not None else '('}"
                         f"{low if low is not None else '-inf'}, "
                         f"{high if high is not None else 'inf'}{']' if high is not None else ')'}"
                         f", got {value}")
    return value


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite ``float`` inside the stated interval, else raise.

    ``low_open``/``high_open`` exclude the end points, e.g. ``low=0, low_open=True`` means > 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    # An unbounded side is open: the value must be finite, so inf itself is never accepted.
    lo_br = "(" if low_open or low is None else "["
    hi_br = ")" if high_open or high is None else "]"
    interval = (f"{lo_br}{low if low is not None else '-inf'}, "
                f"{high if high is not None else 'inf'}{hi_br}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite and in {interval}, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_array(name: str, value, *, ndim: int | tuple[int, ...] | None = None,
                shape: tuple | None = None) -> np.ndarray:
    """Return ``value`` as a finite float64 array of the stated rank/shape, else raise.

    ``shape`` may contain ``None`` for axes of any length.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers ({exc})") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(f"{name} must have ndim in {allowed}, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def check_types(config) -> None:
    """Check every field of a dataclass ``config`` against its annotation.

    ``int``, ``float``, ``bool``, ``str`` and ``tuple[X, ...]`` fields are checked (a list is
    accepted for a tuple); a mismatch raises ``TypeError`` naming the field. Ranges are left to
    the config's own ``__post_init__``.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        tp, value = hints[f.name], getattr(config, f.name)
        if typing.get_origin(tp) is tuple:
            if not isinstance(value, (tuple, list)):
                raise TypeError(f"{f.name} must be a sequence, got {type(value).__name__} {value!r}")
            item = typing.get_args(tp)[0]
            for i, v in enumerate(value):
                _check_type(f"{f.name}[{i}]", v, item)
        else:
            _check_type(f.name, value, tp)


def _check_type(name: str, value, tp) -> None:
    if tp is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    elif tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    elif tp is str:
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise TypeError(f"{name} must be of type {tp.__name__}, got {type(value).__name__} {value!r}")
