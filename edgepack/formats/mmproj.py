"""MiniCPM-V's vision tower + resampler -> an mmproj GGUF that llama.cpp's mtmd (clip.cpp) loads as is.

Keys and tensor names are the ones tools/mtmd/clip.cpp reads for `clip.projector_type resampler`
(llama.cpp's legacy minicpmv-convert-image-encoder-to-gguf.py writes the same):

    clip.minicpmv_version (5 = MiniCPM-V 4.0: the 2.6 slice layout), clip.minicpmv_query_num,
    clip.vision.{image_size (the slice size, 448), patch_size, embedding_length, feed_forward_length,
    block_count, attention.head_count, attention.layer_norm_epsilon, image_mean, image_std}, clip.use_gelu
    v.patch_embd, v.position_embd (the 70×70 table clip.cpp buckets into: the grid is fixed there),
    v.blk.N.{attn_q,attn_k,attn_v,attn_out,ln1,ln2,ffn_up,ffn_down}, v.post_ln,
    resampler.{query, kv, attn.{q,k,v,out}, ln_q, ln_kv, ln_post, proj}

clip.cpp computes the resampler's 2D sin-cos table itself and uses d_head 128 (heads = width/128), as
OpenBMB's code does (it still requires resampler.pos_embed_k, the 70×70 table, which it no longer reads). proj is stored transposed (clip.cpp multiplies x by it) and divided by the LLM's
embedding scale when the LLM's llama.cpp arch multiplies every input embedding by it (arch `minicpm` with
μP): the image rows then arrive at the decoder unscaled, as in the reference.

Types: f32 (conformance), f16 (default: every 2-D/4-D weight in f16, norms/biases/query f32, like
llama.cpp's converter) or q8_0 (the matrix weights in q8_0, the patch and position tables f16).
"""
import numpy as np

from ..errors import BadInput, NotSupported

TYPES = ("f32", "f16", "q8_0")
MTMD_GRID = 70  # clip.cpp buckets NaViT positions over a hard-coded 70×70 table
POS_EMBED_K = "(sin-cos 70x70)"  # clip.cpp requires resampler.pos_embed_k (unused since it computes the table in-graph)


def gguf_names(v):
    """[(gguf name, canonical name, part)]: part selects a third of the resampler's packed in_proj."""
    out = [("v.patch_embd.weight", "vpm.embeddings.patch_embedding.weight", None),
           ("v.patch_embd.bias", "vpm.embeddings.patch_embedding.bias", None),
           ("v.position_embd.weight", "vpm.embeddings.position_embedding.weight", None)]
    sub = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.out_proj": "attn_out", "layer_norm1": "ln1", "layer_norm2": "ln2",
           "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
    for i in range(v.num_hidden_layers):
        for hf, g in sub.items():
            for kind in ("weight", "bias"):
                out.append((f"v.blk.{i}.{g}.{kind}", f"vpm.encoder.layers.{i}.{hf}.{kind}", None))
    out += [("v.post_ln.weight", "vpm.post_layernorm.weight", None), ("v.post_ln.bias", "vpm.post_layernorm.bias", None),
            ("resampler.query", "resampler.query", None), ("resampler.kv.weight", "resampler.kv_proj.weight", None)]
    for k, part in (("q", 0), ("k", 1), ("v", 2)):
        out.append((f"resampler.attn.{k}.weight", "resampler.attn.in_proj_weight", part))
        out.append((f"resampler.attn.{k}.bias", "resampler.attn.in_proj_bias", part))
    out += [("resampler.attn.out.weight", "resampler.attn.out_proj.weight", None),
            ("resampler.attn.out.bias", "resampler.attn.out_proj.bias", None)]
    for n in ("q", "kv", "post"):
        out += [(f"resampler.ln_{n}.weight", f"resampler.ln_{n}.weight", None), (f"resampler.ln_{n}.bias", f"resampler.ln_{n}.bias", None)]
    out.append(("resampler.proj.weight", "resampler.proj", None))
    out.append(("resampler.pos_embed_k", POS_EMBED_K, None))
    return out


def check_mtmd(v):
    """Refuse what llama.cpp's mtmd cannot run, naming why."""
    if not v.minicpmv_version:
        raise NotSupported(f"MiniCPM-V {v.version} exports to ONNX only: llama.cpp's mtmd runs the NaViT tower of "
                           "MiniCPM-V 2.5 and later and rejects 2.0's timm SigLIP + Resampler2 (minicpmv_version 1)")
    if v.position != "bucketed" or v.position_grid != MTMD_GRID:
        raise NotSupported(f"llama.cpp's mtmd buckets vision positions over a {MTMD_GRID}x{MTMD_GRID} table; "
                           f"this model's is {v.position_grid}x{v.position_grid}")
    if v.embed_dim % 128:
        raise NotSupported(f"llama.cpp's resampler uses 128-wide heads; the LLM width {v.embed_dim} is not a multiple of 128")


def _ggml_type(gname, arr, mtype):
    import gguf

    T = gguf.GGMLQuantizationType
    if mtype == "f32" or arr.ndim == 1 or not gname.endswith(".weight"):
        return T.F32
    if mtype == "q8_0" and arr.ndim == 2 and arr.shape[-1] % 32 == 0 and gname not in ("v.position_embd.weight",):
        return T.Q8_0
    return T.F16


def write_mmproj(v, get, path, mtype="f16", embedding_scale=1.0, name="MiniCPM-V"):
    """Write the mmproj GGUF. get(canonical name) -> float32 numpy array (one tensor, read now).
    embedding_scale: what the LLM GGUF's arch multiplies input embeddings by (1.0 if nothing)."""
    import gguf

    if mtype not in TYPES:
        raise BadInput(f"mmproj type {mtype!r} is not supported ({', '.join(TYPES)})")
    check_mtmd(v)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name(f"{name} vision")
    w.add_description("image encoder for MiniCPM-V (edgepack)")
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[mtype])
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_minicpmv_projector", True)
    w.add_string("clip.projector_type", "resampler")
    w.add_int32("clip.minicpmv_version", v.minicpmv_version)
    w.add_uint32("clip.minicpmv_query_num", v.query_num)
    w.add_uint32("clip.vision.image_size", v.slice_size)
    w.add_uint32("clip.vision.patch_size", v.patch_size)
    w.add_uint32("clip.vision.embedding_length", v.hidden_size)
    w.add_uint32("clip.vision.feed_forward_length", v.intermediate_size)
    w.add_uint32("clip.vision.projection_dim", v.embed_dim)
    w.add_uint32("clip.vision.attention.head_count", v.num_attention_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v.layer_norm_eps)
    w.add_uint32("clip.vision.block_count", v.num_hidden_layers)
    w.add_array("clip.vision.image_mean", [float(x) for x in v.image_mean])
    w.add_array("clip.vision.image_std", [float(x) for x in v.image_std])
    w.add_bool("clip.use_gelu", True)  # gelu (tanh), SigLIP's gelu_pytorch_tanh
    cache = {}

    def tensor(canon, part):
        if canon == POS_EMBED_K:
            from ..model.image import sincos_2d

            return sincos_2d(v.embed_dim, MTMD_GRID, MTMD_GRID)
        if canon not in cache:
            cache.clear()
            cache[canon] = np.asarray(get(canon), np.float32)
        a = cache[canon]
        if part is not None:
            a = np.split(a, 3, axis=0)[part]
        if canon == "resampler.proj":  # x @ proj: ggml's mul_mat wants it transposed; undo the LLM's input scale
            a = a.T / np.float32(embedding_scale)
        return np.ascontiguousarray(a)

    for gname, canon, part in gguf_names(v):
        a = tensor(canon, part)
        t = _ggml_type(gname, a, mtype)
        if t == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, a.astype(np.float32))
        elif t == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gname, a.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quants.quantize(a, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"path": str(path), "type": mtype, "minicpmv_version": v.minicpmv_version, "embedding_scale_compensated": embedding_scale}
