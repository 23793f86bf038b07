r"""A small gradient checker: hand-written gradients against central differences.

Read this file to see how every gradient in minitheory is verified.

For a scalar function :math:`f` of named float64 arrays and its claimed gradient :math:`g`:

* **full check** (small arrays): every entry is compared with the central difference along
  :math:`e_i`, refined by one Richardson step,

  .. math::
     D(h) = \frac{f(x + h e_i) - f(x - h e_i)}{2h}, \qquad
     \hat g_i = \frac{4 D(h/2) - D(h)}{3},

  whose error is :math:`O(h^4 f^{(5)}) + O(u |f| / h)` with :math:`u \approx 1.1 \cdot 10^{-16}`
  (float64 rounding). Plain central differences at :math:`h = 10^{-6}` have a rounding error of
  :math:`\sim 10^{-10}|f|`, which for a loss of size 100 already exceeds ``atol``; with the
  Richardson step :math:`h = 10^{-4}` keeps both terms near :math:`10^{-12}|f|`.
* **random-direction check** (large arrays): for random unit directions :math:`v`, compare
  :math:`\langle g, v\rangle` with the same difference quotient along :math:`v`.
  One direction tests every entry at once; a wrong entry survives only by cancellation.

An entry passes when

.. math:: |g - \hat g| \le \mathrm{atol} + \mathrm{rtol}\max(|g|, |\hat g|) + 24\,u\,F/h,

the JAX/PyTorch convention plus the rounding bound of the reference itself: each of the four
function values carries a rounding error of at most :math:`\sim 8uF`
(:math:`F = \max |f|` over them; the factor covers the accumulation in a sum) and the Richardson
combination multiplies it by :math:`3/h`. For losses of order one the term is ~3e-11, below
``atol``; it matters only when the loss is large next to the gradient entry (a loss of 800 and
an entry of 4e-5 put the reference's own error at ~5e-9), where no tolerance on
:math:`g` alone could be met honestly. Functions with kinks (ReLU, hinge) pass ``pattern``: a function of
the parameters returning the activation pattern; a perturbation that changes the pattern crosses a
kink, where the derivative does not exist, and is not compared (the number skipped is reported).

A failure raises :class:`GradcheckError` naming the parameter, the worst entry, both values and
the tolerance. A check that compares nothing (every perturbation crossed a kink, or no gradient
was returned) also raises; one where every compared gradient and difference quotient is zero
(a hinge model at zero loss) passes with a :class:`GradcheckWarning`, since a wrong formula
would have passed there too. Complex arithmetic and float32 are refused: checks are float64 only.

A student's call, for a model ``loss_and_grads(params, X, Y) -> (loss, grads)``::

    import numpy as np
    from minitheory.gradcheck import check_gradients
    from minitheory.rank_growth import data, model

    X, Y = data.diagonal_toy(seed=0, n_seq=8, n_tokens=4, d=4)
    params = data.init_diagonal(np.random.default_rng(1), 4, [0.5])     # a run axis of 1
    check_gradients(contract_runs(model.loss_and_grads, [0.7]), params, X, Y)

The extra positional arguments (``X, Y``) are passed through to ``loss_and_grads`` and
``pattern``. :func:`contract_runs` turns a per-run loss ``(R,)`` into a scalar with a random
cotangent (never all ones, which would hide a gradient that mixes the runs).

Kinks: the ReLU/hinge model provides
:func:`minitheory.lowrank_sparse.model.relu_pattern` ``(params, X, y)``, the pattern of
pre-activations ``P > 0`` and margins ``y F < 1``; pass it as
``pattern=model.relu_pattern`` and the perturbations that flip an entry of it are skipped.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

LossAndGrads = Callable[..., tuple]

#: Seed of the generator used for random directions when no ``rng`` is given.
DEFAULT_SEED = 0


class GradcheckError(AssertionError):
    """A hand-written gradient disagrees with finite differences (or nothing was compared)."""


class GradcheckWarning(UserWarning):
    """The check passed but could not have failed: every compared value was zero."""


@dataclass
class GradcheckReport:
    """What was checked: per key, the worst absolute error, and how many comparisons."""

    max_abs_error: dict = field(default_factory=dict)
    n_compared: dict = field(default_factory=dict)
    n_skipped: dict = field(default_factory=dict)
    #: keys whose every compared gradient and difference quotient was 0 (within ``atol``)
    only_zeros: list = field(default_factory=list)


def _scalar(value) -> float:
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"the checked function must return a scalar loss, got shape {arr.shape}; "
                         "for a per-run loss wrap it as contract_runs(loss_and_grads, cotangent)")
    return float(arr)


def _split(out):
    """``(loss, grads)`` from what the checked function returned, or a TypeError saying why."""
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise TypeError("loss_and_grads must return (loss, grads) with grads a dict of arrays "
                        f"keyed like params, got {type(out).__name__}")
    return out


def contract_runs(loss_and_grads: LossAndGrads, cotangent) -> LossAndGrads:
    r"""A scalar-loss function for :func:`check_gradients` from one with a run axis.

    ``loss_and_grads(params, *args)`` returns per-run losses :math:`L_r` ``(R,)`` and gradients
    whose leading axis is the run; the result returns :math:`\sum_r c_r L_r` and each run's
    gradients times :math:`c_r` (runs are independent, so that is the exact gradient). Use a
    random cotangent ``c`` ``(R,)``, e.g. ``rng.uniform(0.5, 1.5, R)``: with all ones a gradient
    that leaks between runs or drops a run's weight could still pass.
    """
    c = np.asarray(cotangent, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"cotangent must have shape (R,), got {c.shape}")

    def contracted(params, *args):
        loss, grads = _split(loss_and_grads(params, *args))
        loss = np.asarray(loss, dtype=np.float64)
        if loss.shape != c.shape:
            raise ValueError(f"the per-run loss has shape {loss.shape}, the cotangent {c.shape}")
        return float(c @ loss), {k: c.reshape((-1,) + (1,) * (np.ndim(g) - 1)) * np.asarray(g)
                                 for k, g in grads.items()}
    return contracted


def _shifted(params: Mapping, key: str, delta: np.ndarray) -> dict:
    out = dict(params)
    out[key] = params[key] + delta
    return out


def check_gradients(loss_and_grads: LossAndGrads, params: Mapping[str, np.ndarray], *args,
                    keys=None, eps: float = 1e-4, rtol: float = 1e-6, atol: float = 1e-9,
                    full_max: int = 64, n_directions: int = 4,
                    rng: np.random.Generator | None = None,
                    pattern: Callable[..., np.ndarray] | None = None) -> GradcheckReport:
    """Check ``loss_and_grads(params, *args) -> (loss, grads)`` against central differences.

    Parameters
    ----------
    loss_and_grads : callable
        Maps a dict of float64 arrays (and ``args``) to ``(scalar loss, dict of gradients)``.
        A per-run loss ``(R,)`` goes through :func:`contract_runs` first.
    params : dict of float64 arrays
        The point of the check. Not modified.
    *args
        Passed unchanged after ``params`` to ``loss_and_grads`` and ``pattern`` (the data:
        ``check_gradients(model.loss_and_grads, params, X, Y)``). Never perturbed.
    keys : iterable of str, optional
        Which gradients to check (default: every key of the returned ``grads``). A key of
        ``params`` that is not in ``grads`` is treated as fixed and never perturbed.
    eps, rtol, atol : float
        Largest step ``h`` of the difference quotients, and the tolerances (module docstring).
    full_max : int
        Arrays with at most this many entries get the full per-entry check; larger ones get
        ``n_directions`` random-direction checks drawn from ``rng``.
    rng : numpy.random.Generator, optional
        Draws the random directions of arrays larger than ``full_max``; default
        ``numpy.random.default_rng(DEFAULT_SEED)`` (seed 0), so a check repeats exactly.
    pattern : callable, optional
        ``pattern(params, *args)`` returns an array (activation pattern), for example
        :func:`minitheory.lowrank_sparse.model.relu_pattern`. Perturbations that change it
        cross a kink and are skipped (counted in ``n_skipped``).

    Returns
    -------
    GradcheckReport

    Raises
    ------
    GradcheckError
        If any compared entry or direction is outside the tolerance, or if nothing at all was
        compared.

    Warns
    -----
    GradcheckWarning
        If every compared gradient and difference quotient was zero (within ``atol``): such a
        point cannot tell a right gradient from a wrong one; check at another point.
    """
    params = {k: np.asarray(v) for k, v in params.items()}
    for k, v in params.items():
        if v.dtype != np.float64:
            raise ValueError(f"params[{k!r}] must be float64 for a gradient check, got {v.dtype}")
    _, grads = _split(loss_and_grads(params, *args))
    keys = list(grads) if keys is None else list(keys)
    if not keys:
        raise GradcheckError("nothing to compare: loss_and_grads returned no gradients")
    missing = [k for k in keys if k not in grads or k not in params]
    if missing:
        raise GradcheckError(f"keys {missing} are not in both params and the returned grads")
    if rng is None:
        rng = np.random.default_rng(DEFAULT_SEED)
    p0 = None if pattern is None else pattern(params, *args)
    f = lambda p: _scalar(_split(loss_and_grads(p, *args))[0])  # noqa: E731
    same = lambda q: pattern is None or np.array_equal(pattern(q, *args), p0)  # noqa: E731
    report = GradcheckReport()
    for key in keys:
        x, g = params[key], np.asarray(grads[key], dtype=np.float64)
        if g.shape != x.shape:
            raise GradcheckError(f"grads[{key!r}] has shape {g.shape}, params[{key!r}] has {x.shape}")
        if x.size <= full_max:
            directions = [(idx, np.zeros_like(x)) for idx in np.ndindex(x.shape)]
            for idx, d in directions:
                d[idx] = 1.0
        else:
            directions = []
            for j in range(n_directions):
                v = rng.standard_normal(x.shape)
                directions.append((f"direction {j}", v / np.linalg.norm(v)))
        worst = (-np.inf, None, 0.0, 0.0, 0.0)
        compared = skipped = 0
        largest = 0.0                                   # the largest |value| compared
        for label, d in directions:
            points = [_shifted(params, key, t * eps * d) for t in (1.0, -1.0, 0.5, -0.5)]
            if not all(same(q) for q in points):
                skipped += 1
                continue
            fp, fm, fp2, fm2 = (f(q) for q in points)
            d_h, d_h2 = (fp - fm) / (2 * eps), (fp2 - fm2) / eps
            numeric = (4 * d_h2 - d_h) / 3                      # Richardson: O(eps^4)
            analytic = float(np.sum(g * d))
            err = abs(analytic - numeric)
            rounding = 24 * np.finfo(np.float64).eps / 2 * max(map(abs, (fp, fm, fp2, fm2))) / eps
            tol = atol + rtol * max(abs(analytic), abs(numeric)) + rounding
            compared += 1
            largest = max(largest, abs(analytic), abs(numeric))
            if err - tol > worst[0]:
                worst = (err - tol, label, analytic, numeric, tol)
        report.n_compared[key], report.n_skipped[key] = compared, skipped
        if compared:
            report.max_abs_error[key] = worst[0] + worst[4]
            if largest <= atol:
                report.only_zeros.append(key)
        if worst[0] > 0:
            _, label, analytic, numeric, tol = worst
            raise GradcheckError(
                f"gradient of {key!r} at {label}: analytic {analytic:.12g}, numeric "
                f"{numeric:.12g}, |diff| {abs(analytic - numeric):.3g} > tol {tol:.3g} "
                f"(eps={eps}, rtol={rtol}, atol={atol}; {compared} compared, {skipped} skipped)")
    if not sum(report.n_compared.values()):
        raise GradcheckError(
            f"nothing was compared: all {sum(report.n_skipped.values())} perturbations of "
            f"{keys} crossed a kink of pattern; check at a point farther from the kinks or "
            f"with a smaller eps (now {eps})")
    if {k for k, n in report.n_compared.items() if n} <= set(report.only_zeros):
        warnings.warn(f"every compared gradient and difference quotient of {keys} is zero "
                      f"(|value| <= atol = {atol}): this point cannot tell a right gradient from "
                      f"a wrong one; check at a point where the loss is not flat",
                      GradcheckWarning, stacklevel=2)
    return report
