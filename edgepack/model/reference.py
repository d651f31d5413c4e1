"""The MiniCPM float reference forward, in one file: the ground truth every export is measured against.

MiniCPM is a Llama with three μP scalars (DESIGN.md): embeddings × scale_emb, each residual branch
× scale_depth/sqrt(L), final hidden ÷ (hidden_size/dim_model_base) before the (tied) head. It reads
only the canonical DecoderConfig (edgepack.model.config), so every family runs through this one forward:
a family without μP has the three factors at 1.0, LongRoPE comes in through edgepack.model.rope, and
MiniCPM3's multi-head latent attention (attention "mla") is its own small module beside the plain one.
Module and tensor names follow the Hugging Face checkpoint, so loading is a name-for-name copy.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MiniCPMConfig


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos, c):
    """Rotate-half RoPE (the Hugging Face convention). x: (B, heads, T, hd), pos: (T,).

    Frequencies and LongRoPE's factors come from edgepack.model.rope (the tables every writer uses)."""
    from . import rope as tables

    hd = x.shape[-1]
    if c.rope.kind == "dynamic" and pos[-1] >= c.max_position_embeddings:
        raise ValueError(f"dynamic NTK RoPE is plain only up to {c.max_position_embeddings} positions")
    # angles in float64, then x's dtype: the same tables on every CPU (float32 SIMD cos/sin are not)
    ang = pos[:, None].double() * torch.from_numpy(tables.inv_freq(c))[None]  # (T, hd/2)
    a = tables.attention_factor(c)
    cos, sin = (torch.cat([f(ang) * a] * 2, -1).to(x.dtype) for f in (torch.cos, torch.sin))
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.c, hd = c, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)

    def forward(self, x, pos, cache):
        B, T, _ = x.shape
        c, hd = self.c, self.c.head_dim
        q = self.q_proj(x).view(B, T, c.num_attention_heads, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, c.num_key_value_heads, hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, c.num_key_value_heads, hd).transpose(1, 2)
        q, k = rope(q, pos, c), rope(k, pos, c)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, nkv, past+T, hd)
        S = k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)  # query t sees keys up to past+t
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class LatentAttention(nn.Module):
    """MiniCPM3's multi-head latent attention, as transformers' MiniCPM3Attention computes it.

    q goes through a rank-q_lora_rank bottleneck; k and v are decompressed from a rank-kv_lora_rank
    latent. Each q/k head is [nope | rope]: RoPE rotates only its rope_dim trailing dims, and the rope
    part of k is one head shared by all. Scores are scaled by 1/sqrt(nope + rope); v heads are v_head_dim
    wide. The cache holds the decompressed k and v (what llama.cpp and the ONNX graph keep too)."""

    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.c, n, hd = c, c.num_attention_heads, c.head_dim
        self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.latent_norm_eps)
        self.q_b_proj = nn.Linear(c.q_lora_rank, n * hd, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.rope_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.latent_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, n * (c.nope_dim + c.v_head_dim), bias=False)
        self.o_proj = nn.Linear(n * c.v_head_dim, c.hidden_size, bias=False)

    def forward(self, x, pos, cache):
        B, T, _ = x.shape
        c, n, r = self.c, self.c.num_attention_heads, self.c.rope_dim
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, T, n, c.head_dim).transpose(1, 2)
        q_nope, q_rope = q.split([c.nope_dim, r], -1)  # (B, n, T, nope), (B, n, T, rope)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, r], -1)  # (B, T, kv_lora), (B, T, rope)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent)).view(B, T, n, c.nope_dim + c.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([c.nope_dim, c.v_head_dim], -1)  # (B, n, T, nope), (B, n, T, v_head_dim)
        k_rope = rope(k_rope[:, None], pos, c).expand(B, n, T, r)  # one rotated key part, shared by all heads
        q = torch.cat([q_nope, rope(q_rope, pos, c)], -1)
        k = torch.cat([k_nope, k_rope], -1)  # (B, n, T, nope + rope)
        if cache is not None:
            k, v = cache.append(k, v)
        S = k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool).tril(S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(nope + rope)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, n * c.v_head_dim))


class MLP(nn.Module):
    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Expert(nn.Module):
    """One SwiGLU expert of a mixture-of-experts MLP, under MiniCPM-MoE's names: w2(silu(w1 x) * w3 x)."""

    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.w1 = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)  # gate
        self.w3 = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)  # up
        self.w2 = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def route(logits, k, renormalize=True):
    """Router logits (N, E) -> (weights (N, k), expert ids (N, k)): softmax over all experts, the top k,
    renormalised to sum to 1 (vLLM's fused_topk(renormalize=True), llama.cpp's SOFTMAX + norm_w).
    A softmax over the top-k logits alone is the same thing (what onnxruntime's QMoE computes)."""
    w, idx = torch.softmax(logits.float(), -1).topk(k, -1)
    return (w / w.sum(-1, keepdim=True) if renormalize else w), idx


class MoE(nn.Module):
    """mlp.gate (the router) and mlp.experts.N: each token's output is the weighted sum of its k experts."""

    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.k = c.num_experts_per_tok
        self.gate = nn.Linear(c.hidden_size, c.num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(c) for _ in range(c.num_experts))

    def forward(self, x):
        shape, x = x.shape, x.reshape(-1, x.shape[-1])  # (N, H)
        w, idx = route(self.gate(x), self.k)  # (N, k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)  # the tokens routed to e, and where
            if len(tok):
                out.index_add_(0, tok, expert(x[tok]) * w[tok, slot, None].to(x.dtype))
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = (LatentAttention if c.attention == "mla" else Attention)(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MoE(c) if c.num_experts else MLP(c)
        self.residual_scale = c.residual_scale

    def forward(self, x, pos, cache):
        x = x + self.self_attn(self.input_layernorm(x), pos, cache) * self.residual_scale
        return x + self.mlp(self.post_attention_layernorm(x)) * self.residual_scale


class KVCache:
    """Per-layer key/value tensors that grow by concatenation (readable, not fast)."""

    def __init__(self, n_layers):
        self.layers, self.length = [None] * n_layers, 0

    def for_layer(self, i):
        cache = self

        class _Layer:
            def append(self, k, v):
                if cache.layers[i] is not None:
                    k = torch.cat([cache.layers[i][0], k], 2)
                    v = torch.cat([cache.layers[i][1], v], 2)
                cache.layers[i] = (k, v)
                return k, v

        return _Layer()


class MiniCPM(nn.Module):
    def __init__(self, c: MiniCPMConfig):
        super().__init__()
        self.config = c
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.model.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.model.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    @torch.no_grad()
    def embed(self, ids, rows=None):
        """Input embeddings (1, T, H) for a list of ids: tokens × embedding_scale; a negative id -1 - r takes
        image row r of `rows` (MiniCPM-V's splice), unscaled (edgepack.runtime.vision writes prompts so)."""
        t = torch.tensor([max(int(i), 0) for i in ids])
        x = self.model.embed_tokens(t) * self.config.embedding_scale
        img = [k for k, i in enumerate(ids) if i < 0]
        if img:
            x[img] = torch.as_tensor(rows, dtype=x.dtype)[[-1 - int(ids[k]) for k in img]]
        return x[None]

    @torch.no_grad()
    def forward(self, ids, cache=None, x=None):
        """ids: (B, T) int64 -> logits (B, T, vocab) float32. With a cache, continues after it.
        x: input embeddings (B, T, H) instead of ids (from embed())."""
        c, m = self.config, self.model
        past = cache.length if cache is not None else 0
        T = ids.shape[1] if x is None else x.shape[1]
        pos = torch.arange(past, past + T)
        x = m.embed_tokens(ids) * c.embedding_scale if x is None else x
        for i, block in enumerate(m.layers):
            x = block(x, pos, cache.for_layer(i) if cache is not None else None)
        x = m.norm(x) / c.logit_scale
        if cache is not None:
            cache.length += T
        head = m.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return x @ head.T

    @classmethod
    def from_checkpoint(cls, ckpt, weights=None):
        """Build from a Checkpoint; `weights(name) -> float32 tensor` may replace ckpt.torch (fake-quant)."""
        with torch.device("meta"):
            model = cls(ckpt.config)
        get = weights or ckpt.torch
        for name in ckpt.names:
            model._set(name, get(name))
        return model.eval()

    def _set(self, name, tensor):
        *path, leaf = name.split(".")
        mod = self
        for p in path:
            mod = getattr(mod, p)
        setattr(mod, leaf, nn.Parameter(tensor.float(), requires_grad=False))


def load_reference(path_or_ckpt):
    from .checkpoint import Checkpoint, load

    ckpt = path_or_ckpt if isinstance(path_or_ckpt, Checkpoint) else load(path_or_ckpt)
    return MiniCPM.from_checkpoint(ckpt)


@torch.no_grad()
def greedy(model, ids, n, eos_ids=()):
    """Reference greedy decoding with the KV cache (for conformance tests)."""
    cache = KVCache(model.config.num_hidden_layers)
    logits = model(torch.tensor([ids]), cache)
    out = []
    for _ in range(n):
        t = int(logits[0, -1].argmax())
        if t in eos_ids:
            break
        out.append(t)
        logits = model(torch.tensor([[t]]), cache)
    return out


