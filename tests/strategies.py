"""Shared Hypothesis strategies: sizes per role plus a seed and a scale; the arrays themselves
come from ``np.random.default_rng(seed)`` so that shrinking acts on shapes and a failure replays."""
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
scales = st.floats(0.1, 2.0)
small = st.integers(1, 4)


def contract_runs(loss_and_grads, R, cot):
    """A scalar function for the gradient checker from ``params -> (loss, grads)``.

    Without a run axis (``R is None``) it is returned as is; with one, the per-run losses are
    contracted with the random cotangent ``cot`` ``(R,)`` (never with ones), and each run's
    gradients scaled by its weight.
    """
    def f(params):
        loss, grads = loss_and_grads(params)
        if R is None:
            return loss, grads
        return float(cot @ loss), {k: cot.reshape((-1,) + (1,) * (g.ndim - 1)) * g
                                   for k, g in grads.items()}
    return f
