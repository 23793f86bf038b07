"""Input checks for the transformer: a configuration that cannot work, parameters of the wrong
shape, inputs out of range or non-finite are refused here, with an error naming the field.

The models in :mod:`.reference` and :mod:`.model` call :func:`check_config` from
``TransformerConfig.__post_init__`` and :func:`check_batch` from their checked entry points; the
``*_unchecked`` cores assume both have passed.
"""
from __future__ import annotations

import numpy as np

from ..validation import check_int, check_types

TASKS = ("vision", "language")
ACTIVATIONS = ("gelu", "relu")


def check_config(cfg) -> None:
    """Validate every field of a ``TransformerConfig``; raise naming the first bad one.

    ``heads * d_h`` need not equal ``d``: in the per-head form each head maps ``d -> d_h -> d``
    on its own (arXiv 2306.07042 v2, Sec. 5), so only ``heads >= 1`` and ``d_h >= 1`` are needed.
    """
    check_types(cfg)
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    check_int("n_tokens", cfg.n_tokens, low=2 if cfg.task == "vision" else 1)
    check_int("n_in", cfg.n_in, low=1)
    check_int("n_out", cfg.n_out, low=1)
    if cfg.task == "language" and cfg.n_in != cfg.n_out:
        raise ValueError(f"n_out must equal n_in (the vocabulary size) for task='language', got "
                         f"n_in={cfg.n_in}, n_out={cfg.n_out}")
    for name in ("d", "heads", "d_h", "depth", "d_mlp"):
        check_int(name, getattr(cfg, name), low=1)
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {cfg.activation!r}")
    if cfg.causal is not None and not isinstance(cfg.causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True, False or None, got {type(cfg.causal).__name__} "
                        f"{cfg.causal!r}")


def param_shapes(cfg) -> dict:
    """The shape of every parameter, in the order of the keys (see ``model.init_params``)."""
    H, d, dh = cfg.heads, cfg.d, cfg.d_h
    shapes = {"embed": (cfg.n_in, d)}
    if cfg.task == "vision":
        shapes["cls"] = (d,)
    shapes["pos"] = (cfg.n_tokens, d)
    for l in range(cfg.depth):
        p = f"layer{l}."
        shapes.update({p + "ln1_g": (d,), p + "ln1_b": (d,),
                       p + "W_Q": (H, d, dh), p + "W_K": (H, d, dh),
                       p + "W_V": (H, d, dh), p + "W_O": (H, d, dh),
                       p + "ln2_g": (d,), p + "ln2_b": (d,),
                       p + "W_1": (d, cfg.d_mlp), p + "b_1": (cfg.d_mlp,),
                       p + "W_2": (cfg.d_mlp, d), p + "b_2": (d,)})
    shapes.update({"lnf_g": (d,), "lnf_b": (d,), "head": (d, cfg.n_out), "head_b": (cfg.n_out,)})
    return shapes


def check_params(params, cfg) -> dict:
    """Return ``params`` as float64 arrays if it has exactly the keys and shapes of ``cfg``
    (every value finite), else raise naming the key."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    shapes = param_shapes(cfg)
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(f"params must have the keys of init_params(cfg); missing {missing}, "
                         f"unexpected {extra}")
    out = {}
    for key, shape in shapes.items():
        arr = np.asarray(params[key])
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"params[{key!r}] must hold real numbers, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape}, got {arr.shape}")
        arr = arr.astype(np.float64, copy=False)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"params[{key!r}] must contain only finite values")
        out[key] = arr
    return out


def check_inputs(inputs, cfg) -> np.ndarray:
    """Vision: finite float patches ``(B, n_tokens - 1, n_in)``; language: int token ids
    ``(B, n_tokens)`` in ``[0, n_in)``. ``B >= 1``. Returns the checked array."""
    arr = np.asarray(inputs)
    if cfg.task == "vision":
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"inputs must be real patch values, got dtype {arr.dtype}")
        want = (cfg.n_tokens - 1, cfg.n_in)
        if arr.ndim != 3 or arr.shape[1:] != want or arr.shape[0] < 1:
            raise ValueError(f"inputs must have shape (B, n_tokens - 1, n_in) = (B, {want[0]}, "
                             f"{want[1]}) with B >= 1, got {arr.shape}")
        arr = arr.astype(np.float64, copy=False)
        if not np.all(np.isfinite(arr)):
            raise ValueError("inputs must contain only finite values")
        return arr
    if arr.dtype.kind not in "iu":
        raise TypeError(f"inputs must hold integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != cfg.n_tokens or arr.shape[0] < 1:
        raise ValueError(f"inputs must have shape (B, n_tokens) = (B, {cfg.n_tokens}) with "
                         f"B >= 1, got {arr.shape}")
    if arr.min() < 0 or arr.max() >= cfg.n_in:
        raise ValueError(f"inputs hold token ids outside [0, n_in) = [0, {cfg.n_in})")
    return arr.astype(np.intp, copy=False)


def check_targets(targets, batch: int, cfg) -> np.ndarray:
    """Vision: int labels ``(B,)`` in ``[0, n_out)``; language: int next-token ids
    ``(B, n_tokens)`` in ``[0, n_out)``."""
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must hold integer class or token ids, got dtype {arr.dtype}")
    want = (batch,) if cfg.task == "vision" else (batch, cfg.n_tokens)
    if arr.shape != want:
        name = "(B,)" if cfg.task == "vision" else "(B, n_tokens)"
        raise ValueError(f"targets must have shape {name} = {want} (B from inputs), got "
                         f"{arr.shape}")
    if arr.min() < 0 or arr.max() >= cfg.n_out:
        raise ValueError(f"targets hold ids outside [0, n_out) = [0, {cfg.n_out})")
    return arr.astype(np.intp, copy=False)


def check_config_type(cfg) -> None:
    """``cfg`` must be a ``TransformerConfig`` (checked by duck type: its fields)."""
    needed = ("task", "n_tokens", "n_in", "n_out", "d", "heads", "d_h", "depth", "d_mlp",
              "activation", "causal")
    if not all(hasattr(cfg, name) for name in needed):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")


def check_batch_for(params, inputs, targets, cfg):
    """Check ``cfg``, ``params``, ``inputs`` and (unless ``None``) ``targets`` together; return
    ``(params, inputs, targets)`` as float64 / integer arrays."""
    check_config_type(cfg)
    params = check_params(params, cfg)
    inputs = check_inputs(inputs, cfg)
    if targets is not None:
        targets = check_targets(targets, inputs.shape[0], cfg)
    return params, inputs, targets
