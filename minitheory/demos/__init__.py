"""Runnable demos, one module per figure set: ``python -m minitheory.demos.NAME``.

``python -m minitheory.demos`` lists them; ``python -m minitheory.demos --all --out DIR``
regenerates every figure. Each demo takes ``--help``, ``--seed``, ``--out``, ``--show`` and
``--replot``, and writes its figures, ``config.json`` and ``metrics.npz`` to ``--out``.
"""
