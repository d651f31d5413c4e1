"""A checkpoint -> one GGUF file that llama.cpp loads as is (the family's arch: "minicpm", "minicpm3" or "llama").

The file is what llama.cpp's own convert_hf_to_gguf.py (MiniCPMModel, LlamaModel) writes: the
*unfolded* weights under llama.cpp's tensor names, q_proj/k_proj rows permuted for llama.cpp's RoPE
layout, and for arch minicpm the three μP scalars as keys (llama.cpp applies them itself):

    minicpm.embedding_scale = scale_emb
    minicpm.residual_scale  = scale_depth / sqrt(num_hidden_layers)
    minicpm.logit_scale     = hidden_size / dim_model_base        (llama.cpp divides the logits by it)

Everything comes from the canonical DecoderConfig: head_dim ≠ hidden/heads adds attention.key_length
and value_length; LongRoPE adds rope.scaling.type longrope, rope.scaling.original_context_length,
rope.scaling.attn_factor and the factor tensors rope_factors_long / rope_factors_short (f32), which
llama.cpp picks by n_ctx against the original context, as edgepack.model.rope does by the exported one.

MiniCPM3's latent attention (arch minicpm3) is written as llama.cpp's converter writes it: attn_q_a(_norm),
attn_q_b, attn_kv_a_mqa, attn_kv_a_norm, attn_kv_b unpermuted (llama.cpp rotates each head's trailing rope
dims NeoX-style: rotate-half), q_lora_rank / kv_lora_rank, key_length, value_length, rope.dimension_count =
the rope dims. Its graph hard-codes MiniCPM3-4B's μP (12, 1.4, 256): other values are folded into tensors.

Tensors are streamed: every tensor's name, shape and type goes into the header first (sizes are
known up front), then the data is read, converted and written one tensor at a time and dropped, so
peak memory is bounded by the largest tensor (`benchmarks/bench_2b.py export` measures it).

Types: Q4_0 is quantized here with gguf.quants (numpy, round-to-nearest, 32-weight blocks with an
fp16 scale; every 2-D weight including the tied embedding/head, 1-D norms stay f32, as in
llama.cpp's Q4_0 files), or written from edgepack.quant's calibrated codes; Q4_K_M, Q4_K_S and Q5_K_M
are always edgepack.quant's codes (kquant.py: llama.cpp's per-tensor type mix, K-quant super-blocks
packed by gguf_kquant.py); q4_k_m-llamacpp goes through llama.cpp's own quantizer (llama_model_quantize,
via llama-cpp-python) from a temporary f16 file in the same directory, for comparison; f16/f32 are for
conformance.
Every GGUF key and tensor name comes from gguf-py's constants (gguf.Keys via GGUFWriter.add_*,
gguf.TensorNameMap), so none is spelled here.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import BadInput, InternalError
from . import gguf_kquant, gguf_moe
from .gguf_vocab import add_tokenizer

ARCH = "minicpm"  # MiniCPM-2B's; DecoderConfig.gguf_arch names each family's

# Default type, from results/gguf_types_demo.json (benchmarks/README.md, decision log):
# demo model, first 2048 tokens of edgepack.model.texts.eval_text(), float ppl 11.91, vs the float reference:
#            ppl (+%)        top-1   mean KL  file     bits/weight  decode (llama.cpp, 1 thread, shared box)
#   q4_0     15.90 (+33.5%)  0.728   0.330    77.6 MB  4.51         20.4 tok/s (median of 3)
#   q4_k_m   12.81 (+7.6%)   0.886   0.056   105.5 MB  6.17         18.0 tok/s
# Q4_K_M is far more faithful here, but on this shape it is not int4: the demo's 576/1536 widths are
# not multiples of k-quants' 256, so llama.cpp falls back to Q5_0/Q8_0 for most tensors (6.17 bits,
# +36% bytes, -11% decode). Q4_0 stays the default for `--int4`: true 4.5 bits/weight, the fastest
# llama.cpp kernels, the same 32-weight blocks as the ONNX artifact, and the layout edgepack's better
# int4 methods (edgepack.quant) write into; --gguf-type q4_k_m is there when quality matters more.
DEFAULT_GGUF_TYPE = "q4_0"

K_TYPES = ("q4_k_m", "q4_k_s", "q5_k_m")  # edgepack's own K-quant codes (edgepack.quant.kquant's mixes)
LLAMACPP_Q4_K_M = "q4_k_m-llamacpp"  # llama.cpp's quantizer on edgepack's f16 file, for comparison
TYPES = ("q4_0", *K_TYPES, LLAMACPP_Q4_K_M, "f16", "f32")


def _ggml(gguf_type):
    import gguf

    T, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {  # gguf_type -> (type of 2-D weights written here, general.file_type, file label)
        "q4_0": (T.Q4_0, F.MOSTLY_Q4_0, "Q4_0"),
        "q4_k_m": (T.Q4_K, F.MOSTLY_Q4_K_M, "Q4_K_M"),  # per tensor: the Quantized model's kinds
        "q4_k_s": (T.Q4_K, F.MOSTLY_Q4_K_S, "Q4_K_S"),
        "q5_k_m": (T.Q5_K, F.MOSTLY_Q5_K_M, "Q5_K_M"),
        LLAMACPP_Q4_K_M: (T.F16, F.MOSTLY_F16, "Q4_K_M-llamacpp"),  # written as f16, then llama.cpp quantizes
        "f16": (T.F16, F.MOSTLY_F16, "F16"),
        "f32": (T.F32, F.ALL_F32, "F32"),
    }[gguf_type]


def gguf_filename(gguf_type):
    return f"model-{_ggml(gguf_type)[2]}.gguf"


def write_gguf(ckpt, out_dir: Path, *, gguf_type=DEFAULT_GGUF_TYPE, threads=None, progress=None, quantized=None) -> dict:
    """Write out_dir/model-<TYPE>.gguf for a Checkpoint. Returns the manifest's artifact fields.

    quantized: edgepack.quant's Quantized model, encoded exactly as GGUF blocks (symmetric -> Q4_0,
    asymmetric -> Q4_1, an 8- or 5-bit embedding -> Q8_0 / Q5_0) with its AWQ-rescaled norms; None
    quantizes Q4_0 here with gguf.quants (llama-quantize's rule) or goes through llama.cpp (Q4_K_M)."""
    if gguf_type not in TYPES:
        raise BadInput(f"unknown GGUF type {gguf_type!r} (choose from {', '.join(TYPES)})")
    out_dir = Path(out_dir)
    out = out_dir / gguf_filename(gguf_type)
    if gguf_type in K_TYPES:
        if quantized is None or quantized.kmix != gguf_type:
            raise BadInput(f"GGUF type {gguf_type} is written from edgepack.quant's K-quant codes: quantize with kmix={gguf_type!r}")
        q = quantized
        _write(ckpt, out, gguf_type, progress, q, threads)
        written = describe(out, gguf_type)
        return {"format": "gguf", "file": out.name, "quantization": {**written, **q.describe(),
                                                                        "bits_per_weight": written["bits_per_weight"]}}
    if quantized is not None:
        q = quantized
        if gguf_type != "q4_0":
            raise BadInput(f"int4 method {q.method.name} writes Q4_0/Q4_1 blocks itself; use GGUF type q4_0, not {gguf_type}")
        if q.block8 != 32 and q.method.embed_bits == 8:
            raise BadInput("GGUF's Q8_0 holds 8-bit blocks of 32: quantize with block8=32")
        out = out_dir / f"model-{'Q4_0' if q.method.sym else 'Q4_1'}.gguf"
        _write(ckpt, out, gguf_type, progress, q, threads)
        written = describe(out, gguf_type)  # the file's own figures win over the quantizer's estimate
        return {"format": "gguf", "file": out.name, "quantization": {**written, **q.describe(),
                                                                        "bits_per_weight": written["bits_per_weight"]}}
    if gguf_type == LLAMACPP_Q4_K_M:
        tmp = out_dir / ".tmp-f16-for-q4_k_m.gguf"
        try:
            _write(ckpt, tmp, "f16", progress, threads=threads)
            if progress:
                progress("quantize Q4_K_M (llama.cpp)", 0, 1)
            llama_quantize(tmp, out, "q4_k_m", threads)
            if progress:
                progress("quantize Q4_K_M (llama.cpp)", 1, 1)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        _write(ckpt, out, gguf_type, progress, threads=threads)
    return {"format": "gguf", "file": out.name, "quantization": describe(out, gguf_type)}


# -- tensors -------------------------------------------------------------------------------------
def permute_qk(w, n_head):
    """llama.cpp rotates adjacent pairs (x0,x1),(x2,x3)...; Hugging Face rotates halves. Reorder the
    rows of q_proj/k_proj within each head so llama.cpp's RoPE sees HF's pairs (LlamaModel.permute
    in convert_hf_to_gguf.py; k_proj uses the KV head count)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _plan(ckpt, gguf_type, q=None):
    """(gguf name, hf name, shape, ggml type) for every tensor, in checkpoint order."""
    import gguf

    cfg = ckpt.config
    names = gguf.TensorNameMap(_arch(cfg), cfg.num_hidden_layers)
    wtype = _ggml(gguf_type)[0]
    plan = []
    for hf in ckpt.names:
        if gguf_moe.is_expert(hf):  # stacked per layer after the router (formats/gguf_moe.py)
            continue
        name = names.get_name(hf, try_suffixes=(".weight",))
        if name is None:
            raise InternalError(f"{ckpt.path}: no GGUF name for tensor {hf}")
        shape = tuple(ckpt.shape(hf))
        qtype = wtype
        if len(shape) == 1:
            qtype = gguf.GGMLQuantizationType.F32  # norms: llama.cpp only reads them as f32
        elif q is not None and q.kmix:  # the mix names each tensor's type, its own fallbacks included
            qtype = gguf.GGMLQuantizationType[q.kind(hf).upper()]
        elif qtype not in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
            block = gguf.GGML_QUANT_SIZES[qtype][0]
            if shape[-1] % block:  # rows must be whole blocks; same fallback as convert_hf_to_gguf
                qtype = gguf.GGMLQuantizationType.F16
            elif q is not None:
                qtype = _block_type(q.planned_bits(hf), q.method.sym)
        if gguf_moe.ROUTER.match(hf):  # the router stays f32, as llama-quantize leaves ffn_gate_inp
            plan += [(name, hf, shape, gguf.GGMLQuantizationType.F32)] + gguf_moe.stacked_entries(cfg, hf, wtype)
            continue
        plan.append((name, hf, shape, qtype))
    if cfg.rope.kind == "longrope":  # not checkpoint tensors: the description's RoPE factors
        for which in ("long", "short"):
            t = getattr(gguf.MODEL_TENSOR, f"ROPE_FACTORS_{which.upper()}")
            plan.append((gguf.TENSOR_NAMES[t] + ".weight", f"rope.{which}_factor", (cfg.rope_dim // 2,),
                         gguf.GGMLQuantizationType.F32))
    return plan


def _arch(cfg):
    import gguf

    return {"minicpm": gguf.MODEL_ARCH.MINICPM, "minicpm3": gguf.MODEL_ARCH.MINICPM3, "llama": gguf.MODEL_ARCH.LLAMA}[cfg.gguf_arch]


def arch_fold(cfg, hf):
    """The constant a tensor is multiplied by so that llama.cpp's minicpm3 graph, which uses MiniCPM3-4B's
    μP constants instead of keys (src/models/minicpm3.cpp), computes cfg's μP (1.0 for the 4B, other archs)."""
    if cfg.gguf_arch != "minicpm3":
        return 1.0
    emb, f = cfg.embedding_scale / 12.0, 1.0  # llama.cpp: table × 12
    if hf == "model.embed_tokens.weight":
        f = emb
    elif hf.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):  # llama.cpp: × 1.4/sqrt(L)
        f = cfg.residual_scale * cfg.num_hidden_layers ** 0.5 / 1.4
    elif hf == "model.norm.weight":  # llama.cpp: × 256/hidden before the head (the scaled table when tied)
        f = cfg.hidden_size / 256 / cfg.logit_scale / (emb if cfg.tie_word_embeddings else 1.0)
    return 1.0 if abs(f - 1.0) < 1e-9 else f  # the 4B's own constants: no rounding of a ×0.99999999


def _nbytes(shape, qtype):
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * size


def _tensor(ckpt, hf, qtype, q=None, pool=None):
    """One tensor, read, permuted if needed and converted to its GGUF type."""
    from gguf import quants

    cfg = ckpt.config
    if gguf_moe.STACKED.match(hf):
        return gguf_moe.stacked_tensor(ckpt, hf, qtype, lambda w, t: _quantize(w, t, pool),
                                       encoded=None if q is None else lambda n: _expert_blocks(q, n, qtype))
    if hf.startswith("rope."):  # LongRoPE factors (edgepack.model.rope's divisors of the inverse frequencies)
        return np.asarray(getattr(cfg.rope, hf[len("rope."):]), np.float32)
    fold = arch_fold(cfg, hf)
    if q is not None and qtype != quants.GGMLQuantizationType.F32:  # the quant stage's blocks, rows permuted
        qt, rows = q.qtensor(hf), np.arange(ckpt.shape(hf)[0])
        if fold != 1.0:
            qt = qt.scaled(fold)
        if hf.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in hf else cfg.num_key_value_heads
            qt = qt.rows(permute_qk(rows, heads))
        return blocks(qt)[0]
    chunked = q is None and pool is not None and qtype not in (quants.GGMLQuantizationType.F16, quants.GGMLQuantizationType.F32)
    # quantized here in row chunks: read in the stored dtype, each chunk made float32 on its own (peak RSS)
    w = (ckpt.stored(hf) if chunked else ckpt.torch(hf)) if q is None else q.weight(hf)  # norms: AWQ-rescaled
    if fold != 1.0:
        w = w.float() * fold  # float32: a bf16 product would round again
    if hf.endswith("self_attn.q_proj.weight"):
        w = permute_qk(w, cfg.num_attention_heads)
    elif hf.endswith("self_attn.k_proj.weight"):
        w = permute_qk(w, cfg.num_key_value_heads)
    return _quantize(w.contiguous() if chunked else np.ascontiguousarray(w.numpy(), dtype=np.float32), qtype, pool)


def _expert_blocks(q, name, qtype):
    data, t = blocks(q.qtensor(name))
    if t != qtype:
        raise InternalError(f"{name}: the stacked experts are {qtype.name}, its codes {t.name}")
    return data


def _block_type(bits, sym):
    """The GGML type that holds a QTensor of these bits (known before the tensor exists)."""
    import gguf

    T = gguf.GGMLQuantizationType
    return {8: T.Q8_0, 5: T.Q5_0, 4: T.Q4_0 if sym else T.Q4_1}[bits]


def blocks(qt):
    """A QTensor as GGUF block bytes: (uint8 (N, nb·block_bytes), GGMLQuantizationType), exactly.

    4-bit symmetric -> Q4_0 {f16 d; 16 B of codes, low nibbles = first 16}; 4-bit asymmetric -> Q4_1
    {f16 d; f16 m = −d·zero; codes}; 8-bit symmetric (block 32) -> Q8_0 {f16 d; int8 code−128}."""
    import gguf

    T = gguf.GGMLQuantizationType
    if getattr(qt, "kind", None):  # edgepack.quant.kquant's K-quant super-blocks
        data, name = gguf_kquant.pack_k(qt)
        return data, T[name]
    n, nb = qt.scales.shape
    codes = qt.codes
    d = qt.scales.astype(np.float16).view(np.uint8).reshape(n, nb, 2)
    if qt.bits == 5:  # Q5_0: the codes packed as they are (formats/gguf_kquant.py)
        if not qt.sym or qt.block_size != 32:
            raise BadInput("GGUF's Q5_0 holds symmetric 5-bit blocks of 32 only")
        return gguf_kquant.pack_q5_0(codes, qt.scales), T.Q5_0
    if qt.bits == 8:
        if not qt.sym or qt.block_size != 32:
            raise BadInput("GGUF's Q8_0 holds symmetric 8-bit blocks of 32 only")
        out, t = np.concatenate([d, (codes.astype(np.int16) - 128).astype(np.int8).view(np.uint8)], -1), T.Q8_0
    elif qt.block_size != 32:
        raise BadInput("GGUF's Q4_0/Q4_1 hold blocks of 32 only")
    else:
        qs = codes[..., :16] | (codes[..., 16:] << 4)
        if qt.sym:
            out, t = np.concatenate([d, qs], -1), T.Q4_0
        else:
            m = (-qt.scales * qt.zeros).astype(np.float16).view(np.uint8).reshape(n, nb, 2)
            out, t = np.concatenate([d, m, qs], -1), T.Q4_1
    return np.ascontiguousarray(out.reshape(n, -1)), t


def _quantize(w, qtype, pool):
    import gguf
    from gguf import quants

    if pool is None or qtype in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
        return quants.quantize(w, qtype)
    # row chunks on a thread pool (numpy releases the GIL): ~1.8x faster on 2 cores, and the
    # temporaries stay one chunk big instead of the whole tensor's
    out = np.empty(quants.quant_shape_to_byte_shape(w.shape, qtype), np.uint8)

    def part(s, rows=512):  # w: float32 numpy, or a torch tensor in its stored dtype (made float32 per chunk)
        chunk = w[s:s + rows]
        if not isinstance(chunk, np.ndarray):
            chunk = chunk.float().numpy()
        out[s:s + rows] = quants.quantize(chunk, qtype)

    list(pool.map(part, range(0, w.shape[0], 512)))
    return out


def _write(ckpt, path, gguf_type, progress, q=None, threads=None):
    import gguf

    cfg = ckpt.config
    plan = _plan(ckpt, gguf_type, q)
    w = gguf.GGUFWriter(path, cfg.gguf_arch)
    _add_hparams(w, ckpt, gguf_type, q)
    add_tokenizer(w, ckpt)
    for name, _, shape, qtype in plan:
        w.add_tensor_info(name, shape, np.dtype(np.float32), _nbytes(shape, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    # safetensors are memory-mapped and every page read stays in our RSS while the file is open:
    # closing the handles after each tensor keeps peak RSS near one tensor, not the whole checkpoint
    # (MiniCPM-2B shape: 4.15 GB peak without this)
    release = ckpt.close if any(ckpt.path.glob("*.safetensors")) or ckpt.config.num_experts else (lambda: None)
    pool = ThreadPoolExecutor(threads or os.cpu_count() or 1)
    try:
        for i, (name, hf, shape, qtype) in enumerate(plan):
            data = _tensor(ckpt, hf, qtype, q, pool)
            release()
            w.write_tensor_data(data)
            del data
            if progress:
                progress(f"gguf {_ggml(gguf_type)[2]}", i + 1, len(plan))
    finally:
        pool.shutdown()
        w.close()
    del cfg


def _add_hparams(w, ckpt, gguf_type, q=None):
    import gguf

    c = ckpt.config
    w.add_name(ckpt.path.name)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope.theta)
    w.add_rope_dimension_count(c.rope_dim)
    if c.attention == "mla":
        w.add_q_lora_rank(c.q_lora_rank)
        w.add_kv_lora_rank(c.kv_lora_rank)
    if c.head_dim != c.hidden_size // c.num_attention_heads or c.v_head_dim != c.head_dim:
        w.add_key_length(c.head_dim)  # llama.cpp assumes hidden/heads otherwise
        w.add_value_length(c.v_head_dim)
    if c.rope.kind == "longrope":
        from ..model.rope import attention_factor

        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        w.add_rope_scaling_orig_ctx_len(c.rope.original_max_position_embeddings)
        w.add_rope_scaling_attn_factors(attention_factor(c))
    w.add_vocab_size(c.vocab_size)
    gguf_moe.add_hparams(w, c)
    if c.gguf_arch == "minicpm":
        w.add_embedding_scale(c.embedding_scale)
        w.add_residual_scale(c.residual_scale)
        w.add_logit_scale(c.logit_scale)
    w.add_file_type(_ggml(gguf_type)[1] if q is None or q.method.sym or q.kmix else gguf.LlamaFileType.MOSTLY_Q4_1)
    if gguf_type == "q4_0" or gguf_type in K_TYPES:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)


# -- llama.cpp's quantizer and the description of a written file ----------------------------------
def llama_quantize(src, dst, gguf_type, threads=None, imatrix=None):
    """Quantize a GGUF with llama.cpp's own llama_model_quantize (k-quants with its mixing rules).
    imatrix: {GGUF tensor name: float32 (K,) mean x² of its input columns}, llama.cpp's importance
    matrix (what llama-imatrix computes), handed over as its NULL-terminated llama_model_imatrix_data array."""
    import ctypes

    import llama_cpp

    ftype = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
             "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[gguf_type]
    from .llamacpp import quiet_llama

    quiet_llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    if imatrix:
        keep = {n: np.ascontiguousarray(v, np.float32) for n, v in imatrix.items()}  # alive until the call returns
        arr = (llama_cpp.llama_model_imatrix_data * (len(keep) + 1))()
        for e, (n, v) in zip(arr, keep.items()):
            e.name, e.data, e.size = n.encode(), v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), v.size
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise InternalError(f"{src}: llama.cpp's quantizer failed (llama_model_quantize returned {rc})")


def describe(path, gguf_type):
    """The manifest's quantization fields, measured from the written file."""
    from collections import Counter

    import gguf

    r = gguf.GGUFReader(path)
    weights = [t for t in r.tensors if len(t.shape) > 1 or t.n_elements > 1 << 16]
    n_bytes = sum(int(t.n_bytes) for t in r.tensors)
    n_params = sum(int(t.n_elements) for t in r.tensors)
    by_type = Counter(t.tensor_type.name for t in weights)
    scheme = _ggml(gguf_type)[2]
    q = {
        "scheme": scheme,
        "bits": {"q4_0": 4, "q4_k_m": 4, "q4_k_s": 4, "q5_k_m": 5, LLAMACPP_Q4_K_M: 4, "f16": 16, "f32": 32}[gguf_type],
        "block_size": 32 if gguf_type == "q4_0" else 256 if gguf_type in (*K_TYPES, LLAMACPP_Q4_K_M) else None,
        "method": {
            "q4_0": "round-to-nearest, symmetric absmax, fp16 scale per 32 weights (gguf.quants)",
            LLAMACPP_Q4_K_M: "llama.cpp llama_model_quantize Q4_K_M (k-quant mix, 256-weight super-blocks)",
        }.get(gguf_type, "unquantized"),
        "bits_per_weight": round(8 * n_bytes / n_params, 3),
        "tensor_types": dict(by_type),
    }
    del r
    return q
