"""MiniCPM4-0.5B / MiniCPM4-8B / MiniCPM4.1-8B: model_type `minicpm` with LongRoPE.

    rope_scaling: {rope_type|type: "longrope", short_factor[head_dim/2], long_factor[head_dim/2],
                   original_max_position_embeddings}

edgepack.model.rope applies the factors and the attention factor as MiniCPM4's code does. eos_token_id
may be a list; kv_channels sets head_dim. `sparse_config` (InfLLM-v2 sparse attention) only changes
attention for long contexts: the dense forward exported here is the same model for short ones.
"""
from ..config import Rope, get, validate
from ...errors import ConfigError
from . import minicpm

NAME = "minicpm4"
CONFIG = "model_type minicpm + rope_scaling longrope"
MODELS = "MiniCPM4-0.5B, MiniCPM4-8B, MiniCPM4.1-8B"


def recognises(raw):
    return raw.get("model_type", "minicpm") == "minicpm" and minicpm._scaling_kind(raw) == "longrope"


def parse(raw, path):
    f = minicpm.fields(raw, path)
    f["rope"] = longrope(raw, path, f)
    return validate({**f, "family": NAME, "gguf_arch": "minicpm"}, path)


def longrope(raw, path, f):
    """The Rope of a config's `rope_scaling` longrope block (f: the fields read so far, for head_dim)."""
    s = raw["rope_scaling"]
    hd = f["head_dim"] or f["hidden_size"] // f["num_attention_heads"]
    key = "rope_scaling"
    if not isinstance(s, dict):
        raise ConfigError(path, key, "must be an object with short_factor, long_factor and original_max_position_embeddings")
    orig = get(s, path, "original_max_position_embeddings", int, required=True)
    facs = {}
    for name in ("short_factor", "long_factor"):
        v = s.get(name)
        if not isinstance(v, list) or len(v) != hd // 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v):
            raise ConfigError(path, f"{key}.{name}", f"must be a list of {hd // 2} positive numbers (head_dim/2)")
        facs[name] = tuple(float(x) for x in v)
    return Rope(f["rope_theta"], "longrope", facs["short_factor"], facs["long_factor"], orig)
