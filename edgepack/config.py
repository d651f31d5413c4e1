"""MiniCPM config.json -> a validated, typed config.

Only the fields the math needs are kept. MiniCPM-2B (MHA, tied), MiniCPM-1B (GQA) and
MiniCPM-2B-128k (untied head) all fit this one shape.
"""
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import BadInput, ConfigError, NotSupported


@dataclass(frozen=True)
class MiniCPMConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    scale_emb: float = 1.0  # μP: embeddings × scale_emb
    dim_model_base: int = 256  # μP: final hidden ÷ (hidden_size / dim_model_base)
    scale_depth: float = 1.0  # μP: residual branches × scale_depth / sqrt(num_hidden_layers)
    tie_word_embeddings: bool = True
    bos_token_id: int = 1
    eos_token_ids: tuple = (2,)

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @property
    def residual_scale(self):
        return self.scale_depth / math.sqrt(self.num_hidden_layers)

    @property
    def logit_scale(self):
        return self.hidden_size / self.dim_model_base

    @property
    def eos_token_id(self):
        return self.eos_token_ids[0]

    def to_dict(self):
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, raw, path="config.json"):
        return _parse(raw, path)

    @classmethod
    def from_file(cls, path):
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"{path}: config.json not found")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadInput(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise BadInput(f"{path}: expected a JSON object at the top level")
        return _parse(raw, path)


_REQUIRED_INT = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def _get(raw, path, key, kind, default=None, required=False):
    if key not in raw or raw[key] is None:
        if required:
            raise ConfigError(path, key, "is missing")
        return default
    v = raw[key]
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(path, key, f"must be an integer, got {v!r}")
        if v <= 0:
            raise ConfigError(path, key, f"must be positive, got {v}")
    elif kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(path, key, f"must be a number, got {v!r}")
        if v <= 0:
            raise ConfigError(path, key, f"must be positive, got {v}")
        v = float(v)
    elif kind is bool and not isinstance(v, bool):
        raise ConfigError(path, key, f"must be true or false, got {v!r}")
    return v


def _parse(raw, path):
    model_type = raw.get("model_type")
    if model_type not in ("minicpm", None):
        raise NotSupported(f"{path}: model_type '{model_type}' is not MiniCPM (expected 'minicpm')")
    f = {k: _get(raw, path, k, int, required=True) for k in _REQUIRED_INT}
    f["num_key_value_heads"] = _get(raw, path, "num_key_value_heads", int, f["num_attention_heads"])
    f["max_position_embeddings"] = _get(raw, path, "max_position_embeddings", int, 4096)
    f["rms_norm_eps"] = _get(raw, path, "rms_norm_eps", float, 1e-5)
    f["rope_theta"] = _get(raw, path, "rope_theta", float, 10000.0)
    f["scale_emb"] = _get(raw, path, "scale_emb", float, 1.0)
    f["dim_model_base"] = _get(raw, path, "dim_model_base", int, 256)
    f["scale_depth"] = _get(raw, path, "scale_depth", float, 1.0)
    f["tie_word_embeddings"] = _get(raw, path, "tie_word_embeddings", bool, True)
    bos = raw.get("bos_token_id", 1)
    if isinstance(bos, bool) or not isinstance(bos, int) or bos < 0:
        raise ConfigError(path, "bos_token_id", f"must be a non-negative integer, got {bos!r}")
    eos = raw.get("eos_token_id", 2)
    eos = eos if isinstance(eos, list) else [eos]
    if not eos or any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in eos):
        raise ConfigError(path, "eos_token_id", f"must be a non-negative integer or a list of them, got {raw.get('eos_token_id')!r}")
    f["bos_token_id"], f["eos_token_ids"] = bos, tuple(eos)

    scaling = raw.get("rope_scaling")
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else scaling
        if kind != "default":
            raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported (only plain RoPE is implemented)")
    if raw.get("hidden_act", "silu") != "silu":
        raise NotSupported(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (MiniCPM uses silu)")

    if f["hidden_size"] % f["num_attention_heads"]:
        raise ConfigError(path, "num_attention_heads", f"({f['num_attention_heads']}) must divide hidden_size ({f['hidden_size']})")
    if f["num_attention_heads"] % f["num_key_value_heads"]:
        raise ConfigError(path, "num_key_value_heads", f"({f['num_key_value_heads']}) must divide num_attention_heads ({f['num_attention_heads']})")
    if (f["hidden_size"] // f["num_attention_heads"]) % 2:
        raise ConfigError(path, "num_attention_heads", "gives an odd head size, which RoPE cannot rotate")
    for k in ("bos_token_id",):
        if f[k] >= f["vocab_size"]:
            raise ConfigError(path, k, f"({f[k]}) is outside the vocabulary (vocab_size {f['vocab_size']})")
    if any(e >= f["vocab_size"] for e in f["eos_token_ids"]):
        raise ConfigError(path, "eos_token_id", f"{list(f['eos_token_ids'])} is outside the vocabulary (vocab_size {f['vocab_size']})")
    return MiniCPMConfig(**f)
