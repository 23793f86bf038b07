r"""The small-initialization limit as an incremental learning algorithm (paper Sec. 4, Algorithm 1).

Notation of the paper (arXiv:2306.07042 v2, Sec. 4). The network depends on the parameters
:math:`\theta = (u, v)`, :math:`u = [w_K, w_V]`, :math:`v = [w_Q, w_O]`, only through
:math:`u \odot v`; here :math:`w := u \odot v = (a, b) \in \mathbb R^p`, :math:`p = 2d`, with
:math:`a = w_K \odot w_Q` and :math:`b = w_V \odot w_O` (the diagonals of :math:`W_K W_Q^\top`,
:math:`W_V W_O^\top`), :math:`\tilde L(w)` the loss as a function of the products and
:math:`g(\theta) = -\nabla \tilde L(w)`. (The paper's own tracked variable is :math:`u + v`, its
eq. (6); its *log-weights* :math:`b^k_i \approx \log_\alpha |u_i + v_i|` below are a different
"b" from :math:`b = w_V \odot w_O`, so the code calls them ``logw``.)

Algorithm 1 of the paper, in its symbols, with :math:`b^0 = 1` (log-base-:math:`\alpha` of an
:math:`O(\alpha)` init, as in the paper's proof; its listing prints :math:`b^0 \leftarrow 0`):

.. math::
   \Delta_k(i) = \frac{b^k_i - 1 + \mathrm{sgn}\, g_i(\theta^k)}{g_i(\theta^k)}, \qquad
   i_k = \arg\min_{i \text{ inactive},\ g_i \ne 0} \Delta_k(i), \qquad
   \bar t_{k+1} = \bar t_k + \Delta_k(i_k), \qquad
   b^{k+1} = b^k - g(\theta^k)\,\Delta_k(i_k),

then the active coordinates (those with :math:`b_i \in \{0, 2\}`, i.e. :math:`|u_i \pm v_i| =
\Theta(1)`) train to a stationary point :math:`\theta^{k+1}` of the loss restricted to them. In
rescaled time :math:`\bar t = t/\log(1/\alpha)`, an inactive coordinate sits at
:math:`|u_i + v_i| \approx \alpha^{b_i}`, :math:`|u_i - v_i| \approx \alpha^{2 - b_i}` and drifts as
:math:`db_i/d\bar t = -g_i`; it becomes active when :math:`b_i` reaches 0 (if :math:`g_i > 0`) or 2
(if :math:`g_i < 0`): that is the time :math:`\Delta_k(i)`, and :math:`b^{k+1}_{i_k} = 1 -
\mathrm{sgn}\, g_{i_k}` exactly.

Equivalence with the exponent form :math:`s = 1 - b` (:math:`|u_i + v_i| \approx \alpha^{1-s_i}`),
in which the first version of this module was written: :math:`\Delta_k(i) = (\mathrm{sgn}\,g_i -
s_i)/g_i = (1 - \mathrm{sgn}(g_i)\, s_i)/|g_i|` and :math:`s^{k+1} = s^k + g\,\Delta_k(i_k)`.

**Phase (B), training the active coordinates.** Its :math:`\alpha \to 0` dynamics is
:math:`d\varphi/dt = -2|\varphi| \odot \nabla\tilde L(\varphi)` (the limit of
:math:`dw_i/dt = -\sqrt{4 w_i^2 + c_i^2}\,\partial_i\tilde L`, :math:`c_i = u_i^2 - v_i^2`), started
from :math:`\varphi = w^k + \varepsilon\,\mathrm{sgn}(g_{i_k}) e_{i_k}`; which stationary point it
reaches is decided by that flow (Newton's method started at the seed can land elsewhere). The code
follows the flow with forward Euler (step ``euler_step``, shortened so that no coordinate changes
its logarithm by more than ``max_log_step`` per step, halved whenever the loss would rise) until
it has slowed down (``newton_switch``), then finishes with Newton's method on the current
support: this converges quadratically also when a coordinate returns to zero, where the flow itself only
shrinks it like :math:`1/t` (a coordinate with :math:`\partial_i\tilde L = 0` at the limit).
The Newton point is accepted only if it is close, does not raise the loss, is a local minimum on
its support (positive-definite Hessian: Assumption 4.4 at :math:`\alpha \to 0`), and every
coordinate that returned to zero satisfies the sign condition of the flow,
:math:`\mathrm{sgn}(\varphi_i)\,\partial_i\tilde L \ge 0` (it was shrinking); otherwise Euler
continues.
Every coordinate off the support is exactly 0 in (B), so its gradients are computed on the
support's dimensions only (:func:`support_data`; the same sums without their zero terms, at
about ``|support| / d`` of the cost); only the activation test (A) needs the full gradient.

The output is the staircase the loss curves approach: stage times
:math:`0 < \bar t_1 < \bar t_2 < \dots`, plateau points :math:`w^k` and plateau losses
:math:`\tilde L(w^k)`. Since one coordinate joins per stage, the rank of
:math:`\Delta W_K W_Q^\top = \mathrm{diag}(a)` or :math:`\Delta W_V W_O^\top = \mathrm{diag}(b)` grows
by at most one per stage.

The non-degeneracy assumptions are recorded, not assumed silently: the margin between the
smallest and second-smallest :math:`\Delta_k(i)` (unique argmin) and the stationarity reached
in (B) are part of the result.
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
    coordinate : ``(K,)`` index :math:`i_k` into ``w`` of the coordinate activated at stage ``k``.
    plateau_w : ``(K, p)`` plateau points :math:`w^k` (reached just after :math:`\bar t_k`).
    plateau_loss : ``(K,)`` :math:`\tilde L(w^k)`.
    loss0 : :math:`\tilde L(0)`, the loss before the first jump.
    margin : ``(K,)`` gap between the two smallest :math:`\Delta_k(i)` at each stage (> 0: unique
        argmin).
    stationarity : ``(K,)`` :math:`\|2|w^k| \odot \nabla\tilde L(w^k)\|` at the end of phase (B).
    log_weights : ``(K, p)`` the paper's log-weights :math:`b^k` just after jump ``k`` (0 or 2 on
        active coordinates; :math:`b^0 = 1`).
    n_evals : number of gradient evaluations used (those of phase (B) on the support only,
        :func:`support_data`).
    """

    times: np.ndarray
    coordinate: np.ndarray
    plateau_w: np.ndarray
    plateau_loss: np.ndarray
    loss0: float
    margin: np.ndarray
    stationarity: np.ndarray
    log_weights: np.ndarray
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


class IncrementalError(RuntimeError):
    """Algorithm 1 could not finish a stage (no convergence within the budget, divergence, or a
    plateau point that is not a local minimum). ``.partial`` is the
    :class:`IncrementalResult` of the stages completed before."""

    def __init__(self, message: str, partial: IncrementalResult):
        super().__init__(message)
        self.partial = partial


def coordinate_name(i: int, d: int) -> str:
    """Name of coordinate ``i`` of ``w = (a, b)``: ``a_j`` for ``i < d``, else ``b_{i-d}``."""
    return f"a{i}" if i < d else f"b{i - d}"


def activation_times(logw: np.ndarray, g: np.ndarray) -> np.ndarray:
    r"""The paper's :math:`\Delta_k(i) = (b^k_i - 1 + \mathrm{sgn}\,g_i)/g_i` for every ``i``.

    ``logw`` the log-weights :math:`b^k` ``(p,)``, ``g`` :math:`= -\nabla\tilde L(w^k)` ``(p,)``;
    ``inf`` where :math:`g_i = 0`. Equals :math:`b_i/g_i` for :math:`g_i > 0` (time for
    :math:`b_i` to fall to 0) and :math:`(2 - b_i)/|g_i|` for :math:`g_i < 0` (to rise to 2).
    """
    out = np.full(logw.shape, np.inf)
    nz = g != 0
    out[nz] = (logw[nz] - 1.0 + np.sign(g[nz])) / g[nz]
    return out


def support_data(data: dict, J: np.ndarray, y_sq: np.ndarray):
    r"""The arrays of :func:`~.model.diagonal_data` (one run) restricted to the dimensions ``J``,
    and the loss of the others.

    If :math:`a_j = b_j = 0` for every :math:`j \notin J`, the logits
    :math:`Z = \sum_{j \in J} a_j X_{:,j} X_{:,j}^\top` need only the columns ``J`` of ``X``, the
    output column :math:`f_{:,j} = b_j (SX)_{:,j}` is 0 for :math:`j \notin J`, and so
    :func:`~.model.ab_loss_and_grads_unchecked` on ``(a_J, b_J)`` with these arrays gives the
    loss less :math:`\tfrac12 \operatorname{mean}_s \|Y_{s,:,j}\|^2` summed over
    :math:`j \notin J` (returned as the second value; ``y_sq`` holds it per ``j``, ``(d,)``) and
    the exact gradients :math:`\partial\tilde L/\partial a_j`, :math:`\partial\tilde
    L/\partial b_j` for :math:`j \in J`: the same sums without their zero terms. On a support of
    ``|J|`` of ``d`` dimensions a gradient costs about ``|J|/d`` of a full one.
    """
    d = y_sq.size
    rows = np.append(J, d)                                  # X1 = [X, 1]: keep the ones row
    data_J = {"X1": np.ascontiguousarray(data["X1"][..., rows]),
              "X1t": np.ascontiguousarray(data["X1t"][:, rows]),
              "Xt_runs": np.ascontiguousarray(data["Xt_runs"][:, J]),
              "Yt": np.ascontiguousarray(data["Yt"][:, J])}
    rest = float(np.delete(y_sq, J).sum())
    return data_J, rest


def incremental_learning(X, Y, *, euler_step: float = 0.05, max_log_step: float = 0.2,
                         eps: float = 1e-8, stationarity_tol: float = 1e-10,
                         newton_switch: float = 1e-5, zero_tol: float = 1e-6,
                         grad_zero: float = 1e-8, max_stages: int | None = None,
                         max_evals: int = 1_000_000) -> IncrementalResult:
    r"""Run Algorithm 1 on the diagonal head with data ``X`` ``(N, n, d)``, targets ``Y``.

    Parameters
    ----------
    euler_step : largest forward-Euler step of phase (B) (0.05 and 0.01 give identical stages on
        the toy).
    max_log_step : a step is shortened so that :math:`2 h |\partial_i\tilde L| \le` this for
        every coordinate (no coordinate's logarithm moves by more per step); this keeps steps
        accurate while a tiny coordinate grows and lets them be long when gradients are small.
    eps : size of the seed :math:`\varepsilon` given to the activating coordinate.
    stationarity_tol : (B) ends when :math:`\|2|\varphi| \odot \nabla\tilde L\| <` this, or when
        the Newton polish on the support reaches :math:`\|\nabla_S\tilde L\| <` this.
    newton_switch : flow speed :math:`\|2|\varphi| \odot \nabla\tilde L\|` below which Newton's
        method on the support is tried, once past the jump (retried at each further factor-of-10
        slow-down; a rejected try costs :math:`2|S|` gradients for the Hessian).
    zero_tol : after (B), coordinates with :math:`|\varphi_i| <` this are inactive again.
    grad_zero : :math:`|g_i| \le` this counts as :math:`g_i = 0` (e.g. :math:`\partial_a\tilde L = 0`
        exactly while :math:`b = 0`). Such a coordinate would need :math:`\bar t > 1/|g_i| = 10^8`
        to activate; below it lies only the rounding noise of a recovered teacher (~1e-11).
    max_stages : stop after this many stages (default: until no coordinate can activate).
    max_evals : budget of gradient evaluations.

    Returns
    -------
    IncrementalResult

    Raises
    ------
    IncrementalError
        (a ``RuntimeError``) when phase (B) does not converge within ``max_evals``, diverges, or
        ends at a point that is not a local minimum on its support; ``.partial`` holds the stages
        found before.
    """
    X = check_array("X", X, ndim=3)
    X, Y = _check_XY(X, Y, X.shape[-1], X.shape[-1])
    d = X.shape[-1]
    euler_step = check_float("euler_step", euler_step, low=0.0, high=100.0, low_open=True)
    max_log_step = check_float("max_log_step", max_log_step, low=0.0, high=1.0, low_open=True)
    eps = check_float("eps", eps, low=0.0, high=1e-2, low_open=True)
    stationarity_tol = check_float("stationarity_tol", stationarity_tol, low=0.0, low_open=True)
    newton_switch = check_float("newton_switch", newton_switch, low=0.0, low_open=True)
    zero_tol = check_float("zero_tol", zero_tol, low=0.0, low_open=True)
    grad_zero = check_float("grad_zero", grad_zero, low=0.0)
    max_stages = 2 * d if max_stages is None else check_int("max_stages", max_stages, low=1)
    max_evals = check_int("max_evals", max_evals, low=1)
    p = 2 * d
    n_evals = 0
    data = diagonal_data(X, Y, 1)
    y_sq = 0.5 * np.einsum("sjk,sjk->j", data["Yt"], data["Yt"]) / X.shape[0]
    restricted = {}                  # data restricted to the current support (support_data)
    out = {"times": [], "coordinate": [], "plateau_w": [], "plateau_loss": [], "margin": [],
           "stationarity": [], "log_weights": []}

    def result():
        return IncrementalResult(
            times=np.array(out["times"]), coordinate=np.array(out["coordinate"], dtype=int),
            plateau_w=np.array(out["plateau_w"]).reshape(-1, p),
            plateau_loss=np.array(out["plateau_loss"]), loss0=loss0,
            margin=np.array(out["margin"]), stationarity=np.array(out["stationarity"]),
            log_weights=np.array(out["log_weights"]).reshape(-1, p), n_evals=n_evals)

    def fail(message):
        raise IncrementalError(f"Algorithm 1 phase (B) of stage {len(out['times']) + 1}: "
                               f"{message}; the {len(out['times'])} stages found before are in "
                               f".partial", result())

    def grad(w, full=False, also=None):
        r"""``(L(w), dL/dw)``. The gradient is computed on the support only (``full=False``): on
        the dimensions ``J = {j : a_j != 0 or b_j != 0}`` (and those of the indices ``also``),
        its ``a_j`` and ``b_j`` entries exact, every other entry set to 0 (phase (B) reads the
        gradient only through :math:`|w| \odot \nabla\tilde L` or on the support)."""
        nonlocal n_evals
        if n_evals >= max_evals:
            fail(f"no stationary point within max_evals={max_evals} gradient evaluations "
                 f"(euler_step={euler_step}, newton_switch={newton_switch})")
        n_evals += 1
        if full:
            loss, ga, gb = ab_loss_and_grads_unchecked(w[None, :d], w[None, d:], data)
            return float(loss[0]), np.concatenate([ga[0], gb[0]])
        dims = (w[:d] != 0) | (w[d:] != 0)
        if also is not None:
            dims[np.asarray(also) % d] = True
        J = np.flatnonzero(dims)
        key = J.tobytes()
        if key not in restricted:
            if len(restricted) >= 4:                         # the support changes per stage
                restricted.pop(next(iter(restricted)))
            restricted[key] = support_data(data, J, y_sq)
        data_J, rest = restricted[key]
        gl = np.zeros(p)
        if J.size == 0:
            return float(rest), gl
        loss, ga, gb = ab_loss_and_grads_unchecked(w[None, J], w[None, d + J], data_J)
        gl[J], gl[d + J] = ga[0], gb[0]
        return float(loss[0]) + rest, gl

    def newton(phi):
        """Newton's method for grad_S L = 0 on S = {|phi| > zero_tol}; the accepted point or None."""
        w, sign0 = phi.copy(), np.sign(phi)
        for _ in range(30):
            S = np.flatnonzero(np.abs(w) > zero_tol)
            w[np.abs(w) <= zero_tol] = 0.0
            loss, gl = grad(w, also=np.flatnonzero(phi))        # also where phi returned to 0
            H = hessian(w, S)
            if np.linalg.norm(gl[S]) < 0.01 * stationarity_tol:
                break
            try:
                w[S] -= np.linalg.solve(H, gl[S])
            except np.linalg.LinAlgError:
                return None
        else:
            return None
        moved = np.max(np.abs(w - phi))
        zeroed = (w == 0) & (phi != 0)
        if (moved > 1e-2 * max(np.max(np.abs(phi)), 1.0) or loss > loss_phi + 1e-12 * loss0
                or np.linalg.eigvalsh(0.5 * (H + H.T)).min() <= 0
                or np.any(sign0[zeroed] * gl[zeroed] < -grad_zero)):
            return None
        return w

    def hessian(w, S):
        """Central differences of the gradient along the support directions, ``(|S|, |S|)``."""
        H = np.empty((S.size, S.size))
        for col, i in enumerate(S):
            h = 1e-5 * max(abs(w[i]), 1e-2)
            e = np.zeros(p)
            e[i] = h
            H[:, col] = (grad(w + e)[1][S] - grad(w - e)[1][S]) / (2 * h)
        return H

    w = np.zeros(p)
    logw = np.ones(p)                                # b^0 = 1: every coordinate at O(alpha)
    tbar = 0.0
    loss0, _ = grad(w, full=True)
    while len(out["times"]) < max_stages:
        # (A) the next coordinate to activate: i_k = argmin Delta_k(i), Delta_k(i) =
        #     (b_i - 1 + sgn g_i) / g_i over inactive coordinates with g_i != 0
        _, gl = grad(w, full=True)
        g = -gl                                                         # g(theta^k)
        inactive = w == 0
        cand = np.flatnonzero(inactive & (np.abs(g) > grad_zero))
        if cand.size == 0:
            break
        delta = activation_times(logw[cand], g[cand])
        order = np.argsort(delta)
        i_k, delta_k = int(cand[order[0]]), float(delta[order[0]])
        margin = float(delta[order[1]] - delta[order[0]]) if cand.size > 1 else np.inf
        tbar += delta_k
        # b^{k+1} = b^k - g(theta^k) Delta_k(i_k) on the inactive coordinates (active ones have
        # g_i = 0); the winner lands exactly on 0 or 2, the others stay inside (0, 2).
        logw[inactive] = np.clip(logw[inactive] - g[inactive] * delta_k, 0.0, 2.0)
        logw[i_k] = 1.0 - np.sign(g[i_k])
        # (B) train the active coordinates to stationarity along d(phi)/dt = -2|phi| grad L(phi)
        phi = w.copy()
        phi[i_k] = eps * np.sign(g[i_k])
        loss_phi, gl = grad(phi)
        step, next_try, peak = euler_step, newton_switch, 0.0
        while True:
            flow = 2.0 * np.abs(phi) * gl
            speed = float(np.linalg.norm(flow))
            if not np.isfinite(speed):
                fail(f"the flow diverged; reduce euler_step={euler_step}")
            peak = max(peak, speed)
            past_jump = speed < 1e-2 * peak          # the seed itself moves slowly: not an end
            if speed < stationarity_tol and past_jump:
                break
            if past_jump and speed < next_try:                   # past the jump: polish
                polished = newton(phi)
                if polished is not None:
                    phi = polished
                    break
                next_try = 0.1 * speed
            rate = 2.0 * np.max(np.abs(gl[(phi != 0)]))
            h = min(step, max_log_step / rate) if rate > 0 else step
            trial = phi - h * flow
            loss_trial, gl_trial = grad(trial)
            if not np.isfinite(loss_trial) or loss_trial > loss_phi + 1e-14 * loss0:
                step = 0.5 * h                                  # overshoot: halve the step
                if step < 1e-12:
                    fail("the Euler step fell below 1e-12 without decreasing the loss")
                continue
            phi, loss_phi, gl = trial, loss_trial, gl_trial
            step = min(euler_step, 2.0 * step)
        phi[np.abs(phi) < zero_tol] = 0.0
        if phi[i_k] == 0:
            fail(f"the activated coordinate {coordinate_name(i_k, d)} returned to 0, so the "
                 f"stage would repeat (degenerate stage)")
        w = phi
        loss_k, gl = grad(w)
        out["times"].append(tbar)
        out["coordinate"].append(i_k)
        out["plateau_w"].append(w.copy())
        out["plateau_loss"].append(loss_k)
        out["margin"].append(margin)
        out["stationarity"].append(float(np.linalg.norm(2.0 * np.abs(w) * gl)))
        out["log_weights"].append(logw.copy())
    return result()
