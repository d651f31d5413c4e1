"""RoPE tables from the canonical description: plain RoPE and MiniCPM4's LongRoPE, in one place.

    inv_freq_i = theta^(-2i/d)                               i = 0 .. d/2 - 1, d = rope_dim
    LongRoPE:   inv_freq_i / f_i,  f = long_factor if context > original_max_position_embeddings
                                        else short_factor
                cos, sin × sqrt(1 + ln(max_position_embeddings / original) / ln(original))

as MiniCPM4's modeling code computes them (MiniCPMLongRoPE: the factor set is chosen by the length
the cos/sin cache is built for, and the attention factor scales both tables). llama.cpp reads the
same thing from the GGUF: the factors as tensors rope_factors_long/short (picked by n_ctx against
rope.scaling.original_context_length) and the attention factor as rope.scaling.attn_factor.
d is the description's rope_dim: the whole head, or for MiniCPM3's latent attention the 32 rotated
dims of each 96-wide q/k head. Angles are computed in float64 so every CPU builds the same tables.

Dynamic NTK (MiniCPM-2B-128k, kind "dynamic"): Hugging Face raises theta only for sequences longer than
max_position_embeddings, so up to it the tables are plain RoPE; no export goes past it (beyond()).
"""
import math

import numpy as np


def factors(cfg, context=None):
    """The per-frequency divisors used at `context` tokens (None for plain RoPE)."""
    r = cfg.rope
    if r.kind != "longrope":
        return None
    n = cfg.context_length if context is None else context
    return np.asarray(r.long_factor if n > r.original_max_position_embeddings else r.short_factor, np.float64)


def attention_factor(cfg):
    """LongRoPE's scale of cos and sin (1.0 for plain RoPE)."""
    r = cfg.rope
    if r.kind != "longrope":
        return 1.0
    orig = r.original_max_position_embeddings
    return math.sqrt(1 + math.log(cfg.max_position_embeddings / orig) / math.log(orig))


def inv_freq(cfg, context=None):
    """float64 (rope_dim/2,) inverse frequencies, LongRoPE factors applied."""
    hd = cfg.rope_dim
    inv = 1.0 / cfg.rope.theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    f = factors(cfg, context)
    return inv if f is None else inv / f


def llama_cpp_n_ctx(cfg, n):
    """An n_ctx of at least n at which llama.cpp uses the factor set of the exported context: it picks
    long factors when n_ctx exceeds the original context, the export by its own context_length."""
    r = cfg.rope
    if r.kind == "longrope" and cfg.context_length > r.original_max_position_embeddings >= n:
        return r.original_max_position_embeddings + 1
    return n


def beyond(rope, max_positions):
    """What the original model does past max_positions, in words (None when nothing changes there);
    rope is the Rope or its manifest dict."""
    r = rope if isinstance(rope, dict) else {"kind": rope.kind, "factor": rope.factor}
    if r.get("kind") != "dynamic":
        return None
    return (f"dynamic NTK x{r.get('factor', 0):g}: past {max_positions} tokens the original raises theta with the "
            f"sequence length; edgepack exports plain RoPE, exact up to {max_positions} tokens, and no more")


def tables(cfg, n=None, context=None):
    """cos, sin: float64 (n, rope_dim/2) for positions 0..n-1 (n defaults to the context)."""
    n = cfg.context_length if n is None else n
    if cfg.rope.kind == "dynamic" and n > cfg.max_position_embeddings:
        raise ValueError(f"dynamic NTK RoPE is plain only up to {cfg.max_position_embeddings} positions, not {n}")
    ang = np.arange(n, dtype=np.float64)[:, None] * inv_freq(cfg, context)[None]
    a = attention_factor(cfg)
    return np.cos(ang) * a, np.sin(ang) * a
