"""Learning on transformers is provable low-rank and sparse (Li, Wang, Zhang, Liu, Chen,
SAM 2024, arXiv:2406.17167v1).

A one-layer softmax transformer trained by SGD on data made of orthogonal patterns has rank-2
updates of W_Q, W_K, W_V (one per label-relevant pattern), and a sparse W_O: many of its rows
stay at initialization, so pruning them by magnitude costs almost nothing.

Read in order: ``data`` (patterns and the sampler), ``reference`` (the transformer with hinge
loss as the paper writes it, forward next to backward; start here), ``model`` (its fast twin),
``checks`` (input checks), ``training`` (SGD with seeds on a run axis), ``analysis``
(evaluation, rank-r truncation of all trained matrices, update spectra, pruning). Demo: ``lowrank_sparse``.
"""
