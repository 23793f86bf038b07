"""Learning on transformers is provable low-rank and sparse (Li, Wang, Zhang, Liu, Chen,
SAM 2024, arXiv:2406.17167).

A one-layer softmax transformer trained by SGD on data made of orthogonal patterns has rank-2
updates of W_Q, W_K, W_V (one per label-relevant pattern), and a sparse W_O: many of its rows
stay at initialization, so pruning them by magnitude costs almost nothing.

Read in order: ``data`` (patterns and the sampler), ``model`` (the transformer with hinge loss,
forward next to backward), ``training`` (SGD with seeds on a run axis), ``analysis`` (evaluation,
rank-r truncation, pruning). Demo: ``lowrank_sparse``.
"""
