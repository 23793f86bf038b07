"""The settings the papers fix, and the project's documented choices, pinned once in one table.

Each row: where the value lives, the value, and why it is that value (the paper's section or
figure, or the design rule that sets a project choice). A change to any of them changes what a
demo reproduces, so it must be a deliberate edit of this table too.
"""
import numpy as np
import pytest

from minitheory.lowrank_sparse import data as ls_data, training as ls_training
from minitheory.rank_growth import data as rg_data
from minitheory.sparse_bigrams import population as pop, training as sb_training
from minitheory.transformer import reference as tr_reference, training as tr_training

SIGMA_A = {N: pop.SIGMA_A_TIMES_SQRT_N / np.sqrt(N) for N in (100, 500)}


def _lowrank_init():
    dcfg, mcfg = ls_data.DataConfig(), ls_training.ModelConfig()
    return ls_training.init_params(np.random.default_rng(0), dcfg, mcfg), dcfg, mcfg


SETTINGS = [
    # --- Ren, Wang, Lee 2024 (arXiv:2410.23438v1): the two-stage method of Sec. 4 / Fig. 1 ---
    ("two-stage switch tau", lambda: sb_training.Method().tau, 400,
     "Fig. 1: 'After stage 1 ends at tau = 400'"),
    ("two-stage steps eta1, eta2, eta2'", lambda: (sb_training.Method().eta1,
                                                   sb_training.Method().eta2,
                                                   sb_training.Method().eta2_A), (0.03, 0.03, 0.03),
     "project choice (the paper gives no values)"),
    ("two-stage l1 weight lambda", lambda: sb_training.Method().lam, 0.01, "project choice"),
    ("SGD baseline step eta", lambda: sb_training.Method().eta, 0.5,
     "the baseline's large rate eta_2 (Fig. 1 caption: 'when eta_2 is large')"),
    # --- the large-T simulation (the same method at T = 1e5, emulated batches) ---
    ("sigma_V, sigma_A sqrt(N)", lambda: (pop.SIGMA_V, pop.SIGMA_A_TIMES_SQRT_N), (0.7, 1.1),
     "per-entry sd of one preconditioned sample gradient at the truth, measured at T = 50"),
    ("large-T eta_A = 0.1 N", lambda: tuple(pop.defaults_for(N)["eta_A"] / N for N in
                                            (20, 100, 500)), (0.1, 0.1, 0.1),
     "the rule: keeps eta_A ||P||_Sigma^2 ~ 0.13 at every N"),
    ("large-T N = 100: B1, B2, steps",
     lambda: tuple(pop.defaults_for(100)[k] for k in ("B1", "B2", "steps")), (1e8, 1e6, 200),
     "B1 keeps stage 1's noise energy << ||Q*||_mu^2; B2 keeps the l1 bias small"),
    ("large-T N = 500: B1, B2, steps",
     lambda: tuple(pop.defaults_for(500)[k] for k in ("B1", "B2", "steps")), (1e9, 4e6, 100),
     "the same rules at N = 500"),
    ("large-T lambda at N = 100, 500", lambda: (pop.defaults_for(100)["lam"],
                                               pop.defaults_for(500)["lam"]),
     (4 * SIGMA_A[100] / np.sqrt(1e6), 4 * SIGMA_A[500] / np.sqrt(4e6)),
     "lambda = 4 sigma_A / sqrt(B2): off-support entries stay exactly 0 (4.4e-4 and 9.8e-5)"),
    ("large-T Schedule defaults = the N = 100 row",
     lambda: (pop.Schedule().eta_A, pop.Schedule().B1, pop.Schedule().B2, pop.Schedule().lam,
              pop.Schedule().tau, pop.Schedule().eta_V),
     (10.0, 1e8, 1e6, 4.4e-4, 60, 1.0), "eta_V = 1 with the cap 1/||A||_mu^2; tau = 60"),
    # --- Li, Wang, Zhang, Liu, Chen 2024 (arXiv:2406.17167v1): data and initialization ---
    ("low-rank/sparse data d, M, L, n_rel, n_conf, sigma",
     lambda: tuple(getattr(ls_data.DataConfig(), k) for k in ("d", "M", "L", "n_rel", "n_conf",
                                                               "sigma")),
     (20, 10, 20, 8, 2, 0.05),
     "project choice: alpha_* = 0.4, alpha_# = 0.1; every noisy token nearest its own pattern"),
    ("low-rank/sparse W_Q = W_K = 0.5 I, W_V = I",
     lambda: tuple(float(np.abs(_lowrank_init()[0][k] - c * np.eye(20)).max())
                   for k, c in (("W_Q", 0.5), ("W_K", 0.5), ("W_V", 1.0))), (0.0, 0.0, 0.0),
     "project choice: identity blocks (m_a = m_b = d), so attention starts near uniform"),
    ("low-rank/sparse a = +-1/sqrt(m), one row per position",
     lambda: (_lowrank_init()[0]["a"].shape, sorted(set(np.abs(_lowrank_init()[0]["a"]).ravel()))),
     ((20, 64), [1 / np.sqrt(64)]), "project choice: a_l fixed, entries +-1/sqrt(m), m = 64"),
    ("low-rank/sparse W_O entries N(0, xi^2 / m), xi = 0.1",
     lambda: round(float(np.std(ls_training.init_params(
         np.random.default_rng(1), ls_data.DataConfig(), ls_training.ModelConfig(m=4000))["W_O"])
         * np.sqrt(4000)), 2), 0.1, "project choice: W_O small beside the identity blocks"),
    # --- Boix-Adsera et al. 2023 (arXiv:2306.07042 v2) ---
    ("rank-growth App. A toy: n_seq, n, d", lambda: (rg_data.PAPER_N_SEQ, rg_data.PAPER_N_TOKENS,
                                                    rg_data.PAPER_D), (1000, 10, 50),
     "App. A: 1000 fixed samples X in R^{10 x 50}"),
    ("rank-growth diagonal teacher a*, b*", lambda: (rg_data.A_STAR, rg_data.B_STAR),
     ((2.0, -1.5, 0.0, 0.0), (1.0, -0.7, 0.4, 0.0)),
     "project choice: two K/Q and three V/O directions, so the stages are visible"),
    ("transformer Adam beta1, beta2, eps", lambda: (tr_training.BETA1, tr_training.BETA2,
                                                    tr_training.EPS), (0.9, 0.999, 1e-8),
     "Adam at its published defaults (Kingma & Ba 2015), as the paper's Sec. 5 runs it"),
    ("transformer LayerNorm eps", lambda: tr_reference.LN_EPS, 1e-5,
     "project choice: PyTorch's nn.LayerNorm default, so the comparison script agrees"),
]


def _same(got, expected) -> bool:
    """Floats to 1e-12 relative, everything else exactly, entry by entry."""
    if isinstance(expected, (tuple, list)):
        return (isinstance(got, (tuple, list)) and len(got) == len(expected)
                and all(_same(g, e) for g, e in zip(got, expected)))
    if isinstance(expected, float):
        return bool(np.isclose(got, expected, rtol=1e-12, atol=0.0))
    return got == expected


@pytest.mark.parametrize("name, value, expected, why", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_setting(name, value, expected, why):
    got = value()
    assert _same(got, expected), f"{name}: {got} != {expected} ({why})"
