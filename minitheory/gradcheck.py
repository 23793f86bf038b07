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
the tolerance. Complex arithmetic and float32 are refused: checks are float64 only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

LossAndGrads = Callable[[dict], tuple]


class GradcheckError(AssertionError):
    """A hand-written gradient disagrees with finite differences."""


@dataclass
class GradcheckReport:
    """What was checked: per key, the worst absolute error, and how many comparisons."""

    max_abs_error: dict = field(default_factory=dict)
    n_compared: dict = field(default_factory=dict)
    n_skipped: dict = field(default_factory=dict)


def _scalar(value) -> float:
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"the checked function must return a scalar loss, got shape {arr.shape}; "
                         "contract array outputs with a random cotangent first")
    return float(arr)


def _shifted(params: Mapping, key: str, delta: np.ndarray) -> dict:
    out = dict(params)
    out[key] = params[key] + delta
    return out


def _same_pattern(pattern, p0, params) -> bool:
    return pattern is None or np.array_equal(pattern(params), p0)


def check_gradients(loss_and_grads: LossAndGrads, params: Mapping[str, np.ndarray], *,
                    keys=None, eps: float = 1e-4, rtol: float = 1e-6, atol: float = 1e-9,
                    full_max: int = 64, n_directions: int = 4,
                    rng: np.random.Generator | None = None,
                    pattern: Callable[[dict], np.ndarray] | None = None) -> GradcheckReport:
    """Check ``loss_and_grads(params) -> (loss, grads)`` against central differences.

    Parameters
    ----------
    loss_and_grads : callable
        Maps a dict of float64 arrays to ``(scalar loss, dict of gradients)``.
    params : dict of float64 arrays
        The point of the check. Not modified.
    keys : iterable of str, optional
        Which gradients to check (default: every key of the returned ``grads``). A key of
        ``params`` that is not in ``grads`` is treated as fixed and never perturbed.
    eps, rtol, atol : float
        Largest step ``h`` of the difference quotients, and the tolerances (module docstring).
    full_max : int
        Arrays with at most this many entries get the full per-entry check; larger ones get
        ``n_directions`` random-direction checks drawn from ``rng``.
    rng : numpy.random.Generator, optional
        Needed only when some array is larger than ``full_max``.
    pattern : callable, optional
        ``pattern(params)`` returns an array (activation pattern). Perturbations that change it
        are skipped.

    Returns
    -------
    GradcheckReport

    Raises
    ------
    GradcheckError
        If any compared entry or direction is outside the tolerance.
    """
    params = {k: np.asarray(v) for k, v in params.items()}
    for k, v in params.items():
        if v.dtype != np.float64:
            raise ValueError(f"params[{k!r}] must be float64 for a gradient check, got {v.dtype}")
    _, grads = loss_and_grads(params)
    keys = list(grads) if keys is None else list(keys)
    p0 = None if pattern is None else pattern(params)
    f = lambda p: _scalar(loss_and_grads(p)[0])  # noqa: E731
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
            if rng is None:
                raise ValueError(f"params[{key!r}] has {x.size} > full_max entries: pass rng")
            directions = []
            for j in range(n_directions):
                v = rng.standard_normal(x.shape)
                directions.append((f"direction {j}", v / np.linalg.norm(v)))
        worst = (-np.inf, None, 0.0, 0.0, 0.0)
        compared = skipped = 0
        for label, d in directions:
            points = [_shifted(params, key, t * eps * d) for t in (1.0, -1.0, 0.5, -0.5)]
            if not all(_same_pattern(pattern, p0, q) for q in points):
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
            if err - tol > worst[0]:
                worst = (err - tol, label, analytic, numeric, tol)
        report.n_compared[key], report.n_skipped[key] = compared, skipped
        if compared:
            report.max_abs_error[key] = worst[0] + worst[4]
        if worst[0] > 0:
            _, label, analytic, numeric, tol = worst
            raise GradcheckError(
                f"gradient of {key!r} at {label}: analytic {analytic:.12g}, numeric "
                f"{numeric:.12g}, |diff| {abs(analytic - numeric):.3g} > tol {tol:.3g} "
                f"(eps={eps}, rtol={rtol}, atol={atol}; {compared} compared, {skipped} skipped)")
    return report
