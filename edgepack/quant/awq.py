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
    for a in range(grid):
        s = xm.pow(a / grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        # fake quantization is elementwise (exact in float32 on any CPU); the products and sums are float64
        err = sum(float((((X / s) @ fake((w * s).float(), bits, sym, block=block).to(X.dtype).T) - r).pow(2).sum())
                  for w, r in zip(weights, ref))
        if err < best_err:
            best, best_err = s, err
    return best


def _gqa_tie(c):
    """o_proj input channel -> the v_proj row it reads (query head h reads KV head h // group)."""
    hd, group = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    j = torch.arange(c.num_attention_heads * hd)
    return (j // hd // group) * hd + j % hd


def _awq_layer(W, norms, X, m, c, tie, block=BLOCK):
    """Search and fold the four AWQ scales of one layer; W, norms and X are updated in place, exactly
    (the float layer computes the same function afterwards)."""
    sub = lambda x: x[:: max(1, len(x) // AWQ_TOKENS)]  # noqa: E731  evenly spaced tokens score α
    q, k, v, o = (f"self_attn.{n}_proj" for n in "qkvo")
    g, u, d = "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
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
    s = awq_scales(sub(X[g]), [W[g], W[u]], 4, m.sym, block=block)
    norms["post_attention_layernorm"] = norms["post_attention_layernorm"] / s
    W[g], W[u] = W[g] * s, W[u] * s
    X[g] = X[u] = X[g] / s
    s = awq_scales(sub(X[d]), [W[d]], 4, m.sym, block=block)
    W[u] = W[u] / s[:, None]
    W[d] = W[d] * s
    X[d] = X[d] / s
