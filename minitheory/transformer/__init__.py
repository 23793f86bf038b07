"""A small transformer with every gradient written by hand, for the second half of
*Transformers learn through gradual rank increase* (Boix-Adsera, Littwin, Abbe, Bengio,
Susskind, NeurIPS 2023, arXiv:2306.07042 v2, Sec. 5 and App. B): trained vision and language
transformers learn perturbations of :math:`W_K^h W_Q^{h\\top}` and :math:`W_V^h W_O^{h\\top}` of low,
gradually growing stable rank.

Read in order: ``data`` (the 8x8 digits shipped in the package, character text from
``pydoc_data``), ``reference`` (each layer as the textbook writes it, forward beside backward),
``model`` (the configuration, the initialization and the fast twin), ``checks`` (input checks),
``training`` (Adam and SGD with warmup and cosine decay on the shared loop), ``analysis`` (the
spectra of the per-head perturbations). Demo: ``rank_growth_transformer``.
"""
