"""MiniCPM-V 4.0 and MiniCPM-V 2.0: model_type `minicpmv`, an LLM plus a vision tower and a resampler.

The version comes from the config's own fields, never from a name:
- 4.0: `version` 4.0, a `vision_config` (SigLIP2-400M NaViT: hidden 1152, 27 layers, patch 14, image_size
  980 = a 70×70 position grid), `query_num` 64, `slice_config`, `use_image_id` true. The LLM (MiniCPM4-3B)
  is transformers' LlamaForCausalLM with LongRoPE in `rope_scaling`; μP applies only if the config says
  `use_mup: true` (Llama ignores scale_emb & co.). llama.cpp: LLM GGUF (arch minicpm, scales 1) + mmproj
  with clip.minicpmv_version 5.
- 2.0: no `version` (or 2.0), no `vision_config`: `vision_encoder` names timm's
  vit_so400m_patch14_siglip_384 (hidden 1152, 27 blocks, 27×27 table resized to each slice),
  `drop_vision_last_layer` true (26 blocks run), the LLM is MiniCPM-2B with μP (scale_emb, scale_depth,
  dim_model_base), `slice_mode`, 2.0's slice layout, queries with their own 8×8 sin-cos table. No llama.cpp
  route (mtmd rejects minicpmv_version 1).

Weights live under `llm.` (the LLM, canonical names after the prefix), `vpm.` and `resampler.`; 2.0's timm
names are mapped onto the canonical (Idefics2) ones by `vision_sources`.
"""
from ...errors import ConfigError, NotSupported
from ..config import VisionConfig, get, validate, vision_shapes
from . import minicpm, minicpm4

NAME = "minicpmv"
CONFIG = "model_type minicpmv"
MODELS = "MiniCPM-V 4.0, MiniCPM-V 2.0"
TIMM_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
               "patch_size": 14, "image_size": 384}


def recognises(raw):
    return raw.get("model_type") == "minicpmv"


def version(raw, path):
    """"4.0" or "2.0" from the config's fields; anything else is refused with what is supported."""
    v = raw.get("version")
    if v in (None, 2, 2.0, "2.0") and ("vision_encoder" in raw or raw.get("hidden_size") == 2304):
        return "2.0"  # MiniCPM-V-2's config has no version key; its tower is named by vision_encoder
    if v in (4, 4.0, "4.0") and isinstance(raw.get("vision_config"), dict):
        return "4.0"
    raise NotSupported(f"{path}: MiniCPM-V version {v!r} is not supported (supported: MiniCPM-V 4.0 — version 4.0 "
                       "with a vision_config — and MiniCPM-V 2.0 — MiniCPM-2B with a timm SigLIP tower)")


def _slice(raw, path):
    s = raw.get("slice_config") or {}
    if not isinstance(s, dict):
        raise ConfigError(path, "slice_config", "must be an object")
    return dict(slice_size=get(s, path, "scale_resolution", int, None) or get(raw, path, "scale_resolution", int, 448),
                max_slices=get(s, path, "max_slice_nums", int, None) or get(raw, path, "max_slice_nums", int, 9),
                slice_mode=get(raw, path, "slice_mode", bool, True))


def parse(raw, path):
    ver = version(raw, path)
    if ver == "4.0":
        llm = dict(raw)
        llm["use_mup"] = raw.get("use_mup", False)  # LlamaForCausalLM: μP only when asked for
        f = minicpm.fields(llm, path)
        f["use_mup"] = get(llm, path, "use_mup", bool, False)
        kind = minicpm._scaling_kind(raw)
        if kind == "longrope":
            f["rope"] = minicpm4.longrope(raw, path, f["rope_theta"], f["head_dim"] or f["hidden_size"] // f["num_attention_heads"])
        elif kind not in (None, "default"):
            raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported (plain RoPE or longrope)")
        f["tie_word_embeddings"] = get(raw, path, "tie_word_embeddings", bool, False)
        vc = raw["vision_config"]
        mt = vc.get("model_type", "siglip_vision_model")
        if mt not in ("siglip_vision_model", "siglip", "idefics2"):
            raise NotSupported(f"{path}: vision_config.model_type {mt!r} is not supported (a SigLIP NaViT tower)")
        p = f"{path} vision_config"
        hidden = get(vc, p, "hidden_size", int, required=True)
        layers = get(vc, p, "num_hidden_layers", int, required=True)
        patch = get(vc, p, "patch_size", int, 14)
        grid = get(vc, p, "image_size", int, 980) // patch
        heads = get(vc, p, "num_attention_heads", int, required=True)
        inter = get(vc, p, "intermediate_size", int, required=True)
        eps = get(vc, p, "layer_norm_eps", float, 1e-6)
        position, query_pos, layout, mtmd_version = "bucketed", False, "4.0", 5
        use_id = get(raw, path, "use_image_id", bool, True)
    else:
        f = minicpm.fields(raw, path)
        if minicpm._scaling_kind(raw) not in (None, "default"):
            raise NotSupported(f"{path}: MiniCPM-V 2.0 with rope_scaling is not supported")
        enc = raw.get("vision_encoder", "vit_so400m_patch14_siglip_384.webli")
        if not str(enc).startswith("vit_so400m_patch14_siglip_384"):
            raise NotSupported(f"{path}: vision_encoder {enc!r} is not supported (vit_so400m_patch14_siglip_384)")
        vc = raw.get("vision_config") or {}  # absent in MiniCPM-V-2's own config: timm's so400m sizes
        if not isinstance(vc, dict):
            raise ConfigError(path, "vision_config", "must be an object")
        t = {**TIMM_SO400M, **vc}
        p = f"{path} vision_config"
        hidden, layers, heads, inter, patch = (get(t, p, k, int, required=True) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size"))
        grid, eps = get(t, p, "image_size", int, required=True) // patch, 1e-6
        position, query_pos, layout, mtmd_version = "interpolated", True, "2.0", 0
        use_id = False
    if get(raw, path, "drop_vision_last_layer", bool, False):
        layers -= 1
    f["family"], f["gguf_arch"] = NAME, "minicpm"
    query = get(raw, path, "query_num", int, 64)
    if f["hidden_size"] % 128:
        raise ConfigError(path, "hidden_size", f"({f['hidden_size']}) must be a multiple of 128: the resampler's heads are 128 wide")
    if hidden % heads:
        raise ConfigError(path, "vision num_attention_heads", f"({heads}) must divide the vision hidden size ({hidden})")
    f["vision"] = VisionConfig(
        version=ver, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        patch_size=patch, layer_norm_eps=eps, position=position, position_grid=grid, query_num=query,
        resampler_heads=f["hidden_size"] // 128, embed_dim=f["hidden_size"], query_pos=query_pos, layout=layout,
        use_image_id=use_id, minicpmv_version=mtmd_version, **_slice(raw, path))
    return validate(f, path)


def vision_sources(v):
    """{canonical name: (checkpoint name, part)}: where each canonical vision tensor is stored; part k takes
    the k-th third of a fused qkv (2.0's timm blocks)."""
    names = vision_shapes(v)
    if v.version != "2.0":
        return {n: (n, None) for n in names}
    src = {"vpm.embeddings.patch_embedding.weight": ("vpm.patch_embed.proj.weight", None),
           "vpm.embeddings.patch_embedding.bias": ("vpm.patch_embed.proj.bias", None),
           "vpm.embeddings.position_embedding.weight": ("vpm.pos_embed", None),
           "vpm.post_layernorm.weight": ("vpm.norm.weight", None), "vpm.post_layernorm.bias": ("vpm.norm.bias", None)}
    for i in range(v.num_hidden_layers):
        c, t = f"vpm.encoder.layers.{i}.", f"vpm.blocks.{i}."
        for k, part in (("q_proj", 0), ("k_proj", 1), ("v_proj", 2)):
            src[c + f"self_attn.{k}.weight"] = (t + "attn.qkv.weight", part)
            src[c + f"self_attn.{k}.bias"] = (t + "attn.qkv.bias", part)
        for kind in ("weight", "bias"):
            src[c + f"self_attn.out_proj.{kind}"] = (t + f"attn.proj.{kind}", None)
            src[c + f"layer_norm1.{kind}"] = (t + f"norm1.{kind}", None)
            src[c + f"layer_norm2.{kind}"] = (t + f"norm2.{kind}", None)
            src[c + f"mlp.fc1.{kind}"] = (t + f"mlp.fc1.{kind}", None)
            src[c + f"mlp.fc2.{kind}"] = (t + f"mlp.fc2.{kind}", None)
    for n in names:
        if n.startswith("resampler."):
            src[n] = (n, None)
    return src
