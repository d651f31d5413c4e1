"""The canonical decoder description: what every stage after loading reads, whatever the family.

A model family (edgepack.model.families) recognises a Hugging Face config.json and maps it to one
DecoderConfig: a pre-norm Llama-style decoder (RMSNorm, SwiGLU, RoPE attention with GQA) with

- explicit head_dim (MiniCPM4's kv_channels, MiniCPM5's head_dim; else hidden/heads),
- MiniCPM's three μP scalars as *effective* factors (1.0 for a family without μP):
  embedding_scale, residual_scale, logit_scale,
- the RoPE description (edgepack.model.rope: plain, LongRoPE's per-frequency factors, or dynamic NTK,
  which is plain RoPE up to max_position_embeddings and is exported only that far),
- bos/eos ids (eos may be several), a tied or untied head,
- experts (count, used per token) for a mixture-of-experts MLP, 0 for a dense one,
- gguf_arch: the llama.cpp architecture the family's GGUF uses,
- the attention kind: "gqa" (q/k/v projections) or "mla" (MiniCPM3's multi-head latent attention:
  q through a rank-q_lora_rank bottleneck, k and v decompressed from a rank-kv_lora_rank latent, each
  q/k head [nope | rope] with only rope_dim dims rotated and the rope part of k shared by all heads,
  v heads v_head_dim wide). For "mla", head_dim is the q/k head width (nope + rope),
- for MiniCPM-V, the image path (VisionConfig): tower, resampler and slicing sizes.

The reference forward, the quantizer and both writers consume this and nothing family-specific.
Only the fields the math needs are kept; the tensors are the Hugging Face names of
edgepack.model.checkpoint.expected_shapes.
"""
import math
from dataclasses import asdict, dataclass, replace

from ..errors import ConfigError


@dataclass(frozen=True)
class Rope:
    """RoPE: theta, and LongRoPE's factors when kind == "longrope" (edgepack.model.rope computes the tables)."""

    theta: float = 10000.0
    kind: str = "default"            # "default" | "longrope" | "dynamic"
    short_factor: tuple = ()          # head_dim/2 divisors of the inverse frequencies (context <= original)
    long_factor: tuple = ()           # ... (context > original)
    original_max_position_embeddings: int = 0
    # dynamic NTK (MiniCPM-2B-128k): past max_position_embeddings the original raises theta by this factor's
    # rule; up to it the rotation is plain RoPE, and no export goes past it (the manifest records the factor)
    factor: float = 0.0


@dataclass(frozen=True)
class VisionConfig:
    """A MiniCPM-V image path (edgepack.model.vision): SigLIP tower -> resampler -> LLM-width rows.

    Slices of up to max_slices (+ an overview) of ~slice_size² pixels, patch_size patches, a learned
    position_grid² table read by bucketed NaViT coordinates ("bucketed", 4.0) or resized to the slice
    ("interpolated", 2.0); query_num rows per slice from one cross-attention of resampler_heads 128-wide
    heads (2.0 adds a sin-cos grid to the queries: query_pos). layout: the prompt's slice markers ("4.0"
    or "2.0"); minicpmv_version: llama.cpp mtmd's number for it (0: no llama.cpp route)."""

    version: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int  # after drop_vision_last_layer
    num_attention_heads: int
    embed_dim: int  # the LLM's hidden size
    resampler_heads: int
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    position: str = "bucketed"  # "bucketed" | "interpolated"
    position_grid: int = 70
    query_num: int = 64
    query_pos: bool = False
    slice_size: int = 448
    max_slices: int = 9
    slice_mode: bool = True
    use_image_id: bool = True
    layout: str = "4.0"
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    minicpmv_version: int = 0

    def __post_init__(self):
        object.__setattr__(self, "image_mean", tuple(self.image_mean))
        object.__setattr__(self, "image_std", tuple(self.image_std))


@dataclass(frozen=True)
class DecoderConfig:
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
    head_dim: int = 0  # 0: hidden_size // num_attention_heads
    use_mup: bool = True  # False: the three μP scalars are identity (a Llama)
    rope: Rope = None  # None: Rope(rope_theta)
    context_length: int = 0  # the exported context (ONNX caches, LongRoPE factor choice); 0: max_position_embeddings
    # mixture of experts (MiniCPM-MoE-8x2B): each layer's MLP is num_experts SwiGLU experts of intermediate_size,
    # a router (mlp.gate) picks num_experts_per_tok per token: softmax, top-k, renormalised weights; 0: dense
    num_experts: int = 0
    num_experts_per_tok: int = 0
    family: str = "minicpm"
    gguf_arch: str = "minicpm"
    attention: str = "gqa"  # "gqa" | "mla"
    rope_dim: int = 0  # dims of each q/k head that RoPE rotates (0: head_dim); MLA: the trailing rope part
    v_head_dim: int = 0  # 0: head_dim
    q_lora_rank: int = 0  # MLA: q_a_proj's rank
    kv_lora_rank: int = 0  # MLA: the latent's rank (kv_a_proj_with_mqa's first kv_lora_rank outputs)
    latent_norm_eps: float = 1e-6  # MLA: q_a_layernorm / kv_a_layernorm (the modeling code's RMSNorm default)
    vision: VisionConfig = None  # MiniCPM-V: the image path (None: a text model)

    def __post_init__(self):
        if isinstance(self.vision, dict):  # from to_dict()
            object.__setattr__(self, "vision", VisionConfig(**self.vision))
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.rope is None:
            object.__setattr__(self, "rope", Rope(self.rope_theta))
        elif isinstance(self.rope, dict):  # from to_dict()
            r = dict(self.rope)
            r["short_factor"], r["long_factor"] = tuple(r.get("short_factor", ())), tuple(r.get("long_factor", ()))
            object.__setattr__(self, "rope", Rope(**r))
        if not self.context_length:
            object.__setattr__(self, "context_length", self.max_position_embeddings)
        if not self.rope_dim:
            object.__setattr__(self, "rope_dim", self.head_dim)
        if not self.v_head_dim:
            object.__setattr__(self, "v_head_dim", self.head_dim)
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))

    @property
    def embedding_scale(self):
        return self.scale_emb if self.use_mup else 1.0

    @property
    def residual_scale(self):
        return self.scale_depth / math.sqrt(self.num_hidden_layers) if self.use_mup else 1.0

    @property
    def logit_scale(self):
        return self.hidden_size / self.dim_model_base if self.use_mup else 1.0

    @property
    def nope_dim(self):
        """Dims of each q/k head without RoPE (MLA; 0 for a plain attention)."""
        return self.head_dim - self.rope_dim

    @property
    def eos_token_id(self):
        return self.eos_token_ids[0]

    def with_context(self, n):
        """The same model exported for a context of n tokens (LongRoPE picks its factors by it)."""
        return replace(self, context_length=int(n))

    def to_dict(self):
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        d["rope"] = {**d["rope"], "short_factor": list(self.rope.short_factor), "long_factor": list(self.rope.long_factor)}
        if self.vision is None:
            del d["vision"]  # text models' manifests stay as they were
        else:
            d["vision"] = {**d["vision"], "image_mean": list(self.vision.image_mean), "image_std": list(self.vision.image_std)}
        return d

    @classmethod
    def from_manifest(cls, d):
        """Inverse of to_dict (a manifest's model.config); older manifests lack the newer fields."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


MiniCPMConfig = DecoderConfig  # the name edgepack grew up with


# -- field readers the families share ------------------------------------------------------------
def get(raw, path, key, kind, default=None, required=False):
    """raw[key] checked as a positive int / positive finite float / bool; one ConfigError otherwise."""
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


REQUIRED_INT = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def common_fields(raw, path, defaults):
    """The fields every family reads the same way (shapes, norm eps, special ids). `defaults`: the
    family's DEFAULTS, what the model's own config class uses for a key config.json leaves out (a value
    edgepack would make up instead gives a model that computes something else, silently)."""
    f = {k: get(raw, path, k, int, required=True) for k in REQUIRED_INT}
    f["num_key_value_heads"] = get(raw, path, "num_key_value_heads", int, f["num_attention_heads"])
    f["max_position_embeddings"] = get(raw, path, "max_position_embeddings", int, defaults["max_position_embeddings"])
    f["rms_norm_eps"] = get(raw, path, "rms_norm_eps", float, defaults["rms_norm_eps"])
    f["rope_theta"] = get(raw, path, "rope_theta", float, defaults["rope_theta"])
    default_bos, default_eos = defaults["bos_token_id"], defaults["eos_token_id"]
    bos = raw.get("bos_token_id", default_bos)
    if isinstance(bos, bool) or not isinstance(bos, int) or bos < 0:
        raise ConfigError(path, "bos_token_id", f"must be a non-negative integer, got {bos!r}")
    eos = raw.get("eos_token_id", default_eos)
    eos = eos if isinstance(eos, list) else [eos]
    if not eos or any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in eos):
        raise ConfigError(path, "eos_token_id", f"must be a non-negative integer or a list of them, got {raw.get('eos_token_id')!r}")
    f["bos_token_id"], f["eos_token_ids"] = bos, tuple(dict.fromkeys(eos))
    if raw.get("hidden_act", "silu") != "silu":
        from ..errors import NotSupported

        raise NotSupported(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (these models use silu)")
    return f


def validate(f, path):
    """Consistency checks on a family's fields (before DecoderConfig is built)."""
    heads, kv = f["num_attention_heads"], f["num_key_value_heads"]
    if not f.get("head_dim") and f["hidden_size"] % heads:
        raise ConfigError(path, "num_attention_heads", f"({heads}) must divide hidden_size ({f['hidden_size']})")
    if heads % kv:
        raise ConfigError(path, "num_key_value_heads", f"({kv}) must divide num_attention_heads ({heads})")
    hd = f.get("head_dim") or f["hidden_size"] // heads
    if hd % 2:
        raise ConfigError(path, "num_attention_heads", "gives an odd head size, which RoPE cannot rotate")
    if f.get("num_experts_per_tok", 0) > f.get("num_experts", 0):
        raise ConfigError(path, "num_experts_per_tok", f"({f['num_experts_per_tok']}) must not exceed num_experts "
                                                       f"({f.get('num_experts', 0)})")
    if f["bos_token_id"] >= f["vocab_size"]:
        raise ConfigError(path, "bos_token_id", f"({f['bos_token_id']}) is outside the vocabulary (vocab_size {f['vocab_size']})")
    if any(e >= f["vocab_size"] for e in f["eos_token_ids"]):
        raise ConfigError(path, "eos_token_id", f"{list(f['eos_token_ids'])} is outside the vocabulary (vocab_size {f['vocab_size']})")
    return DecoderConfig(**f)


def vision_shapes(v):
    """Every canonical vision tensor (module names above, `vpm.` / `resampler.` prefixed) with its shape."""
    H, F_, D = v.hidden_size, v.intermediate_size, v.embed_dim
    s = {"vpm.embeddings.patch_embedding.weight": (H, 3, v.patch_size, v.patch_size),
         "vpm.embeddings.patch_embedding.bias": (H,),
         "vpm.embeddings.position_embedding.weight": (v.position_grid ** 2, H)}
    for i in range(v.num_hidden_layers):
        p = f"vpm.encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"self_attn.{n}.weight"], s[p + f"self_attn.{n}.bias"] = (H, H), (H,)
        for n in ("layer_norm1", "layer_norm2"):
            s[p + f"{n}.weight"], s[p + f"{n}.bias"] = (H,), (H,)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (F_, H), (F_,)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (H, F_), (H,)
    s["vpm.post_layernorm.weight"], s["vpm.post_layernorm.bias"] = (H,), (H,)
    s["resampler.query"] = (v.query_num, D)
    s["resampler.kv_proj.weight"] = (D, H)
    s["resampler.attn.in_proj_weight"], s["resampler.attn.in_proj_bias"] = (3 * D, D), (3 * D,)
    s["resampler.attn.out_proj.weight"], s["resampler.attn.out_proj.bias"] = (D, D), (D,)
    for n in ("ln_q", "ln_kv", "ln_post"):
        s[f"resampler.{n}.weight"], s[f"resampler.{n}.bias"] = (D,), (D,)
    s["resampler.proj"] = (D, D)
    if v.query_pos:
        s["resampler.pos_embed"] = (v.query_num, D)
    return s


__all__ = ["DecoderConfig", "MiniCPMConfig", "Rope", "VisionConfig"]
