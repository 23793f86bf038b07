"""minitheory: small, exact NumPy reproductions of results on how transformers learn.

Subpackages, one per paper, each read in the order data -> reference (the equations as the paper
writes them; the fast twins in ``model`` are tested equal to them) -> training -> analysis:

- :mod:`minitheory.rank_growth` -- Boix-Adsera et al. 2023, "Transformers learn through gradual
  rank increase".
- :mod:`minitheory.lowrank_sparse` -- Li et al. 2024, "Learning on transformers is provable
  low-rank and sparse".
- :mod:`minitheory.sparse_bigrams` -- Ren, Wang, Lee 2024, "Learning and transferring sparse
  contextual bigrams with linear transformers".
- :mod:`minitheory.transformer` -- Sec. 5 and App. B of Boix-Adsera et al.: a hand-written
  pre-LayerNorm transformer trained on real digits and text.

Shared pieces: :mod:`minitheory.primitives` (softmax and its VJP), :mod:`minitheory.gradcheck`
(the finite-difference checker), :mod:`minitheory.spectral` (singular values, ranks),
:mod:`minitheory.validation` (input checks, :class:`~minitheory.validation.DivergenceError`),
:mod:`minitheory.loop` (the one training loop every trainer runs on).
"""
from .allocator import warm_heap as _warm_heap

__version__ = "0.1.0"
_warm_heap()    # freed temporaries stay in the process: see minitheory.allocator
