"""Fold MiniCPM's μP scalars into the weights: the result is a plain (tied) Llama, exactly.

    embed_tokens × scale_emb
    o_proj, down_proj (an expert's w2) × scale_depth / sqrt(L)
    final norm ÷ (scale_emb × hidden_size/dim_model_base)   (tied head: it reads the scaled table)
    final norm ÷ (hidden_size/dim_model_base)                (untied head)

Each tensor is multiplied by one constant, so block-wise int4 error is unchanged by folding.
"""
from .config import MiniCPMConfig


def fold_scale(cfg: MiniCPMConfig, name):
    """The constant a MiniCPM tensor is multiplied by to become its Llama twin."""
    if name == "model.embed_tokens.weight":
        return cfg.embedding_scale
    if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")) or (".mlp.experts." in name and name.endswith(".w2.weight")):
        return cfg.residual_scale
    if name == "model.norm.weight":
        return 1.0 / (cfg.logit_scale * (cfg.embedding_scale if cfg.tie_word_embeddings else 1.0))
    return 1.0


def folded(ckpt, weights=None):
    """Yield (name, float32 torch tensor) of the folded Llama, one tensor at a time."""
    get = weights or ckpt.torch
    for name in ckpt.names:
        s = fold_scale(ckpt.config, name)
        t = get(name)
        yield name, t if s == 1.0 else t * s


def llama_config(cfg: MiniCPMConfig):
    """transformers' LlamaConfig fields for the folded model."""
    return dict(
        architectures=["LlamaForCausalLM"], model_type="llama",
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings, hidden_act="silu",
        bos_token_id=cfg.bos_token_id, eos_token_id=list(cfg.eos_token_ids),
        attention_bias=False, mlp_bias=False, torch_dtype="float32",
    )
