"""Shared Hypothesis strategies: sizes per role plus a seed and a scale; the arrays themselves
come from ``np.random.default_rng(seed)`` so that shrinking acts on shapes and a failure replays."""
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
scales = st.floats(0.1, 2.0)
small = st.integers(1, 4)
