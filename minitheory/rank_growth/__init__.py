"""Transformers learn through gradual rank increase (Boix-Adsera, Littwin, Abbe, Bengio,
Susskind, NeurIPS 2023, arXiv:2306.07042).

With small initialization, an attention head learns in stages. Each stage adds at most one to
the rank of the learned perturbations of W_K W_Q^T and W_V W_O^T; as the init scale goes to
zero, the loss against t / log(1/alpha) converges to a staircase given by an incremental
learning algorithm.

Read in order: ``data`` (inputs, teachers, small init; ``paper_toy`` is the paper's App. A
setting), ``model`` (the head, forward next to
backward), ``training`` (gradient descent on a run axis, conservation law), ``incremental``
(Algorithm 1, the alpha -> 0 limit), ``analysis`` (rescaled time, activation times, ranks).
Demos: ``rank_growth``, ``rank_growth_full``, ``rank_growth_assumptions``.
"""
