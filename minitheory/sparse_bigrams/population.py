r"""Large-T population dynamics with Gaussian gradient noise (Ren, Wang, Lee 2024,
arXiv:2410.23438v1, Sec. 7).

At :math:`T = 10^5` sampling sequences is out of reach, so the dynamics run on the closed-form
preconditioned population gradients (:func:`preconditioned_grads_into`, cost O(N² + TN)) plus
Gaussian noise of the variance a batch of size ``B`` would have:

.. code-block:: text

    G_V, G_A = preconditioned population gradients at (V, A)
    G_V += sigma_V / sqrt(B) * Xi_V;   G_A += sigma_A / sqrt(B) * Xi_A    # none if B = inf
    G_A -= G_A.mean(axis=0)                          # centre: drop the stiff column-sum direction
    V -= min(eta_V, 1 / ||A||_mu^2) * G_V
    stage 1 (it < tau):  A -= eta_A * G_A
    stage 2:             A = SoftThr(A - eta_A * G_A, eta_A * lam);  balance   (|c| >= 0.1 guard)

with ``B = B1`` in stage 1 and ``B2`` in stage 2. :math:`\sigma_V = 0.7` and
:math:`\sigma_A = 1.1/\sqrt N` are the per-entry standard deviations of one preconditioned sample
gradient at the truth, measured with the sampler at T = 50 (they do not depend on T).

Memory: each T x N float64 array is 400 MB at N = 500, T = 1e5. A run keeps ``A``, one gradient
buffer and one noise buffer (which doubles as the temporary of the soft threshold); ``Q*`` is
stored sparsely (:class:`SparseAttention`). Every T x N operation is written in place.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import loop
from ..validation import TrainingStopped, check_float, check_int, check_types
from . import data
from .model import sigma_inner

SIGMA_V = 0.7
SIGMA_A_TIMES_SQRT_N = 1.1


@dataclass(frozen=True)
class SparseAttention:
    """``Q*`` with ``Q`` non-zeros per column: positions ``pos`` ``(Q, N)``, weights ``w``."""

    pos: np.ndarray
    w: np.ndarray
    T: int

    def dense(self) -> np.ndarray:
        """The ``(T, N)`` matrix (small T only)."""
        Q = np.zeros((self.T, self.pos.shape[1]))
        Q[self.pos, np.arange(self.pos.shape[1])] = self.w
        return Q


@dataclass(frozen=True)
class LargeInstance:
    """An SCB task with sparse ``Q*``: ``P`` ``(N, N)``, ``mu`` ``(N,)``, ``q``."""

    P: np.ndarray
    mu: np.ndarray
    q: SparseAttention

    @property
    def N(self) -> int:
        return self.P.shape[0]

    @property
    def T(self) -> int:
        return self.q.T


def make_large_instance(rng: np.random.Generator, N: int, T: int, Q: int) -> LargeInstance:
    """The instance law of :func:`data.make_instance` with ``Q*`` stored sparsely."""
    N, T, Q = data.check_sizes(N, T, Q)
    P = data.random_transition(rng, N)
    pos = np.stack([rng.choice(T, size=Q, replace=False) for _ in range(N)], axis=1)
    w = 0.5 + rng.random((Q, N))
    return LargeInstance(P, data.stationary(P), SparseAttention(pos, w / w.sum(0), T))


def with_attention(inst: LargeInstance, rng: np.random.Generator) -> LargeInstance:
    """The same task with a new transition of the same ``mu`` (for transfer from ``(P', Q*)``)."""
    return LargeInstance(data.transition_with_stationary(rng, inst.mu), inst.mu, inst.q)


@dataclass(frozen=True)
class Schedule:
    """One large-T run. ``kind``: ``"two_stage"`` or ``"sgd"`` (comparison (ii): the noisy
    gradients times ``D`` column-wise, centred, one step ``eta_sgd``). ``B1``/``B2`` are the
    emulated batch sizes of the two stages (``inf``: noiseless); ``lam = 0`` with
    ``balance=False`` is comparison (i)."""

    kind: str = "two_stage"
    eta_V: float = 1.0
    eta_A: float = 10.0
    B1: float = 1e8
    B2: float = 1e6
    lam: float = 4.4e-4
    tau: int = 60
    balance: bool = True
    eta_sgd: float = 100.0

    def __post_init__(self):
        check_types(self)
        if self.kind not in ("two_stage", "sgd"):
            raise ValueError(f"kind must be 'two_stage' or 'sgd', got {self.kind!r}")
        for name in ("eta_V", "eta_A", "eta_sgd"):
            check_float(name, getattr(self, name), low=0.0, low_open=True)
        for name in ("B1", "B2"):
            b = getattr(self, name)
            if not (b == np.inf or (isinstance(b, (int, float)) and 1 <= b < np.inf)):
                raise ValueError(f"{name} must be >= 1 or inf, got {b}")
        check_float("lam", self.lam, low=0.0)
        check_int("tau", self.tau, low=0)


def schedule_lr(s: Schedule) -> float:
    """The step size that governs stability: ``eta_A`` (two-stage) or ``eta_sgd``."""
    return s.eta_A if s.kind == "two_stage" else s.eta_sgd


def defaults_for(N: int) -> dict:
    """The project's defaults [project choice]: the tables for N = 100 and 500, and the design rules elsewhere
    (``eta_A = 0.1 N``; ``lam = 4 sigma_A / sqrt(B2)`` keeps off-support entries at exactly 0)."""
    B1, B2, steps = (1e8, 1e6, 200) if N <= 100 else (1e9, 4e6, 100)
    return {"eta_A": 0.1 * N, "B1": B1, "B2": B2, "steps": steps,
            "lam": 4 * SIGMA_A_TIMES_SQRT_N / np.sqrt(N) / np.sqrt(B2)}


# --------------------------------------------------------------------------------------------
# Closed-form preconditioned gradients, in place
# --------------------------------------------------------------------------------------------
def column_stats(A: np.ndarray, q: SparseAttention):
    r"""Per column: :math:`\|a_k\|^2`, :math:`c_k = \mathbf 1^\top a_k`, :math:`a_k^\top q_k`: two
    passes over ``A`` and a gather of the ``Q`` non-zeros of each :math:`q_k` (the three column
    sums that :func:`reference.population_grads` forms from a dense ``Q*``)."""
    cols = np.arange(A.shape[1])
    return np.einsum("tk,tk->k", A, A), A.sum(0), np.einsum("jk,jk->k", A[q.pos, cols], q.w)


def preconditioned_grads_into(G_A: np.ndarray, V: np.ndarray, A: np.ndarray, stats,
                              inst: LargeInstance) -> np.ndarray:
    r"""Write :math:`G_A` into ``G_A`` and return :math:`G_V`, the preconditioned population
    gradients:

    .. math::
        G_V = -\langle A,Q^*\rangle_\mu (P - \mu\mathbf 1^\top) - \bar c\,\mu\mathbf 1^\top
              + \|A\|_\mu^2 (V - V\mu\mathbf 1^\top) + \overline{c^2}\, V\mu\mathbf 1^\top,\\
        G_A[:, k] = -\langle V,P\rangle_\Sigma q_k + \|V\|_\Sigma^2 a_k
                    - ((V\mu)^\top\mu - \|V\mu\|^2 c_k)\mathbf 1 .

    Fast twin of :func:`reference.preconditioned_grads` (dense ``Q*``, new arrays): two passes
    over the T x N arrays, ``Q*`` entering through its ``Q N`` non-zeros only, ``G_A`` written in
    place. Measured gain of :func:`column_stats` plus this at T = 1e5: 7.5-17x at N = 100,
    10x at N = 500 (timeit, loaded shared machine).
    """
    aa, c, aq = stats
    mu, P = inst.mu, inst.P
    Vmu = V @ mu
    if G_A is not None:                                     # (None: only G_V is wanted)
        np.multiply(A, sigma_inner(V, V, mu), out=G_A)
        G_A -= (Vmu @ mu) - (Vmu @ Vmu) * c                 # a row: broadcast over positions
        G_A[inst.q.pos, np.arange(inst.N)] -= sigma_inner(V, P, mu) * inst.q.w
    ones = np.ones(inst.N)
    return (-(mu @ aq) * (P - np.outer(mu, ones)) - (mu @ c) * np.outer(mu, ones)
            + (mu @ aa) * (V - np.outer(Vmu, ones)) + (mu @ c**2) * np.outer(Vmu, ones))


def soft_threshold_(A: np.ndarray, theta: float, tmp: np.ndarray) -> None:
    r"""In place :math:`A \leftarrow \mathrm{SoftThr}_\theta(A)` in two passes, through the Moreau
    identity :math:`\mathrm{SoftThr}_\theta(x) = x - \mathrm{clip}(x, -\theta, \theta)` (exact in
    floating point: :math:`x - x = 0` inside, :math:`x \mp \theta` outside). ``tmp`` is scratch.

    Fast twin of :func:`reference.soft_threshold`; measured gain at T = 1e5: 4.1-4.6x at N = 100, 4.3x at N = 500."""
    np.clip(A, -theta, theta, out=tmp)
    A -= tmp


def metrics(V, A, stats, inst: LargeInstance) -> dict:
    """Distances, signals, off-signal residuals and the similarities of
    :func:`analysis.similarity` from the column statistics (no extra pass over ``A``)."""
    aa, c, aq = stats
    mu, P, T = inst.mu, inst.P, inst.T
    qq = np.sum(inst.q.w**2, axis=0)
    pp = sigma_inner(P, P, mu)
    alpha_V = sigma_inner(V, P, mu) / pp
    cq, qq_c, aa_c = aq - c / T, qq - 1.0 / T, aa - c**2 / T        # centred: Pi A, Pi Q*
    alpha_A = (mu @ cq) / (mu @ qq_c)
    dV = V - alpha_V * P
    V_minus_P = V - P
    vv_mu, pp_mu = np.einsum("ij,ij,j->", V, V, mu), np.einsum("ij,ij,j->", P, P, mu)
    sim_V = np.einsum("ij,ij,j->", V, P, mu) / np.sqrt(vv_mu * pp_mu) if vv_mu > 0 else 0.0
    sim_A = (mu @ aq) / np.sqrt((mu @ aa) * (mu @ qq)) if mu @ aa > 0 else 0.0
    return {"sim_V": sim_V, "sim_A": sim_A,
            "dist_V": np.sqrt(np.einsum("ij,ij,j->", V_minus_P, V_minus_P, mu)),
            "dist_A": np.sqrt(max(mu @ (aa - 2 * aq + qq), 0.0)),
            "alpha_V": alpha_V, "alpha_A": alpha_A,
            "resid_V": np.sqrt(max(sigma_inner(dV, dV, mu), 0.0)),
            "resid_A": np.sqrt(max(mu @ (aa_c - 2 * alpha_A * cq + alpha_A**2 * qq_c), 0.0))}


# --------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------
class NoiseSource:
    """Standard normal noise for a ``(T, N)`` buffer, drawn in ``chunks`` row blocks, each from its
    own generator (spawned from ``rng``), on up to ``chunks`` threads.

    NumPy releases the GIL while it fills an array, so two threads draw twice as fast (the
    draw is the dominant cost of a step: 0.42 s for 5e7 values on one core). The chunks and
    their generators are fixed, so the result does not depend on the number of cores.
    """

    def __init__(self, rng: np.random.Generator, chunks: int = 2):
        self.gens = rng.spawn(chunks)
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(chunks, os.cpu_count() or 1)))

    def fill(self, Xi: np.ndarray) -> np.ndarray:
        """Fill ``Xi`` in place; return its column means."""
        bounds = np.linspace(0, Xi.shape[0], len(self.gens) + 1).astype(int)

        def work(i):
            block = Xi[bounds[i]:bounds[i + 1]]
            self.gens[i].standard_normal(out=block)
            return block.sum(axis=0)

        return sum(self.pool.map(work, range(len(self.gens)))) / Xi.shape[0]

def _step(s: Schedule, V, A, it, stats, inst: LargeInstance, G, Xi, Xi_mean, Xi_V) -> None:
    r"""One update of ``(V, A)`` in place, in the fewest passes over the ``(T, N)`` arrays.

    Fast twin of :func:`reference.large_t_step` (the update as written, on dense arrays, with new
    arrays at every line): same result to rounding. Measured gain at T = 1e5, stage 2 with
    noise: 7.3-7.8x at N = 100, 3.2x at N = 500 (and memory: the reference peaks at six
    T x N temporaries beyond its inputs and a dense ``Q*``, 2.4 GB at N = 500; this one at none).

    With :math:`g = \|V\|_\Sigma^2 a_k - \langle V,P\rangle_\Sigma q_k - u_k\mathbf 1` (the column
    :math:`k` of :func:`preconditioned_grads_into`, :math:`u_k = (V\mu)^\top\mu - \|V\mu\|^2 c_k`)
    and the noise :math:`\sigma\xi` (:math:`\sigma = \sigma_A/\sqrt B`), the centred step
    :math:`A \leftarrow A - \eta(G - \bar G)` has the closed form

    .. math::
        A \leftarrow (1 - \eta\|V\|_\Sigma^2) A - \eta \sigma \xi + \eta\langle V,P\rangle_\Sigma q_k
        + \eta\big(\|V\|_\Sigma^2 c_k/T - \langle V,P\rangle_\Sigma/T + \sigma\bar\xi_k\big)\mathbf 1 ,

    (the row :math:`u_k` cancels in the centring; :math:`\mathbf 1^\top q_k = 1`): four passes
    instead of eight, and no temporary but ``G``. For SGD, :math:`\eta` is :math:`\eta_{sgd}\mu_k`
    per column. ``Xi``, ``Xi_mean``, ``Xi_V`` are this step's noise, shared by all runs.
    """
    aa, c, aq = stats
    mu, T = inst.mu, inst.T
    G_V = preconditioned_grads_into(None, V, A, stats, inst)
    B = s.B1 if it < s.tau else s.B2
    sd_A = 0.0 if B == np.inf else SIGMA_A_TIMES_SQRT_N / np.sqrt(inst.N * B)   # sigma_A / sqrt(B)
    if sd_A:
        G_V = G_V + SIGMA_V / np.sqrt(B) * Xi_V
    if s.kind == "sgd":                                 # unpreconditioned: times D, one step
        eta, eta_V = s.eta_sgd * mu, s.eta_sgd * mu
    else:
        aa_mu = float(mu @ aa)
        eta, eta_V = s.eta_A, (s.eta_V if aa_mu * s.eta_V <= 1.0 else 1.0 / aa_mu)
    vv, vp = sigma_inner(V, V, mu), sigma_inner(V, inst.P, mu)
    A *= 1.0 - eta * vv
    if sd_A:
        np.multiply(Xi, eta * sd_A, out=G)
        A -= G
    A += eta * (vv * c / T - vp / T + sd_A * (Xi_mean if sd_A else 0.0))
    A[inst.q.pos, np.arange(inst.N)] += (eta * vp) * inst.q.w
    V -= eta_V * G_V
    if s.kind == "two_stage" and it >= s.tau:
        if s.lam > 0:
            soft_threshold_(A, s.eta_A * s.lam, G)
        if s.balance:
            c_bar = float(mu @ A.sum(0))                # sum_k mu_k 1^T a_k
            if abs(c_bar) >= 0.1:
                A /= c_bar
                V *= c_bar


def simulate(inst: LargeInstance, runs: dict, *, steps: int, rng: np.random.Generator,
             reference: Schedule | None = None, inits: dict | None = None, progress=None,
             population: bool = False):
    r"""Run every schedule in ``runs`` (name -> :class:`Schedule`) for ``steps`` steps in lockstep,
    with a ``reference`` run (normally the noiseless two-stage one) beside them.

    All runs see the same noise draw at each step (common random numbers: one draw per step,
    the dominant cost, serves every run). ``inits`` (name -> ``{"V", "A"}``) starts a run from
    given weights (transfer); otherwise and for the reference: :math:`V = \mu\mathbf 1^\top`,
    :math:`A = \mathbf 1\mathbf 1^\top/T`. Memory: one ``(T, N)`` array per run and reference plus
    two buffers.

    ``population=True`` also runs each schedule's *population process* (Ren, Wang, Lee 2024,
    Figs. 3 and 5): the same schedule without noise (``B1 = B2 = inf``), from the same start,
    in lockstep. A process equal to the ``reference`` or to another run's process is shared (so
    the noisy two-stage run's process is the noiseless ``reference`` when there is one); a
    noiseless run gets its own copy, and its ``delta`` is exactly 0.

    Returns ``history``: ``history[name][metric]`` is ``(K,)`` over steps ``0..steps``, with
    ``ref_dist_V``, ``ref_dist_A`` (distance to the reference) when there is one and
    ``delta_V``, ``delta_A`` (:math:`\|V - V^{pop}\|_\mu`, :math:`\|A - A^{pop}\|_\mu`, the
    paper's :math:`\Delta`) with ``population``.

    The steps run in :func:`minitheory.loop.run`. A run turning non-finite raises
    :class:`~minitheory.validation.DivergenceError` (the message names the run and its step
    size; ``.lr`` is the step size of the first run), Ctrl-C raises
    :class:`~minitheory.validation.Interrupted`; ``.partial`` of both is the history of the steps
    before. The update is in place, so no state is kept.
    """
    steps = check_int("steps", steps, low=0)
    if not runs:
        raise ValueError("runs must name at least one schedule")
    N, T = inst.N, inst.T
    inits = inits or {}
    schedules = dict(runs, **({"reference": reference} if reference is not None else {}))
    process = {}                                   # run name -> name of its population process
    if population:
        for name, sch in runs.items():
            twin = dataclasses.replace(sch, B1=np.inf, B2=np.inf)
            same = [n for n, s in schedules.items() if n not in runs and s == twin
                    and n not in inits and name not in inits]
            if not same:
                same = [f"population of {name}"]
                schedules[same[0]] = twin
                if name in inits:
                    inits = dict(inits, **{same[0]: inits[name]})
            process[name] = same[0]
    state = {}
    for name in schedules:
        if name in inits:
            V0, A0 = (np.array(inits[name][k], dtype=np.float64) for k in ("V", "A"))
            if V0.shape != (N, N) or A0.shape != (T, N):
                raise ValueError(f"init of {name!r} has V {V0.shape} and A {A0.shape}, but the "
                                 f"task needs V {(N, N)} and A {(T, N)}")
        else:
            V0, A0 = np.outer(inst.mu, np.ones(N)), np.full((T, N), 1.0 / T)
        state[name] = (V0, A0)
    G, Xi = np.empty((T, N)), np.empty((T, N))          # scratch, and the step's noise
    noise = NoiseSource(rng)
    state = {name: (V, A, column_stats(A, inst.q)) for name, (V, A) in state.items()}

    def measure(state):
        """The logged metrics of every run, ``{(name, metric): value}``."""
        out = {}
        for name in runs:
            V, A, stats = state[name]
            for k, v in metrics(V, A, stats, inst).items():
                out[name, k] = v
            if reference is not None:
                out[name, "ref_dist_V"], out[name, "ref_dist_A"] = between(
                    state[name], state["reference"])
            if name in process:
                out[name, "delta_V"], out[name, "delta_A"] = between(
                    state[name], state[process[name]])
        return out

    def between(run, other):
        """``(||V - V'||_mu, ||A - A'||_mu)``; ``|A - A'|^2 = |A|^2 - 2<A, A'> + |A'|^2`` in one
        pass over the two ``A`` (exactly 0 for a run against itself)."""
        (V, A, stats), (V2, A2, stats2) = run, other
        D = V - V2
        d2 = inst.mu @ (stats[0] - 2 * np.einsum("tk,tk->k", A, A2) + stats2[0])
        return np.sqrt(np.einsum("ij,ij,j->", D, D, inst.mu)), np.sqrt(max(d2, 0.0))

    def update(state, it):
        """One :func:`_step` of every run, in place; ``out`` holds the metrics of the old state."""
        logged = measure(state)
        Xi_mean = Xi_V = None
        if any((sch.B1 if it < sch.tau else sch.B2) != np.inf for sch in schedules.values()):
            Xi_mean = noise.fill(Xi)
            Xi_V = rng.standard_normal((N, N))
        for name, (V, A, stats) in state.items():
            _step(schedules[name], V, A, it, stats, inst, G, Xi, Xi_mean, Xi_V)
        return {name: (V, A, column_stats(A, inst.q)) for name, (V, A, _) in state.items()}, logged

    def check(new, logged):
        """The runs whose ``V`` or column statistics (sums over ``A``) are non-finite."""
        bad = [name for name, (V, _, stats) in new.items()
               if not (np.all(np.isfinite(V)) and all(np.all(np.isfinite(x)) for x in stats))]
        return ", ".join(f"run {name!r} ({schedules[name].kind}, step size "
                         f"{schedule_lr(schedules[name]):g})" for name in bad)

    def observe(it, state, new, logged):
        return measure(state) if logged is None else logged

    first = next(iter(runs.values()))
    try:
        _, logs = loop.run(update, state, steps=steps, observe=observe, lr=schedule_lr(first),
                           lr_name="eta_A" if first.kind == "two_stage" else "eta_sgd",
                           progress=progress, check=check, label="the large-T simulation")
    except TrainingStopped as exc:
        exc.partial = per_run(exc.partial[1])
        raise
    return per_run(logs)


def per_run(logs: dict) -> dict:
    """``{"step": (K,), (name, metric): (K,)}`` as ``{name: {metric: (K,), "step": (K,)}}``."""
    hist: dict = {}
    for key, v in logs.items():
        if key != "step":
            hist.setdefault(key[0], {})[key[1]] = v
    for h in hist.values():
        h["step"] = logs["step"]
    return hist
