r"""The small-initialization limit as an incremental learning algorithm (paper Sec. 4, "Algorithm 1").

Work in the product space :math:`w = (a, b) \in \mathbb R^p`, :math:`p = 2d`, with
:math:`\tilde L(w)` the loss of the diagonal head as a function of the products and
:math:`g = -\nabla\tilde L(w)`. Each factor pair :math:`(u_i, v_i)` sits at log-scale
:math:`|u_i + v_i| \approx \alpha^{1 - s_i}`, :math:`|u_i - v_i| \approx \alpha^{1 + s_i}` with the
exponent :math:`s \in [-1, 1]^p`; coordinate :math:`i` is active (:math:`w_i \ne 0`) only once
:math:`|s_i| = 1`. In rescaled time :math:`\bar t = t / \log(1/\alpha)`, as :math:`\alpha \to 0`:

(A) every inactive coordinate drifts, :math:`ds/d\bar t = g`; the next to activate is

.. math:: i^* = \arg\min_{i \in C} \tau_i, \qquad \tau_i = \frac{\mathrm{sign}(g_i) - s_i}{g_i},
   \qquad C = \{i : w_i = 0,\ g_i \ne 0\};

(B) the active coordinates then train to stationarity instantaneously, following
:math:`d\varphi/dt = -2|\varphi| \odot \nabla\tilde L(\varphi)` (the :math:`\alpha \to 0` limit of
:math:`dw_i/dt = -\sqrt{4 w_i^2 + c_i^2}\,\partial_i\tilde L`) from :math:`\varphi = w + \varepsilon\,
\mathrm{sign}(g_{i^*}) e_{i^*}`.

The output is the staircase the loss curves approach: stage times
:math:`0 < \bar t_1 < \bar t_2 < \dots`, plateau points :math:`w^k` and plateau losses
:math:`\tilde L(w^k)`. Since one coordinate joins per stage, the rank of
:math:`\Delta W_K W_Q^\top = \mathrm{diag}(a)` or :math:`\Delta W_V W_O^\top = \mathrm{diag}(b)` grows
by at most one per stage.

Assumptions (paper 4.4, 4.5 and non-degeneracy) are recorded, not assumed silently: the margin
between the smallest and second-smallest :math:`\tau` (unique argmin) and the stationarity
reached in (B) are part of the result.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..validation import check_array, check_float, check_int
from .checks import check_XY as _check_XY
from .model import ab_loss_and_grads_unchecked, diagonal_data


@dataclass(frozen=True)
class IncrementalResult:
    r"""Stages of Algorithm 1; ``K`` stages, ``p = 2d`` coordinates ordered ``(a_0..a_{d-1}, b_0..)``.

    Attributes
    ----------
    times : ``(K,)`` rescaled times :math:`\bar t_k` of the jumps, increasing.
    coordinate : ``(K,)`` index into ``w`` of the coordinate activated at stage ``k``.
    plateau_w : ``(K, p)`` plateau points :math:`w^k` (reached just after :math:`\bar t_k`).
    plateau_loss : ``(K,)`` :math:`\tilde L(w^k)`.
    loss0 : :math:`\tilde L(0)`, the loss before the first jump.
    margin : ``(K,)`` gap between the two smallest :math:`\tau` at each stage (> 0: unique argmin).
    stationarity : ``(K,)`` :math:`\|2|w^k| \odot \nabla\tilde L(w^k)\|` at the end of phase (B).
    n_evals : number of gradient evaluations used.
    """

    times: np.ndarray
    coordinate: np.ndarray
    plateau_w: np.ndarray
    plateau_loss: np.ndarray
    loss0: float
    margin: np.ndarray
    stationarity: np.ndarray
    n_evals: int

    @property
    def d(self) -> int:
        return self.plateau_w.shape[1] // 2

    def names(self) -> list[str]:
        """Coordinate names per stage, e.g. ``["b0", "a0", ...]``."""
        return [coordinate_name(i, self.d) for i in self.coordinate]

    def to_metrics(self, prefix: str = "alg1_") -> dict:
        """The result as named arrays (for ``metrics.npz``); :meth:`from_metrics` reverses it."""
        return {prefix + f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_metrics(cls, m: dict, prefix: str = "alg1_") -> "IncrementalResult":
        """Rebuild a result saved with :meth:`to_metrics`."""
        values = {f.name: m[prefix + f.name] for f in fields(cls)}
        values["loss0"], values["n_evals"] = float(values["loss0"]), int(values["n_evals"])
        return cls(**values)

    def staircase(self, tbar) -> np.ndarray:
        r"""Predicted loss at rescaled times ``tbar``: :math:`\tilde L(w^k)` on :math:`[\bar t_k, \bar t_{k+1})`."""
        k = np.searchsorted(self.times, np.asarray(tbar, dtype=np.float64), side="right")
        return np.concatenate([[self.loss0], self.plateau_loss])[k]


def coordinate_name(i: int, d: int) -> str:
    """Name of coordinate ``i`` of ``w = (a, b)``: ``a_j`` for ``i < d``, else ``b_{i-d}``."""
    return f"a{i}" if i < d else f"b{i - d}"


def incremental_learning(X, Y, *, euler_step: float = 0.05, eps: float = 1e-8,
                         stationarity_tol: float = 1e-10, zero_tol: float = 1e-6,
                         grad_zero: float = 1e-8, max_stages: int | None = None,
                         max_evals: int = 1_000_000) -> IncrementalResult:
    r"""Run Algorithm 1 on the diagonal head with data ``X`` ``(N, n, d)``, targets ``Y``.

    Parameters
    ----------
    euler_step : forward-Euler step of phase (B) (0.05 and 0.01 give identical stages on the toy).
    eps : size of the seed :math:`\varepsilon` given to the activating coordinate.
    stationarity_tol : phase (B) stops when :math:`\|2|\varphi| \odot \nabla\tilde L\| <` this.
    zero_tol : after (B), coordinates with :math:`|\varphi_i| <` this are inactive again.
    grad_zero : :math:`|g_i| \le` this counts as :math:`g_i = 0` (e.g. :math:`\partial_a\tilde L = 0`
        exactly while :math:`b = 0`). Such a coordinate would need :math:`\bar t > 1/|g_i| = 10^8`
        to activate; below it lies only the rounding noise of a recovered teacher (~1e-11).
    max_stages : stop after this many stages (default: until no coordinate can activate).
    max_evals : budget of gradient evaluations; exceeding it raises ``RuntimeError``.

    Returns
    -------
    IncrementalResult
    """
    X = check_array("X", X, ndim=3)
    X, Y = _check_XY(X, Y, X.shape[-1], X.shape[-1])
    d = X.shape[-1]
    euler_step = check_float("euler_step", euler_step, low=0.0, high=0.5, low_open=True)
    eps = check_float("eps", eps, low=0.0, high=1e-2, low_open=True)
    max_stages = 2 * d if max_stages is None else check_int("max_stages", max_stages, low=1)
    p = 2 * d
    n_evals = 0
    data = diagonal_data(X, Y, 1)

    def grad(w):
        nonlocal n_evals
        n_evals += 1
        loss, ga, gb = ab_loss_and_grads_unchecked(w[None, :d], w[None, d:], data)
        return float(loss[0]), np.concatenate([ga[0], gb[0]])

    w, s, tbar = np.zeros(p), np.zeros(p), 0.0
    loss0, _ = grad(w)
    out = {"times": [], "coordinate": [], "plateau_w": [], "plateau_loss": [], "margin": [],
           "stationarity": []}
    while len(out["times"]) < max_stages:
        # (A) choose the next coordinate to activate
        _, gl = grad(w)
        g = -gl
        cand = np.flatnonzero((w == 0) & (np.abs(g) > grad_zero))
        if cand.size == 0:
            break
        tau = (np.sign(g[cand]) - s[cand]) / g[cand]
        order = np.argsort(tau)
        i_star, delta = int(cand[order[0]]), float(tau[order[0]])
        margin = float(tau[order[1]] - tau[order[0]]) if cand.size > 1 else np.inf
        tbar += delta
        inactive = w == 0
        s[inactive] = np.clip(s[inactive] + delta * g[inactive], -1.0, 1.0)
        s[i_star] = np.sign(g[i_star])
        # (B) train the active coordinates to stationarity along d(phi)/dt = -2|phi| grad L(phi)
        phi = w.copy()
        phi[i_star] = eps * np.sign(g[i_star])
        while True:
            if n_evals >= max_evals:
                raise RuntimeError(f"Algorithm 1 phase (B) of stage {len(out['times']) + 1} did not "
                                   f"reach stationarity within max_evals={max_evals} gradient "
                                   f"evaluations (euler_step={euler_step})")
            _, gl = grad(phi)
            flow = 2.0 * np.abs(phi) * gl
            if not np.all(np.isfinite(flow)):
                raise RuntimeError(f"Algorithm 1 phase (B) diverged at stage "
                                   f"{len(out['times']) + 1}; reduce euler_step={euler_step}")
            if np.linalg.norm(flow) < stationarity_tol:
                break
            phi -= euler_step * flow
        phi[np.abs(phi) < zero_tol] = 0.0
        w = phi
        loss_k, gl = grad(w)
        out["times"].append(tbar)
        out["coordinate"].append(i_star)
        out["plateau_w"].append(w.copy())
        out["plateau_loss"].append(loss_k)
        out["margin"].append(margin)
        out["stationarity"].append(float(np.linalg.norm(2.0 * np.abs(w) * gl)))
    return IncrementalResult(
        times=np.array(out["times"]), coordinate=np.array(out["coordinate"], dtype=int),
        plateau_w=np.array(out["plateau_w"]).reshape(-1, p), plateau_loss=np.array(out["plateau_loss"]),
        loss0=loss0, margin=np.array(out["margin"]), stationarity=np.array(out["stationarity"]),
        n_evals=n_evals)
