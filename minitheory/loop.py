r"""One training loop for every trainer in the package; each paper supplies only its update rule.

:func:`run` owns what every trainer shares: the step loop, logging every ``log_every`` steps
and at the last one, the progress callback, an optional early stop, the non-finite check and
Ctrl-C. A trainer gives it an update rule ``update(state, step) -> (new_state, out)`` and what
to log, ``observe(step, state, new_state, out) -> {name: array}``.

.. code-block:: text

    for step = 0, 1, ..., steps:
        last = step == steps or stop(step, state)
        if not last:
            new_state, out = update(state, step)
            if anything non-finite: raise DivergenceError(step, partial=(state, history))
        if last or step % log_every == 0:
            history += {"step": step, **observe(step, state, new_state, out)}   # None, None if last
        if last: return state, history
        progress(step + 1, steps);  state = new_state

**Error contract** (the same for every trainer built on this loop). A run either returns
normally or raises a :class:`~minitheory.validation.TrainingStopped`:

- :class:`~minitheory.validation.DivergenceError` when the update at ``step`` produced a
  non-finite value; the message names the step, what was non-finite and the learning rate;
- :class:`~minitheory.validation.Interrupted` on Ctrl-C during ``step``.

Both carry ``.step``, ``.lr`` and ``.partial = (state, history)``: ``state`` is the input of
``step``, the last state that passed the check (for an update written in place, whatever it
left), and ``history`` holds the steps logged before ``step``, every array of the same length.
A trainer that returns something else re-raises with ``.partial`` in the form it returns on
success. :func:`outcome` turns the exception back into a value for callers that report, not
raise (the demos).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .validation import DivergenceError, Interrupted, TrainingStopped, check_int

Update = Callable[[object, int], tuple]
Observe = Callable[[int, object, object, object], dict]


def run(update: Update, state, *, steps: int, observe: Observe, lr, lr_name: str = "lr",
        log_every: int = 1, progress: Callable[[int, int], None] | None = None,
        stop: Callable[[int, object], bool] | None = None,
        check: Callable[[object, object], str] | None = None, label: str = "training"):
    """Run ``steps`` updates of ``update`` from ``state`` (see the module docstring).

    Parameters
    ----------
    update : ``(state, step) -> (new_state, out)``, one step of the rule. ``out`` holds what the
        step computed on the way (loss, gradients, ...) for ``observe``. It may update in place
        only if ``out`` carries everything ``observe`` needs about the old state.
    state : the state at step 0 (any object; typically a dict of arrays).
    steps : number of updates, >= 0.
    observe : ``(step, state, new_state, out) -> dict of arrays``, the metrics of ``state`` at a
        logged step. ``new_state`` and ``out`` are ``None`` at the last step (no update follows).
    lr, lr_name : the learning rate (a float, or ``step -> float`` for a schedule) and its name,
        both only reported in :class:`DivergenceError`.
    log_every : log steps ``0, log_every, 2 log_every, ...`` and the last step.
    progress : optional ``progress(done, steps)``, called after each update (``done`` = 1 .. steps).
    stop : optional ``stop(step, state) -> bool``, asked before each update; ``True`` makes this
        step the last one (logged; the run returns normally).
    check : optional ``(new_state, out) -> str``: what is non-finite, ``""`` if nothing is.
        Default: every array in ``new_state`` and ``out`` (both dicts of arrays) is checked.
    label : names the run in the error message.

    Returns
    -------
    state : the state at the last step.
    history : ``{"step": (K,), name: (K, ...) for each name observe returns}``.

    Raises
    ------
    DivergenceError, Interrupted
        With ``.partial = (state, history)``, see the module docstring.
    """
    steps = check_int("steps", steps, low=0)
    log_every = check_int("log_every", log_every, low=1)
    check = nonfinite if check is None else check
    logs: dict[str, list] = {"step": []}
    step = 0
    try:
        # A diverging run overflows on its way to inf; the check below reports it, so NumPy's
        # warnings would only be noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for step in range(steps + 1):
                last = step == steps or (stop is not None and bool(stop(step, state)))
                new = out = None
                if not last:
                    new, out = update(state, step)
                    bad = check(new, out)
                    if bad:
                        rate = lr(step) if callable(lr) else lr
                        raise DivergenceError(
                            f"{label} diverged at step {step}: {bad} became non-finite with "
                            f"learning rate {lr_name}={float(rate)!r}; reduce {lr_name}",
                            step=step, lr=float(rate), partial=(state, stacked(logs)))
                if last or step % log_every == 0:
                    for key, value in observe(step, state, new, out).items():
                        logs.setdefault(key, []).append(value)
                    logs["step"].append(step)        # last: a Ctrl-C before it drops the step
                if last:
                    break
                if progress is not None:
                    progress(step + 1, steps)
                state = new
    except KeyboardInterrupt:
        rate = lr(step) if callable(lr) else lr
        raise Interrupted(step=step, lr=float(rate), partial=(state, stacked(logs))) from None
    return state, stacked(logs)


def nonfinite(new_state: dict, out: dict) -> str:
    """The keys of ``new_state`` and ``out`` (dicts of arrays) holding a non-finite value, as one
    string (``""`` if none): the default divergence check of :func:`run`."""
    bad = [key for part in (new_state, out) for key, v in part.items()
           if not np.all(np.isfinite(v))]
    return ", ".join(dict.fromkeys(bad))


def stacked(logs: dict) -> dict:
    """The logged lists as arrays ``(K, ...)``, cut to the shortest (a Ctrl-C can land between
    two appends of one logged step), so every array has the same length."""
    n = min(len(v) for v in logs.values())
    return {key: np.asarray(v[:n]) for key, v in logs.items()}


def outcome(train: Callable, *args, **kwargs):
    """Call ``train(*args, **kwargs)``; return ``(result, None)``, or ``(exc.partial, exc)`` when
    it raises :class:`TrainingStopped`: for callers that report a stopped run instead of raising."""
    try:
        return train(*args, **kwargs), None
    except TrainingStopped as exc:
        return exc.partial, exc
