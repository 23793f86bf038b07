"""Learning and transferring sparse contextual bigrams with linear transformers (Ren, Wang, Lee,
NeurIPS 2024, arXiv:2410.23438).

The next token depends on a sparse set of earlier positions chosen by the last token. A
one-layer linear transformer learns it with an l1-regularized proximal method in two stages
(a sample-intensive one, then a fast one), where SGD stalls; finetuning from a related task
skips the first stage.

Read in order: ``data`` (instances and the sampler), ``reference`` (the sample and closed-form
population losses and gradients and the large-T step as the paper writes them; start here),
``model`` (their fast twins), ``checks`` (input checks), ``training`` (two-stage proximal method, SGD, softmax model),
``analysis`` (distances, signals, support), ``population`` (large-T dynamics with gradient noise).
Demos: ``sparse_bigrams``, ``bigram_transfer``, ``softmax_vs_linear``, ``bigram_scale``.
"""
