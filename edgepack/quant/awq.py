"""AWQ scaling: per-input-channel scales searched on calibration activations and folded exactly.

s = E|x|^α (α searched per group), w·s quantized, 1/s folded into what feeds the group: the input
RMSNorm weight for q/k/v and gate/up, v_proj rows for o_proj (tied across the query heads of one KV
head under GQA), up_proj rows for down_proj.
"""
import math

import torch

from .blocks import BLOCK, fake


AWQ_GRID = 10              # α ∈ {0, 0.1, ..., 0.9}
AWQ_TOKENS = 256           # activations used to score each α (20 α × 512 tokens: 7 min per 2B layer here)
AWQ_CHUNK = 2 ** 20        # weights per row chunk of the α search (8 MB in float64: stays in cache)


# -- AWQ --------------------------------------------------------------------------------------------
def awq_scales(X, weights, bits=4, sym=True, tie=None, grid=AWQ_GRID, block=BLOCK):
    """Per-input-channel scales s (K,) for linears sharing input X (T, K): s = mean|x|^α with the
    α that minimizes ‖Q(W·s)·(x/s) − W·x‖² summed over the linears. tie (K,) long: channels with
    the same id must share one scale (o_proj's input channels that read one v_proj row under GQA)."""
    xm = X.abs().mean(0)
    if tie is not None:
        n = int(tie.max()) + 1
        z = torch.zeros(n, dtype=xm.dtype)
        xm = z.clone().index_add_(0, tie, xm).div_(z.index_add_(0, tie, torch.ones_like(xm)))[tie]
    ref = [X @ w.T for w in weights]
    best, best_err = torch.ones_like(xm), math.inf
    rows = max(1, AWQ_CHUNK // X.shape[1])
    for a in range(grid):
        s = xm.pow(a / grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        Xs = X / s
        # fake quantization is elementwise (exact in float32 on any CPU); the products and sums are
        # float64. By row chunks: the whole weight's temporaries (64 MB each for the 4B shape's gate|up)
        # were fresh, page-faulting allocations for every α, and 3x slower
        err = 0.0
        for w, r in zip(weights, ref):
            for lo in range(0, len(w), rows):
                wq = fake((w[lo:lo + rows] * s).float(), bits, sym, block=block).to(X.dtype)
                err += float((Xs @ wq.T).sub_(r[:, lo:lo + rows]).pow_(2).sum())
        if err < best_err:
            best, best_err = s, err
    return best


def _gqa_tie(c):
    """o_proj input channel -> the v_proj row it reads (query head h reads KV head h // group)."""
    hd, group = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    j = torch.arange(c.num_attention_heads * hd)
    return (j // hd // group) * hd + j % hd


def _awq_layer(W, norms, X, m, c, tie, block=BLOCK, mlp=True):
    """Search and fold the four AWQ scales of one layer (mlp=False: attention's two, for a mixture-of-experts
    layer); W, norms and X are updated in place, exactly (the float layer computes the same function afterwards)."""
    sub = lambda x: x[:: max(1, len(x) // AWQ_TOKENS)]  # noqa: E731  evenly spaced tokens score α
    q, k, v, o = (f"self_attn.{n}_proj" for n in "qkvo")
    s = awq_scales(sub(X[q]), [W[q], W[k], W[v]], 4, m.sym, block=block)
    norms["input_layernorm"] = norms["input_layernorm"] / s
    for n in (q, k, v):
        W[n] = W[n] * s
    X[q] = X[k] = X[v] = X[q] / s
    s = awq_scales(sub(X[o]), [W[o]], 4, m.sym, tie=tie, block=block)
    sv = torch.ones(W[v].shape[0], dtype=s.dtype).index_copy_(0, tie, s)  # the v_proj row each tied group reads
    W[v] = W[v] / sv[:, None]
    W[o] = W[o] * s
    X[o] = X[o] / s
    if mlp:
        _awq_mlp(W, norms, X, m, block)


def _awq_mlp(W, norms, X, m, block=BLOCK):
    """The MLP's two AWQ scales: gate|up's folded into post_attention_layernorm, down's into up_proj rows."""
    sub = lambda x: x[:: max(1, len(x) // AWQ_TOKENS)]  # noqa: E731
    g, u, d = "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
    s = awq_scales(sub(X[g]), [W[g], W[u]], 4, m.sym, block=block)
    norms["post_attention_layernorm"] = norms["post_attention_layernorm"] / s
    W[g], W[u] = W[g] * s, W[u] * s
    X[g] = X[u] = X[g] / s
    s = awq_scales(sub(X[d]), [W[d]], 4, m.sym, block=block)
    W[u] = W[u] / s[:, None]
    W[d] = W[d] * s
    X[d] = X[d] / s


def _awq_mla_layer(W, norms, X, m, c, tie=None, block=BLOCK, mlp=True):
    """_awq_layer for multi-head latent attention (MiniCPM3): each scale folds exactly into what feeds its
    group: the input norm for q_a|kv_a, q_a_layernorm for q_b, kv_a_layernorm for kv_b, kv_b's v rows for o."""
    sub = lambda x: x[:: max(1, len(x) // AWQ_TOKENS)]  # noqa: E731
    qa, kva, qb, kvb, o = (f"self_attn.{n}" for n in ("q_a_proj", "kv_a_proj_with_mqa", "q_b_proj", "kv_b_proj", "o_proj"))
    for group, norm in (((qa, kva), "input_layernorm"), ((qb,), "self_attn.q_a_layernorm"), ((kvb,), "self_attn.kv_a_layernorm")):
        s = awq_scales(sub(X[group[0]]), [W[n] for n in group], 4, m.sym, block=block)
        norms[norm] = norms[norm] / s
        for n in group:
            W[n] = W[n] * s
        X[group[0]] = X[group[0]] / s
        for n in group[1:]:
            X[n] = X[group[0]]
    s = awq_scales(sub(X[o]), [W[o]], 4, m.sym, block=block)
    nope, vd = c.head_dim - c.rope_dim, c.v_head_dim
    j = torch.arange(c.num_attention_heads * vd)
    v_rows = (j // vd) * (nope + vd) + nope + j % vd  # o_proj input channel -> the kv_b row that makes it
    W[kvb] = W[kvb].index_copy(0, v_rows, W[kvb][v_rows] / s[:, None])
    W[o] = W[o] * s
    X[o] = X[o] / s
    if mlp:
        _awq_mlp(W, norms, X, m, block)
