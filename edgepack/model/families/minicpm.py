"""MiniCPM-1B / MiniCPM-2B (-sft, -dpo, -128k): model_type `minicpm`, plain RoPE, μP scalars.

Every value comes from config.json: GQA (1B), an untied head (2B-128k), the μP constants
scale_emb, dim_model_base and scale_depth. llama.cpp runs it as arch `minicpm` with the scalars as keys.

MiniCPM-2B-128k: rope_scaling {"type": "dynamic", "factor": 4}, rope_theta 1e6, 65536 positions. Dynamic
NTK scaling (the Hugging Face rule) only changes theta for sequences longer than max_position_embeddings,
so up to it the model is plain RoPE and that is what is exported; the context can never exceed it
(llama.cpp's minicpm arch ignores the scaling as well). The default exported context is DYNAMIC_CONTEXT:
the whole 65536 would need a 22.5 GiB float16 KV cache, 4096 needs 1.41 GiB (edgepack inspect).

MiniCPM-MoE-8x2B: the same config plus num_experts (8) and num_experts_per_tok (2); each layer's MLP is
mlp.gate (the router, num_experts x hidden) and mlp.experts.N.w1/w3/w2 (gate/up/down of a SwiGLU expert).
"""
from ...errors import ConfigError, NotSupported
from ..config import Rope, common_fields, get, validate

NAME = "minicpm"
CONFIG = "model_type minicpm"
MODELS = ("MiniCPM-1B, MiniCPM-2B(-sft/-dpo), MiniCPM-2B-128k (dynamic NTK: plain RoPE up to its 65536 positions), "
          "MiniCPM-MoE-8x2B (num_experts/num_experts_per_tok)")
DYNAMIC_CONTEXT = 4096  # default exported context of a dynamic-NTK model (--context up to max_position_embeddings)

# What MiniCPM's own MiniCPMConfig (configuration_minicpm.py, the remote code its checkpoints ship;
# github.com/OpenBMB/MiniCPM model/configuration_minicpm.py) uses for a key config.json leaves out.
# Its μP defaults (scale_emb 1, dim_model_base 1, scale_depth 1) are not taken: every published config
# carries all three, so a config without one is refused (MUP_KEYS) rather than turned into another model.
DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 1,
            "eos_token_id": 2, "tie_word_embeddings": True}
MUP_KEYS = (("scale_emb", float), ("dim_model_base", int), ("scale_depth", float))


def _scaling_kind(raw):
    s = raw.get("rope_scaling")
    if s is None:
        return None
    return s.get("rope_type", s.get("type")) if isinstance(s, dict) else s


def recognises(raw):  # after minicpm4 (LongRoPE); other scalings get parse's clear refusal
    return raw.get("model_type", "minicpm") == "minicpm"


def fields(raw, path):
    """MiniCPM's fields: the common ones, μP, head_dim (kv_channels), tie."""
    f = common_fields(raw, path, DEFAULTS)
    # MiniCPM4's code gates all three scalars on use_mup (default on: MiniCPM-2B has no such key)
    f["use_mup"] = get(raw, path, "use_mup", bool, True)
    for key, kind in MUP_KEYS:  # without μP they are unused (identity), so only then may they be absent
        if f["use_mup"] and raw.get(key) is None:
            raise ConfigError(path, key, "is missing (one of MiniCPM's three μP scalars; use_mup is on)")
        if raw.get(key) is not None:
            f[key] = get(raw, path, key, kind)
    f["tie_word_embeddings"] = get(raw, path, "tie_word_embeddings", bool, DEFAULTS["tie_word_embeddings"])
    f["head_dim"] = get(raw, path, "kv_channels", int, 0) or get(raw, path, "head_dim", int, 0)
    if raw.get("num_experts"):  # MiniCPM-MoE-8x2B: 8 experts, 2 per token, router mlp.gate
        f["num_experts"] = get(raw, path, "num_experts", int)
        f["num_experts_per_tok"] = get(raw, path, "num_experts_per_tok", int, required=True)
    return f


def parse(raw, path):
    kind = _scaling_kind(raw)
    f = fields(raw, path)
    if kind == "dynamic":
        if not isinstance(raw["rope_scaling"], dict):
            raise ConfigError(path, "rope_scaling", "must be an object with type and factor")
        factor = get({"rope_scaling.factor": raw["rope_scaling"].get("factor")}, path, "rope_scaling.factor", float,
                     required=True)
        f["rope"] = Rope(f["rope_theta"], "dynamic", factor=factor)
        f["context_length"] = min(f["max_position_embeddings"], DYNAMIC_CONTEXT)
    elif kind not in (None, "default"):
        raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported (plain RoPE, dynamic NTK "
                           "or MiniCPM4's longrope)")
    return validate({**f, "family": NAME, "gguf_arch": "minicpm"}, path)
