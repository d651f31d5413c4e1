"""`edgepack inspect`: what a checkpoint (or artifact) holds and what it will cost on a phone."""
from pathlib import Path

import numpy as np

from .formats.manifest import human_bytes, kv_cache_bytes

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def int4_bytes(shape, block_size=32):
    """Bytes of one matrix as 4-bit blocks with an fp16 scale per block (Q4_0 / MatMulNBits)."""
    n = int(np.prod(shape))
    return n // 2 + -(-n // block_size) * 2


def inspect_checkpoint(ckpt, block_size=32):
    cfg = ckpt.config
    params = emb = 0
    by_dtype, int4 = {}, 0
    for name in ckpt.names:
        shape = ckpt.shape(name)
        n = int(np.prod(shape))
        params += n
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            emb += n
        dt = ckpt.dtype(name)
        by_dtype[dt] = by_dtype.get(dt, 0) + n * BYTES.get(dt, 4)
        int4 += int4_bytes(shape, block_size) if len(shape) == 2 else n * 4
    vision = None
    if cfg.vision is not None:  # MiniCPM-V: counted apart from the LLM's figures (which the int4 estimate covers)
        from .model.config import vision_shapes

        vision = int(sum(np.prod(s) for s in vision_shapes(cfg.vision).values()))
    return {
        "kind": "checkpoint", "path": str(ckpt.path), "architecture": cfg.family, "family": _family(cfg), "config": cfg.to_dict(),
        "vision_parameters": vision,
        "parameters": params, "embedding_parameters": emb, "non_embedding_parameters": params - emb,
        "bytes_by_dtype": by_dtype, "int4_bytes_estimate": int4, "int4_block_size": block_size,
        "hub": {"id": ckpt.hub.repo_id, "revision": ckpt.hub.revision} if getattr(ckpt, "hub", None) else None,
        "default_context": cfg.context_length, "kv_cache_by_context": _kv_by_context(cfg),
    }


def _kv_by_context(cfg):
    """The float16 KV cache (the int4 export's default) at powers of two up to the model's context:
    what decides the exported context (--context) on a phone."""
    d, out, n = cfg.to_dict(), [], 2048
    while n < cfg.max_position_embeddings:
        out.append({"context": n, "kv_cache_bytes": kv_cache_bytes(d, n, 2)})
        n *= 2
    out.append({"context": cfg.max_position_embeddings, "kv_cache_bytes": kv_cache_bytes(d, cfg.max_position_embeddings, 2)})
    return out


def _family(cfg):
    from .model.families import by_name

    f = by_name(cfg.family)
    return {"name": f.NAME, "config": f.CONFIG, "models": f.MODELS, "gguf_arch": cfg.gguf_arch}


def inspect_path(path):
    from .model.checkpoint import load

    p = Path(str(path))
    if str(path) != "demo" and (p / "edgepack.json").is_file():
        from .formats.manifest import inspect_artifact  # artifacts: manifest + memory by context

        return inspect_artifact(p)
    return inspect_checkpoint(load(path))




def format_checkpoint(info):
    from .model.rope import beyond

    c = info["config"]
    gqa = "MHA" if c["num_key_value_heads"] == c["num_attention_heads"] else f"GQA ({c['num_key_value_heads']} KV heads)"
    if c.get("attention") == "mla":
        gqa = (f"MLA: q rank {c['q_lora_rank']}, kv rank {c['kv_lora_rank']}, heads of nope {c['head_dim'] - c['rope_dim']}"
               f" + rope {c['rope_dim']}, v {c['v_head_dim']}")
    fam = info.get("family") or {"name": info.get("architecture", "minicpm"), "config": "", "models": ""}
    rope = c.get("rope") or {"kind": "default", "theta": c.get("rope_theta")}
    mup = (f"scale_emb {c['scale_emb']}, dim_model_base {c['dim_model_base']}, scale_depth {c['scale_depth']}"
           if c.get("use_mup", True) else "none (a plain Llama)")
    hub = info.get("hub")
    lines = [
        f"checkpoint        {info['path']}" + (f" ({hub['id']} at {hub['revision'][:12]})" if hub else ""),
        f"family            {fam['name']} ({fam['config']}: {fam['models']}); GGUF arch {fam.get('gguf_arch', 'minicpm')}",
        f"architecture      {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads ({gqa}), head dim {c.get('head_dim') or c['hidden_size'] // c['num_attention_heads']}, FFN {c['intermediate_size']}",
        f"vocabulary        {c['vocab_size']} ({'tied' if c['tie_word_embeddings'] else 'untied'} head), context {c['max_position_embeddings']}",
        f"RoPE              theta {rope['theta']:g}" + (f", LongRoPE (original context {rope['original_max_position_embeddings']})"
                                                        if rope["kind"] == "longrope" else ""),
        *([f"RoPE scaling      {beyond(rope, c['max_position_embeddings'])}"] if beyond(rope, c["max_position_embeddings"]) else []),
        f"μP scales         {mup}",
        *([f"experts           {c['num_experts']} per layer, {c['num_experts_per_tok']} per token (softmax router, top-k, "
           "renormalised)"] if c.get("num_experts") else []),
        f"parameters        {info['parameters'] / 1e6:.1f}M ({info['embedding_parameters'] / 1e6:.1f}M embedding, "
        f"{info['non_embedding_parameters'] / 1e6:.1f}M non-embedding)",
    ]
    v = c.get("vision")
    if v:
        tower = "NaViT, bucketed" if v["position"] == "bucketed" else "ViT, resized"
        lines.append(f"vision            MiniCPM-V {v['version']}: SigLIP {v['num_hidden_layers']} layers, hidden {v['hidden_size']}, "
                     f"{v['position_grid']}x{v['position_grid']} positions ({tower}); resampler {v['query_num']} queries -> "
                     f"{v['embed_dim']}; {info['vision_parameters'] / 1e6:.1f}M parameters, not in the figures above")
    for dt, b in info["bytes_by_dtype"].items():
        lines.append(f"weights ({dt:8s}) {human_bytes(b)}")
    lines.append(f"int4 estimate     {human_bytes(info['int4_bytes_estimate'])} (block {info['int4_block_size']}, fp16 scales)")
    if info.get("kv_cache_by_context"):
        kv = ", ".join(f"{r['context']}: {human_bytes(r['kv_cache_bytes'])}" for r in info["kv_cache_by_context"])
        lines.append(f"KV cache (fp16)   {kv}; exported by default: {info['default_context']} tokens")
    return "\n".join(lines)
