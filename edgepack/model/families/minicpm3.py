"""MiniCPM3-4B: model_type `minicpm3`, multi-head latent attention (MLA), LongRoPE, μP scalars.

    q:  q_a_proj (H -> q_lora_rank), q_a_layernorm, q_b_proj (-> heads × [nope | rope])
    kv: kv_a_proj_with_mqa (H -> kv_lora_rank + rope), kv_a_layernorm on the latent,
        kv_b_proj (latent -> heads × [k nope | v]); the rope part of k is one head shared by all

as transformers' MiniCPM3ForCausalLM computes it (its q_a/kv_a norms use RMSNorm's default eps 1e-6,
the other norms rms_norm_eps). RoPE rotates only the qk_rope_head_dim trailing dims of each q/k head
(rotate-half within them), with LongRoPE's factors (qk_rope_head_dim/2 of each) as MiniCPM4 has them.
llama.cpp runs it as arch `minicpm3`. head_dim in the description is the q/k head (nope + rope).
"""
from ..config import Rope, common_fields, get, validate
from ...errors import ConfigError, NotSupported
from . import minicpm, minicpm4

NAME = "minicpm3"
CONFIG = "model_type minicpm3"
MODELS = "MiniCPM3-4B"

# What transformers' MiniCPM3Config uses for a key config.json leaves out (tests compare with MiniCPM3Config())
DEFAULTS = {"max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1,
            "eos_token_id": 2, "tie_word_embeddings": True}


def recognises(raw):
    return raw.get("model_type") == "minicpm3"


def parse(raw, path):
    f = common_fields(raw, path, DEFAULTS)
    heads = f["num_attention_heads"]
    if f["num_key_value_heads"] != heads:
        raise NotSupported(f"{path}: num_key_value_heads ({f['num_key_value_heads']}) must equal num_attention_heads "
                           f"({heads}) for multi-head latent attention")
    if raw.get("q_lora_rank", 768) is None:
        raise NotSupported(f"{path}: q_lora_rank null (a dense q_proj) is not supported; MiniCPM3 uses a low-rank q")
    if raw.get("attention_bias"):
        raise NotSupported(f"{path}: attention_bias is true; edgepack's MLA layout has no biases")
    f["q_lora_rank"] = get(raw, path, "q_lora_rank", int, 768)
    f["kv_lora_rank"] = get(raw, path, "kv_lora_rank", int, 256)
    nope = get(raw, path, "qk_nope_head_dim", int, 64)
    f["rope_dim"] = get(raw, path, "qk_rope_head_dim", int, 32)
    f["head_dim"] = nope + f["rope_dim"]
    f["v_head_dim"] = get(raw, path, "v_head_dim", int, 0) or f["hidden_size"] // heads
    if f["rope_dim"] % 2:
        raise ConfigError(path, "qk_rope_head_dim", f"must be even (RoPE rotates pairs), got {f['rope_dim']}")
    # μP: MiniCPM3Config's defaults are MiniCPM3-4B's; null means no scaling
    f["scale_emb"] = get(raw, path, "scale_emb", float, 12.0)
    no_op = {"scale_depth": float(f["num_hidden_layers"]) ** 0.5, "dim_model_base": f["hidden_size"]}
    for key, kind, default in (("scale_depth", float, 1.4), ("dim_model_base", int, 256)):
        f[key] = no_op[key] if key in raw and raw[key] is None else get(raw, path, key, kind, default)
    f["tie_word_embeddings"] = get(raw, path, "tie_word_embeddings", bool, DEFAULTS["tie_word_embeddings"])
    f["attention"] = "mla"
    kind = minicpm._scaling_kind(raw)
    if kind == "longrope":
        f["rope"] = minicpm4.longrope(raw, path, f["rope_theta"], f["rope_dim"])
    elif kind not in (None, "default"):
        raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported (plain RoPE or longrope)")
    else:
        f["rope"] = Rope(f["rope_theta"])
    return validate({**f, "family": NAME, "gguf_arch": "minicpm3"}, path)
