"""minitheory: small, exact NumPy reproductions of results on how transformers learn.

Subpackages, one per paper, each read in the order data -> model -> training -> analysis:

- :mod:`minitheory.rank_growth` -- Boix-Adsera et al. 2023, "Transformers learn through gradual
  rank increase".
- :mod:`minitheory.lowrank_sparse` -- Li et al. 2024, "Learning on transformers is provable
  low-rank and sparse".
- :mod:`minitheory.sparse_bigrams` -- Ren, Wang, Lee 2024, "Learning and transferring sparse
  contextual bigrams with linear transformers".

Shared pieces: :mod:`minitheory.primitives` (softmax and its VJP), :mod:`minitheory.gradcheck`
(the finite-difference checker), :mod:`minitheory.spectral` (singular values, ranks),
:mod:`minitheory.validation` (input checks, :class:`~minitheory.validation.DivergenceError`).
"""
__version__ = "0.1.0"
