r"""A pre-LayerNorm transformer as the textbook writes it, every backward beside its forward.

This is the model of Boix-Adsera et al., *Transformers learn through gradual rank increase*
(arXiv 2306.07042 v2), Sec. 5 and App. B, at laptop size: a vision transformer (patches and a
class token) and a character-level language model (tokens and a causal mask). Read it layer by
layer; :mod:`.model` is its fast twin with the same contract, and the tests tie the two.

The residual stream :math:`X \in \mathbb R^{n \times d}` per sample goes through ``depth`` blocks

.. math::
    X \leftarrow X + \mathrm{MHA}(\mathrm{LN}_1(X)), \qquad
    X \leftarrow X + \mathrm{MLP}(\mathrm{LN}_2(X)),

then a final LayerNorm and a linear head. Attention is in the paper's per-head form: head
:math:`h` has :math:`W_Q^h, W_K^h, W_V^h, W_O^h \in \mathbb R^{d \times d_h}` and

.. math::
    \mathrm{MHA}(Y) = \sum_{h=1}^{H} \mathrm{softmax}\!\Big(\frac{(Y W_Q^h)(Y W_K^h)^\top}{\sqrt{d_h}}
    + \mathrm{mask}\Big)\, Y W_V^h (W_O^h)^\top,

so the products the paper tracks are :math:`W_K^h W_Q^{h\top}` and :math:`W_V^h W_O^{h\top}`
(the :math:`1/\sqrt{d_h}` is that of standard ViT and GPT-2; the toy heads of Sec. 3 have none).
The mask is :math:`-\infty` above the diagonal when causal (position :math:`i` sees
:math:`j \le i`), else 0.

Every function is pure: a forward returns ``(output, cache)``, the cache a plain tuple, and the
backward of the same name (``*_backward``) takes the cotangent of the output and the cache and
returns the cotangents of the inputs. Shapes: ``B`` samples, ``n`` tokens, ``d`` width, ``H``
heads of width ``d_h``, ``m`` MLP width.
"""
from __future__ import annotations

import numpy as np

from .checks import check_batch_for

LN_EPS = 1e-5          # [project choice] PyTorch's nn.LayerNorm default, so the two agree
GELU_C = np.sqrt(2.0 / np.pi)
GELU_K = 0.044715     # the cubic coefficient of GELU's tanh form (Hendrycks & Gimpel)


# --------------------------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------------------------
def layer_norm(x, g, b):
    r"""LayerNorm over the last axis, with gain and bias.

    .. math::
        \mu = \tfrac1d \textstyle\sum_i x_i,\quad \sigma^2 = \tfrac1d \sum_i (x_i - \mu)^2,\quad
        \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad y = g \odot \hat x + b,

    :math:`\epsilon = 10^{-5}`. ``x`` ``(..., d)``, ``g, b`` ``(d,)``; returns ``y`` ``(..., d)``.
    """
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + LN_EPS)
    x_hat = (x - mu) * inv_std
    return g * x_hat + b, (x_hat, inv_std, g)


def layer_norm_backward(dy, cache):
    r"""Cotangents of :func:`layer_norm`: with :math:`\bar{\hat x} = g \odot \bar y`,

    .. math::
        \bar x = \frac{1}{\sqrt{\sigma^2+\epsilon}}\Big(\bar{\hat x} - \overline{\bar{\hat x}}
        - \hat x\, \overline{\bar{\hat x} \odot \hat x}\Big),\quad
        \bar g = \textstyle\sum \bar y \odot \hat x,\quad \bar b = \sum \bar y,

    bars over a quantity being its mean over the ``d`` features; the sums for ``g, b`` run over
    every leading axis. Returns ``(dx, dg, db)``.
    """
    x_hat, inv_std, g = cache
    lead = tuple(range(dy.ndim - 1))
    dg = (dy * x_hat).sum(axis=lead)
    db = dy.sum(axis=lead)
    dx_hat = dy * g
    dx = inv_std * (dx_hat - dx_hat.mean(axis=-1, keepdims=True)
                    - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))
    return dx, dg, db


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------
def gelu(u):
    r"""GELU in its tanh approximation (GPT-2's and PyTorch's ``approximate="tanh"``):

    .. math:: \mathrm{gelu}(u) = \tfrac12 u\,\big(1 + \tanh(c\,(u + 0.044715\,u^3))\big),
              \quad c = \sqrt{2/\pi}.
    """
    t = np.tanh(GELU_C * (u + GELU_K * u ** 3))
    return 0.5 * u * (1.0 + t), (u, t)


def gelu_backward(da, cache):
    r""":math:`\mathrm{gelu}'(u) = \tfrac12(1 + t) + \tfrac12 u (1 - t^2)\, c\,(1 + 3 \cdot 0.044715\, u^2)`."""
    u, t = cache
    return da * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t ** 2) * GELU_C * (1.0 + 3 * GELU_K * u ** 2))


def relu(u):
    r""":math:`\mathrm{relu}(u) = \max(u, 0)`."""
    return np.maximum(u, 0.0), (u > 0,)


def relu_backward(da, cache):
    r""":math:`\mathrm{relu}'(u) = 1[u > 0]` (0 at the kink)."""
    (positive,) = cache
    return da * positive


ACTIVATIONS = {"gelu": (gelu, gelu_backward), "relu": (relu, relu_backward)}


# --------------------------------------------------------------------------------------------
# Multi-head attention, per head
# --------------------------------------------------------------------------------------------
def softmax(s):
    r"""Row softmax with the row maximum subtracted: :math:`a_{k} = e^{s_k - \max s} / \sum_j
    e^{s_j - \max s}`. Entries at :math:`-\infty` (masked) get weight 0."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def causal_mask(n):
    r"""``(n, n)`` boolean: ``True`` where query ``i`` may attend to key ``j``, i.e. :math:`j \le i`."""
    return np.tril(np.ones((n, n), dtype=bool))


def attention(y, W_Q, W_K, W_V, W_O, causal):
    r"""Multi-head attention in the per-head form (arXiv 2306.07042 v2, Sec. 5):

    .. math::
        Q^h = Y W_Q^h,\ K^h = Y W_K^h,\ V^h = Y W_V^h,\quad
        A^h = \mathrm{softmax}\big(Q^h K^{h\top} / \sqrt{d_h} + \mathrm{mask}\big),\quad
        \mathrm{out} = \textstyle\sum_h A^h V^h (W_O^h)^\top.

    ``y`` ``(B, n, d)``; ``W_*`` ``(H, d, d_h)``; ``causal`` bool. Returns ``out`` ``(B, n, d)``.
    """
    d_h = W_Q.shape[-1]
    Q = np.einsum("bnd,hde->bhne", y, W_Q)                       # (B, H, n, d_h)
    K = np.einsum("bnd,hde->bhne", y, W_K)
    V = np.einsum("bnd,hde->bhne", y, W_V)
    scores = np.einsum("bhqe,bhke->bhqk", Q, K) / np.sqrt(d_h)   # (B, H, n, n)
    if causal:
        scores = np.where(causal_mask(y.shape[1]), scores, -np.inf)
    A = softmax(scores)
    Z = np.einsum("bhqk,bhke->bhqe", A, V)                       # (B, H, n, d_h)
    out = np.einsum("bhqe,hde->bqd", Z, W_O)                     # sum over heads
    return out, (y, Q, K, V, A, Z, W_Q, W_K, W_V, W_O)


def attention_backward(dout, cache):
    r"""Cotangents of :func:`attention`. With :math:`\bar Z^h = \bar{\mathrm{out}}\, W_O^h`:

    .. math::
        \bar W_O^h = \bar{\mathrm{out}}^\top Z^h,\quad
        \bar A^h = \bar Z^h V^{h\top},\quad \bar V^h = A^{h\top} \bar Z^h,\quad
        \bar S^h = A^h \odot \big(\bar A^h - \mathrm{rowsum}(\bar A^h \odot A^h)\big) / \sqrt{d_h},

    .. math::
        \bar Q^h = \bar S^h K^h,\quad \bar K^h = \bar S^{h\top} Q^h,\quad
        \bar W_\star^h = Y^\top \bar\star^h,\quad
        \bar Y = \textstyle\sum_h \bar Q^h W_Q^{h\top} + \bar K^h W_K^{h\top} + \bar V^h W_V^{h\top},

    summed over the batch. Masked entries have :math:`A = 0`, hence :math:`\bar S = 0`.
    Returns ``(dy, dW_Q, dW_K, dW_V, dW_O)``.
    """
    y, Q, K, V, A, Z, W_Q, W_K, W_V, W_O = cache
    d_h = W_Q.shape[-1]
    dW_O = np.einsum("bqd,bhqe->hde", dout, Z)
    dZ = np.einsum("bqd,hde->bhqe", dout, W_O)
    dA = np.einsum("bhqe,bhke->bhqk", dZ, V)
    dV = np.einsum("bhqk,bhqe->bhke", A, dZ)
    dS = A * (dA - (dA * A).sum(axis=-1, keepdims=True)) / np.sqrt(d_h)
    dQ = np.einsum("bhqk,bhke->bhqe", dS, K)
    dK = np.einsum("bhqk,bhqe->bhke", dS, Q)
    dW_Q = np.einsum("bnd,bhne->hde", y, dQ)
    dW_K = np.einsum("bnd,bhne->hde", y, dK)
    dW_V = np.einsum("bnd,bhne->hde", y, dV)
    dy = (np.einsum("bhne,hde->bnd", dQ, W_Q) + np.einsum("bhne,hde->bnd", dK, W_K)
          + np.einsum("bhne,hde->bnd", dV, W_V))
    return dy, dW_Q, dW_K, dW_V, dW_O


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------
def mlp(y, W_1, b_1, W_2, b_2, activation):
    r"""Two-layer perceptron per token: :math:`\mathrm{MLP}(y) = \phi(y W_1 + b_1) W_2 + b_2`,
    :math:`\phi` = GELU (tanh form) or ReLU. ``y`` ``(B, n, d)``, ``W_1`` ``(d, m)``,
    ``W_2`` ``(m, d)``; returns ``(B, n, d)``."""
    act, _ = ACTIVATIONS[activation]
    u = y @ W_1 + b_1                                            # (B, n, m)
    a, act_cache = act(u)
    return a @ W_2 + b_2, (y, a, act_cache, W_1, W_2, activation)


def mlp_backward(dout, cache):
    r"""Cotangents of :func:`mlp`: :math:`\bar W_2 = a^\top \bar{\mathrm{out}}`,
    :math:`\bar b_2 = \sum \bar{\mathrm{out}}`, :math:`\bar u = \phi'(u) \odot \bar{\mathrm{out}} W_2^\top`,
    :math:`\bar W_1 = y^\top \bar u`, :math:`\bar b_1 = \sum \bar u`, :math:`\bar y = \bar u W_1^\top`.
    Returns ``(dy, dW_1, db_1, dW_2, db_2)``."""
    y, a, act_cache, W_1, W_2, activation = cache
    _, act_backward = ACTIVATIONS[activation]
    dW_2 = np.einsum("bnm,bnd->md", a, dout)
    db_2 = dout.sum(axis=(0, 1))
    du = act_backward(dout @ W_2.T, act_cache)
    dW_1 = np.einsum("bnd,bnm->dm", y, du)
    db_1 = du.sum(axis=(0, 1))
    return du @ W_1.T, dW_1, db_1, dW_2, db_2


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------
def embed_vision(patches, embed, cls, pos):
    r"""ViT input: :math:`X = [\,c;\ P E\,] + \mathrm{pos}`, the class token :math:`c` first, then
    each flattened patch mapped by the patch embedding :math:`E`. ``patches`` ``(B, n-1, p)``,
    ``embed`` ``(p, d)``, ``cls`` ``(d,)``, ``pos`` ``(n, d)``; returns ``(B, n, d)``."""
    B = patches.shape[0]
    tokens = patches @ embed                                     # (B, n - 1, d)
    X = np.concatenate([np.broadcast_to(cls, (B, 1, cls.shape[0])), tokens], axis=1) + pos
    return X, (patches,)


def embed_vision_backward(dX, cache):
    r""":math:`\bar E = \sum_b P_b^\top \bar X_{b,1:}`, :math:`\bar c = \sum_b \bar X_{b,0}`,
    :math:`\bar{\mathrm{pos}} = \sum_b \bar X_b`. Returns ``(d_embed, d_cls, d_pos)``."""
    (patches,) = cache
    return np.einsum("bpi,bpd->id", patches, dX[:, 1:]), dX[:, 0].sum(axis=0), dX.sum(axis=0)


def embed_language(ids, embed, pos):
    r"""Language input: :math:`X_t = E_{x_t} + \mathrm{pos}_t` (row :math:`x_t` of the token
    embedding). ``ids`` int ``(B, n)``, ``embed`` ``(V, d)``, ``pos`` ``(n, d)``; returns ``(B, n, d)``."""
    return embed[ids] + pos, (ids, embed.shape[0])


def embed_language_backward(dX, cache):
    r""":math:`\bar E_v = \sum_{(b,t): x_{b,t} = v} \bar X_{b,t}` (``np.add.at``: repeated ids
    accumulate), :math:`\bar{\mathrm{pos}} = \sum_b \bar X_b`. Returns ``(d_embed, d_pos)``."""
    ids, vocab = cache
    d_embed = np.zeros((vocab, dX.shape[-1]))
    np.add.at(d_embed, ids, dX)
    return d_embed, dX.sum(axis=0)


# --------------------------------------------------------------------------------------------
# Head and loss
# --------------------------------------------------------------------------------------------
def cross_entropy(z, targets):
    r"""Mean cross-entropy of logits ``z`` ``(..., C)`` against integer ``targets`` ``(...)``:

    .. math:: L = \frac1N \sum_i \Big(\log \sum_c e^{z_{ic}} - z_{i, y_i}\Big),\qquad
              \bar z = \frac1N\big(\mathrm{softmax}(z) - e_{y}\big),

    ``N`` the number of rows. Returns ``(loss, dz)``.
    """
    C = z.shape[-1]
    z2, y = z.reshape(-1, C), targets.reshape(-1)
    N = z2.shape[0]
    shifted = z2 - z2.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1))
    loss = np.mean(log_norm - shifted[np.arange(N), y])
    dz = np.exp(shifted - log_norm[:, None])
    dz[np.arange(N), y] -= 1.0
    return float(loss), (dz / N).reshape(z.shape)


# --------------------------------------------------------------------------------------------
# The whole network
# --------------------------------------------------------------------------------------------
def block(x, params, layer, cfg):
    r"""One pre-LN block: :math:`x_1 = x + \mathrm{MHA}(\mathrm{LN}_1(x))`,
    :math:`x_2 = x_1 + \mathrm{MLP}(\mathrm{LN}_2(x_1))`. ``x`` ``(B, n, d)``."""
    p = f"layer{layer}."
    y1, ln1 = layer_norm(x, params[p + "ln1_g"], params[p + "ln1_b"])
    a, att = attention(y1, params[p + "W_Q"], params[p + "W_K"], params[p + "W_V"],
                       params[p + "W_O"], cfg.causal)
    x1 = x + a
    y2, ln2 = layer_norm(x1, params[p + "ln2_g"], params[p + "ln2_b"])
    m, mlp_cache = mlp(y2, params[p + "W_1"], params[p + "b_1"], params[p + "W_2"],
                       params[p + "b_2"], cfg.activation)
    return x1 + m, (ln1, att, ln2, mlp_cache)


def block_backward(dx2, cache, layer):
    r"""Cotangents of :func:`block`; the residual connections pass :math:`\bar x` through
    unchanged and add the branch's. Returns ``(dx, grads of layer``\ :math:`l` ``)``."""
    ln1, att, ln2, mlp_cache = cache
    p = f"layer{layer}."
    g = {}
    dy2, g[p + "W_1"], g[p + "b_1"], g[p + "W_2"], g[p + "b_2"] = mlp_backward(dx2, mlp_cache)
    dx1_branch, g[p + "ln2_g"], g[p + "ln2_b"] = layer_norm_backward(dy2, ln2)
    dx1 = dx2 + dx1_branch
    dy1, g[p + "W_Q"], g[p + "W_K"], g[p + "W_V"], g[p + "W_O"] = attention_backward(dx1, att)
    dx_branch, g[p + "ln1_g"], g[p + "ln1_b"] = layer_norm_backward(dy1, ln1)
    return dx1 + dx_branch, g


def forward(params, inputs, cfg):
    r"""Logits of the network: vision ``(B, n_out)`` from the final LN of the class token,
    :math:`z = \mathrm{LN}_f(X_0) W_{head} + b_{head}`; language ``(B, n, n_out)``, one row per
    position. Returns ``(logits, cache)``."""
    if cfg.task == "vision":
        x, emb = embed_vision(inputs, params["embed"], params["cls"], params["pos"])
    else:
        x, emb = embed_language(inputs, params["embed"], params["pos"])
    blocks = []
    for layer in range(cfg.depth):
        x, c = block(x, params, layer, cfg)
        blocks.append(c)
    top = x[:, 0] if cfg.task == "vision" else x              # (B, d) or (B, n, d)
    y, lnf = layer_norm(top, params["lnf_g"], params["lnf_b"])
    z = y @ params["head"] + params["head_b"]
    return z, (emb, blocks, lnf, y, x.shape)


def backward(params, cache, dz, cfg):
    r"""Gradients of every parameter from the cotangent ``dz`` of the logits (the chain rule
    through :func:`forward`, last layer first). Returns a dict with the keys of ``params``."""
    emb, blocks, lnf, y, x_shape = cache
    lead = tuple(range(dz.ndim - 1))
    grads = {"head": np.tensordot(y, dz, axes=(lead, lead)), "head_b": dz.sum(axis=lead)}
    dtop, grads["lnf_g"], grads["lnf_b"] = layer_norm_backward(dz @ params["head"].T, lnf)
    if cfg.task == "vision":
        dx = np.zeros(x_shape)
        dx[:, 0] = dtop                                         # only the class token is read
    else:
        dx = dtop
    for layer in reversed(range(cfg.depth)):
        dx, g = block_backward(dx, blocks[layer], layer)
        grads.update(g)
    if cfg.task == "vision":
        grads["embed"], grads["cls"], grads["pos"] = embed_vision_backward(dx, emb)
    else:
        grads["embed"], grads["pos"] = embed_language_backward(dx, emb)
    return {k: grads[k] for k in params}


def logits(params, inputs, cfg):
    r"""Checked :func:`forward` without its cache: vision ``(B, n_out)``, language
    ``(B, n_tokens, n_out)``."""
    params, inputs, _ = check_batch_for(params, inputs, None, cfg)
    return forward(params, inputs, cfg)[0]


def loss_and_grads_unchecked(params, inputs, targets, cfg):
    r"""Unchecked :func:`loss_and_grads` (inputs already validated):
    :math:`L = \operatorname{mean}_i \big(\log\sum_c e^{z_{ic}} - z_{i y_i}\big)` and its gradients."""
    z, cache = forward(params, inputs, cfg)
    loss, dz = cross_entropy(z, targets)
    return loss, backward(params, cache, dz, cfg)


def loss_and_grads(params, inputs, targets, cfg):
    r"""Mean cross-entropy :math:`L = \operatorname{mean}_i (\log\sum_c e^{z_{ic}} - z_{i y_i})` of
    the network's logits ``z`` and its gradient for every parameter.

    Parameters
    ----------
    params : dict of float64 arrays, the keys of ``model.init_params(rng, cfg)``.
    inputs : vision: float ``(B, n_tokens - 1, n_in)`` patches; language: int ``(B, n_tokens)``
        token ids in ``[0, n_in)``.
    targets : vision: int ``(B,)`` labels; language: int ``(B, n_tokens)`` next-token ids; in
        ``[0, n_out)``.
    cfg : ``TransformerConfig``.

    Returns
    -------
    loss : float, the mean over samples (vision) or over samples and positions (language).
    grads : dict, every key of ``params``, same shapes.
    """
    params, inputs, targets = check_batch_for(params, inputs, targets, cfg)
    return loss_and_grads_unchecked(params, inputs, targets, cfg)
