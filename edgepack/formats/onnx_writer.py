"""MiniCPM -> an ONNX folder that onnxruntime-genai loads as is, written one tensor at a time.

The graph is MiniCPM folded into a plain Llama (edgepack.model.fold, exact), made of the ops that make
onnxruntime fast on CPU:

    input_ids ─ GatherBlockQuantized (int4 table, shared with lm_head) ─ SimplifiedLayerNormalization
    per layer:  MatMulNBits(qkv) ─ GroupQueryAttention(rotary) ─ MatMulNBits(o)
                ─ SkipSimplifiedLayerNormalization ─ MatMulNBits(gate, up) ─ SiLU·up ─ MatMulNBits(down)
                ─ SkipSimplifiedLayerNormalization (next layer's input norm, or the final norm)
    lm_head:    MatMulNBits over the same packed int4 initializer as the embedding (tied)

Builder conventions copied from onnxruntime-genai's model builder (onnxruntime_genai/models/builders/
base.py, 0.18), so that og.Model loads the folder with no edits and so that its graph is the speed peer:
- I/O names input_ids, attention_mask, past_key_values.%d.key/value -> logits, present.%d.key/value,
  with the builder's symbolic dims; KV cache layout (batch, kv_heads, seq, head_dim) so genai's
  past_present_share_buffer=true (GQA reads and writes one max-length buffer in place) works.
- attention_mask -> seqlens_k = ReduceSum(mask, 1) - 1 and total_sequence_length = Shape(mask)[1]
  (int32), which is what GroupQueryAttention needs and what genai feeds.
- q, k, v fused into one MatMulNBits feeding GQA's packed-QKV input; rotary inside GQA (do_rotary=1,
  rotary_interleaved=0 because Hugging Face Llama rotates halves) from cos/sin caches of shape
  (context, head_dim/2), built by edgepack.model.rope for the exported context (LongRoPE's factors and
  attention factor are in the tables, so the graph is the same for every family).
- the tied int4 embedding as the builder's `Reshape(lm_head.MatMul.weight_Q4) -> GatherBlockQuantized`
  (bits 4, quantize_axis 1), so the table is stored once; accuracy_level 4 (int8 activations) on
  every MatMulNBits; symmetric RTN (no zero points, the builder's default int4 method).
- genai_config.json with the builder's fields, plus session_options.intra_op_num_threads (the builder
  leaves it unset, which costs ~1.7x decode speed here).

Quantization is its own stage (edgepack.export: load -> canonical model -> edgepack.quant ->
writers): a calibrated method arrives here as edgepack.quant's QTensors (codes, scales, zero points)
and rescaled norms, and this writer only folds (the fold constant goes into the scales) and encodes
them as MatMulNBits / GatherBlockQuantized initializers. Without one (`--method rtn`), the writer
encodes with the format's own RTN:

Plain RTN uses onnxruntime's own int4 packer (`quantize_matmul_4bits`, the builder's default path), one
weight at a time (the embedding in row chunks), so the int4 bytes equal the builder's. Initializers stream
straight into model.onnx.data and are dropped, so peak memory is bounded by the largest tensor.

The KV cache is float16 by default (KV_DTYPE): GroupQueryAttention keeps its cache in its query's type, so
the fused q|k|v is Cast to float16 in front of GQA and the output Cast back. Why float16, and why no int8
cache: benchmarks/README.md, decision log ("KV cache dtype").

Multi-head latent attention (MiniCPM3, attention "mla") is decompressed into the same GroupQueryAttention
(kv heads = heads), exactly: onnx_mla.py.

dtype="fp32" writes the same graph with plain Gather/MatMul and float weights and a float32 cache: the
conformance anchor.
For an untied checkpoint the lm_head is its own MatMulNBits and the embedding its own int4 table.
"""
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import BadInput, NotSupported
from . import onnx_mla, onnx_moe
from .genai import copy_tokenizer, genai_config
from .manifest import onnx_head_size
from .onnx_mla import mla_rotary_dim
from .onnx_graph import (DATA_FILE, MODEL_FILE, OPSET, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, Rows,
                         _DataFile, _Graph, _cat, quantize_int4)

ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations (the fast CPU path)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' accuracy_level: 0 unset (float), 1 fp32, 2 fp16, 3 bf16, 4 int8
# KV cache element type, past_key_values.* and present.* (the module docstring). GroupQueryAttention's CPU
# kernel keeps the cache in its own input type, so float16 means GQA runs in float16 between two Casts.
KV_DTYPES = {"float32": (TensorProto.FLOAT, np.float32), "float16": (TensorProto.FLOAT16, np.float16)}
KV_DTYPE = "float16"  # int4 exports; the fp32 conformance anchor keeps float32
# gate|up as one MatMulNBits + Split: exact, and off (1.02x decode, not worth a graph unlike the builder's;
# benchmarks/README.md, decision log, with the block-size lever)
FUSE_GATE_UP = False


class _Writer:
    """Consumes folded tensors in checkpoint order and emits nodes + initializers as they come."""

    def __init__(self, cfg, data, dtype, block_size, kv_dtype="float32", accuracy_level=ACCURACY_LEVEL):
        self.c, self.g, self.bs, self.acc = cfg, _Graph(data), block_size, accuracy_level
        self.int4 = dtype == "int4"
        self.kv_type, self.kv_np = KV_DTYPES[kv_dtype]
        self.qkv = {}  # parts of the current layer's fused q/k/v (MLA: its q_a/kv_a and the decompression's activations)
        self.mlp_in = None
        self.residual = None  # running residual stream (SkipSimplifiedLayerNormalization output 3)
        self.pending = None  # output of the last sublayer, added to the residual by the next norm
        self.x = None  # current normalized activation
        self.embed = None  # (weight name, scales name) of the int4 table, shared with a tied lm_head
        self._prologue()

    def _prologue(self):
        g = self.g
        # attention_mask -> GQA's seqlens_k (index of the last valid token) and total_sequence_length
        s = g.node("ReduceSum", ["attention_mask", g.const([1])], "/model/attn_mask_reformat/ReduceSum", keepdims=0)
        s = g.node("Sub", [s, g.const([1])], "/model/attn_mask_reformat/Sub")
        self.seqlens_k = g.node("Cast", [s], "/model/attn_mask_reformat/Sub/Cast", to=TensorProto.INT32)
        t = g.node("Shape", ["attention_mask"], "/model/attn_mask_reformat/Shape")
        t = g.node("Gather", [t, g.const(1)], "/model/attn_mask_reformat/Gather", axis=0)  # a scalar, as GQA wants
        self.total_len = g.node("Cast", [t], "/model/attn_mask_reformat/Gather/Cast", to=TensorProto.INT32)
        # GQA rotates with these caches, one row per position of the exported context: the reference's
        # float64 tables (LongRoPE's factors for that context and its attention factor included)
        from ..model.rope import tables

        cos, sin = tables(self.c)  # (context, rope/2)
        if (H := mla_rotary_dim(self.c) // 2) > cos.shape[1]:  # GQA's caches are a multiple of 8 wide: the
            cos = np.pad(cos, ((0, 0), (0, H - cos.shape[1])), constant_values=1.0)  # extra pairs turn by 0
            sin = np.pad(sin, ((0, 0), (0, H - sin.shape[1])))
        g.init("cos_cache", cos.astype(self.kv_np))  # GQA wants them in its query's type
        g.init("sin_cache", sin.astype(self.kv_np))

    # one tensor in, in checkpoint order
    def add(self, name, t):
        c = self.c
        if name == "model.embed_tokens.weight":
            self._embedding(t)
        elif name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            self._layer(int(i), rest, t)
        elif name == "model.norm.weight":
            self.x = self._norm(t, "/model/final_norm", "model.norm.weight")
            if c.tie_word_embeddings:
                self._lm_head(None)
        elif name == "lm_head.weight":
            self._lm_head(t)

    def _embedding(self, w):
        g = self.g
        if self.int4:
            self.embed = self._quantized("lm_head.MatMul.weight" if self.c.tie_word_embeddings else "model.embed_tokens.weight", w)
            (q, s, *zp), attrs = self.embed
            V, H = w.shape
            table = g.node("Reshape", [q, g.const([V, H * attrs["bits"] // 8])], "/model/embed_tokens/Reshape")
            self.x = g.node("GatherBlockQuantized", [table, "input_ids", s, *zp], "/model/embed_tokens/GatherBlockQuantized",
                            domain="com.microsoft", gather_axis=0, quantize_axis=1, **attrs)
        else:
            self.embed = g.init("model.embed_tokens.weight", w)
            self.x = g.node("Gather", [self.embed, "input_ids"], "/model/embed_tokens/Gather", axis=0)

    def _quantized(self, name, w):
        """([B, scales(, zero_points)] initializer names, {bits, block_size}) of one MatMulNBits weight."""
        from ..quant.blocks import QTensor

        if isinstance(w, QTensor):  # edgepack.quant's calibrated codes, scales and zero points
            ins = [self.g.init(f"{name}_Q{w.bits}", w.packed()), self.g.init(f"{name}_scales", w.scales)]
            if not w.sym:
                ins.append(self.g.init(f"{name}_zero_points", w.packed_zeros()))
            return ins, {"bits": w.bits, "block_size": w.block_size}
        if isinstance(w, Rows):
            packed, scales = quantize_int4(w.t, self.bs, scale=w.scale)
        else:
            packed, scales = quantize_int4(w, self.bs)
        return [self.g.init(f"{name}_Q4", packed), self.g.init(f"{name}_scales", scales)], {"bits": 4, "block_size": self.bs}

    def _linear(self, x, w, name, out_name=None):
        """x @ w.T for w (N, K): MatMulNBits int4 or a float MatMul over the stored transpose."""
        g, node = self.g, f"/{name.replace('.', '/')}"
        N, K = w.shape
        if self.int4:
            ins, attrs = self._quantized(f"{name}.MatMul.weight", w)
            out = g.node("MatMulNBits", [x, *ins], node + "/MatMul_Q4", domain="com.microsoft",
                         K=K, N=N, accuracy_level=self.acc, **attrs)
        else:
            out = g.node("MatMul", [x, g.init(f"{name}.MatMul.weight", w.T)], node + "/MatMul")
        return self._rename(out, out_name)

    def _rename(self, out, new):
        if new:
            self.g.nodes[-1].output[0] = new
            return new
        return out

    def _norm(self, weight, name, init_name):
        """RMSNorm; when a sublayer output is pending, fuse the residual add (Skip...Normalization)."""
        g, eps = self.g, self.c.rms_norm_eps
        w = g.init(init_name, weight)
        if self.pending is None:  # first norm: the residual stream is the embedding itself
            self.residual = self.x
            return g.node("SimplifiedLayerNormalization", [self.x, w], name + "/LayerNorm", epsilon=eps, axis=-1, stash_type=1)
        outs = g.node("SkipSimplifiedLayerNormalization", [self.residual, self.pending, w], name + "/SkipLayerNorm",
                      n_out=4, domain="com.microsoft", epsilon=eps)
        g.nodes[-1].output[1] = g.nodes[-1].output[2] = ""  # mean, inv_std_var: unused
        self.residual, self.pending = outs[3], None
        return outs[0]

    def _layer(self, i, rest, t):
        c, g, p = self.c, self.g, f"model.layers.{i}"
        if c.attention == "mla" and rest.startswith("self_attn.") and rest != "self_attn.o_proj.weight":
            onnx_mla.add(self, i, rest, t)
        elif rest == "input_layernorm.weight":
            self.x = self._norm(t, f"/model/layers.{i}/input_layernorm", f"{p}.input_layernorm.weight")
        elif rest in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"):
            self.qkv[rest[10]] = t
            if len(self.qkv) == 3:  # fused projection: GQA takes packed q|k|v
                parts = [self.qkv[k] for k in "qkv"]
                self.qkv = {}
                qkv = self._linear(self.x, _cat(parts), f"model.layers.{i}.attn.qkv_proj")
                self.x = self._gqa(i, [qkv, "", ""])
        elif rest == "self_attn.o_proj.weight":
            self.pending = self._linear(self.x, t, f"model.layers.{i}.attn.o_proj")
        elif rest == "post_attention_layernorm.weight":
            self.x = self._norm(t, f"/model/layers.{i}/post_attention_layernorm", f"{p}.post_attention_layernorm.weight")
        elif rest == "mlp.gate_proj.weight":
            self.mlp_in = t if FUSE_GATE_UP else self._linear(self.x, t, f"model.layers.{i}.mlp.gate_proj")
        elif rest == "mlp.up_proj.weight" and FUSE_GATE_UP:  # one (2F, H) MatMulNBits, split in halves
            parts = [self.mlp_in, t]
            w = np.concatenate(parts) if isinstance(t, np.ndarray) else type(t).cat(parts)
            gu = self._linear(self.x, w, f"model.layers.{i}.mlp.gate_up_proj")
            F = c.intermediate_size
            gate, up = g.node("Split", [gu, g.const([F, F])], f"/model/layers.{i}/mlp/gate_up_proj/Split", n_out=2, axis=-1)
            silu = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"/model/layers.{i}/mlp/act_fn/Sigmoid")], f"/model/layers.{i}/mlp/act_fn/Mul")
            self.mlp_in = g.node("Mul", [silu, up], f"/model/layers.{i}/mlp/Mul")
        elif rest == "mlp.up_proj.weight":  # gate, up, then SiLU: the builder's node order (same input, back to back)
            gate, up = self.mlp_in, self._linear(self.x, t, f"model.layers.{i}.mlp.up_proj")
            silu = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"/model/layers.{i}/mlp/act_fn/Sigmoid")], f"/model/layers.{i}/mlp/act_fn/Mul")
            self.mlp_in = g.node("Mul", [silu, up], f"/model/layers.{i}/mlp/Mul")
        elif rest == "mlp.down_proj.weight":
            self.pending = self._linear(self.mlp_in, t, f"model.layers.{i}.mlp.down_proj")
        elif onnx_moe.handles(rest):  # a router or an expert: one QMoE node per layer (formats/onnx_moe.py)
            onnx_moe.add(self, i, rest, t)
        else:
            raise NotSupported(f"unexpected tensor model.layers.{i}.{rest}")

    def _gqa(self, i, qkv):
        """GroupQueryAttention over [packed q|k|v, "", ""] or [q, k, v], with the cache's type (float16: Casts around)."""
        c, g = self.c, self.g
        half = self.kv_type == TensorProto.FLOAT16
        if half:  # GQA's T is its cache's type on CPU
            names = ["qkv_proj"] if not qkv[1] else ["q", "k", "v"]  # packed: the node name it always had
            qkv = [g.node("Cast", [x], f"/model/layers.{i}/attn/{n}/Cast", to=TensorProto.FLOAT16) for n, x in zip(names, qkv)] + qkv[len(names):]
        y = g.node("GroupQueryAttention",
                   [*qkv, PAST_KEY % i, PAST_VALUE % i, self.seqlens_k, self.total_len, "cos_cache", "sin_cache"],
                   f"/model/layers.{i}/attn/GroupQueryAttention", n_out=3, domain="com.microsoft",
                   num_heads=c.num_attention_heads, kv_num_heads=c.num_key_value_heads,
                   scale=float(1.0 / np.sqrt(c.head_dim)), local_window_size=-1, softcap=0.0,
                   do_rotary=1, rotary_interleaved=0)[0]
        g.nodes[-1].output[1], g.nodes[-1].output[2] = PRESENT_KEY % i, PRESENT_VALUE % i
        if half:
            y = g.node("Cast", [y], f"/model/layers.{i}/attn/GroupQueryAttention/Cast", to=TensorProto.FLOAT)
        return y

    def _lm_head(self, w):
        g = self.g
        if w is not None:  # untied: its own weight
            self._linear(self.x, w, "lm_head", out_name="logits")
        elif self.int4:  # tied: MatMulNBits over the embedding's packed table
            V, H = self.c.vocab_size, self.c.hidden_size
            ins, attrs = self.embed
            g.node("MatMulNBits", [self.x, *ins], "/lm_head/MatMul_Q4", domain="com.microsoft",
                   K=H, N=V, accuracy_level=self.acc, **attrs)
            self._rename(None, "logits")
        else:
            wt = g.node("Transpose", [self.embed], "/lm_head/Transpose", perm=[1, 0])
            g.node("MatMul", [self.x, wt], "/lm_head/MatMul")
            self._rename(None, "logits")

    def model(self):
        c = self.c
        kv = lambda name, seq: helper.make_tensor_value_info(  # noqa: E731
            name, self.kv_type, ["batch_size", c.num_key_value_heads, seq, onnx_head_size(c)])
        L = c.num_hidden_layers
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
                  helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])]
        inputs += [kv(PAST_KEY % i, "past_sequence_length") for i in range(L)]
        inputs += [kv(PAST_VALUE % i, "past_sequence_length") for i in range(L)]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", c.vocab_size])]
        outputs += [kv(PRESENT_KEY % i, "total_sequence_length") for i in range(L)]
        outputs += [kv(PRESENT_VALUE % i, "total_sequence_length") for i in range(L)]
        graph = helper.make_graph(self.g.nodes, "edgepack_minicpm", inputs, outputs, self.g.inits)
        return helper.make_model(graph, opset_imports=OPSET, ir_version=10, producer_name="edgepack")


def check_block_size(ckpt, block_size):
    """MatMulNBits blocks run along each weight's input dimension: every one must divide by the block size."""
    if block_size not in (16, 32, 64, 128, 256):
        raise BadInput(f"block size {block_size} is not supported by MatMulNBits (16, 32, 64, 128 or 256)")
    from ..model.checkpoint import expected_shapes

    for dim in sorted({s[1] for s in expected_shapes(ckpt.config).values() if len(s) == 2}):
        if dim % block_size:
            raise NotSupported(f"{ckpt.path}: dimension {dim} is not a multiple of the int4 block size {block_size}")


def write_onnx(ckpt, out_dir: Path, *, dtype="int4", block_size=32, threads=None, progress=None, quantized=None,
               kv_dtype=None, vision_dtype=None, accuracy_level=ACCURACY_LEVEL) -> dict:
    """Write the onnxruntime-genai folder for `ckpt` into the existing empty `out_dir`.

    quantized: edgepack.quant's Quantized model (its codes, scales and rescaled norms are encoded as
    they are); None with dtype int4 encodes plain RTN with onnxruntime's own packer (above).
    kv_dtype: the KV cache's element type, "float16" or "float32" (default: KV_DTYPE for int4,
    float32 for the fp32 anchor). vision_dtype: a MiniCPM-V's vision.onnx weights, fp16 (default for int4)
    or fp32 (default for the fp32 anchor); the decoder is then also split for inputs_embeds (vision_onnx.py).
    accuracy_level: the int4 MatMulNBits' activation type (ACCURACY_LEVELS; export.TARGETS picks it)."""
    from ..model.fold import fold_scale

    if dtype not in ("int4", "fp32"):
        raise BadInput(f"ONNX dtype {dtype!r} is not supported (int4 or fp32)")
    if accuracy_level not in ACCURACY_LEVELS:
        raise BadInput(f"MatMulNBits accuracy_level {accuracy_level!r} is not one of {ACCURACY_LEVELS}")
    kv_dtype = kv_dtype or (KV_DTYPE if dtype == "int4" else "float32")
    if kv_dtype not in KV_DTYPES:
        raise BadInput(f"KV cache dtype {kv_dtype!r} is not supported ({' or '.join(KV_DTYPES)})")
    c = ckpt.config
    if dtype == "int4":
        check_block_size(ckpt, block_size)
    q_model = quantized
    if q_model is not None:
        if dtype != "int4":
            raise BadInput(f"quantized weights go into an int4 artifact, not {dtype}")
        if block_size != q_model.block or q_model.method.embed_bits not in (4, 8):
            raise NotSupported(f"int4 method {q_model.method.name} needs block size {q_model.block} and a 4- or 8-bit "
                               "embedding in ONNX (MatMulNBits/GatherBlockQuantized take 4 or 8 bits)")
    threads = int(threads or os.cpu_count() or 1)
    out_dir = Path(out_dir)
    names = ckpt.names
    # safetensors are memory-mapped and every page read stays in our RSS while the file is open:
    # closing the handles after each tensor keeps peak RSS at the working set, not the whole checkpoint.
    release = ckpt.close if any(ckpt.path.glob("*.safetensors")) or c.num_experts else (lambda: None)
    data = _DataFile(out_dir / DATA_FILE)
    try:
        w = _Writer(c, data, dtype, block_size, kv_dtype, accuracy_level)
        for k, name in enumerate(names):
            if q_model is not None:  # the quant stage's QTensors (fold constant into the scales) and norms
                s = fold_scale(c, name)
                if q_model.keeps_float(name):  # norms (AWQ-rescaled) and a router
                    t = (q_model.weight(name) * s).numpy()
                    release()
                    w.add(name, t)
                else:
                    w.add(name, q_model.qtensor(name).scaled(s))
                if progress:
                    progress("onnx", k + 1, len(names))
                continue
            s = fold_scale(c, name)
            if dtype == "int4" and len(ckpt.shape(name)) == 2:  # the packer converts and folds chunk by chunk
                t = Rows(ckpt.stored(name), s)
                release()
                w.add(name, t)
                del t
                if progress:
                    progress("onnx", k + 1, len(names))
                continue
            t = ckpt.torch(name)
            if s != 1.0:
                t.mul_(s)  # edgepack.model.fold's constant, in place: one copy of the largest tensor, not two
            release()
            w.add(name, t.numpy())
            del t
            if progress:
                progress("onnx", k + 1, len(names))
    finally:
        data.close()
    model = w.model()
    onnx.save_model(model, str(out_dir / MODEL_FILE))
    multimodal = None
    if c.vision is not None:
        from .vision_onnx import write_multimodal

        def vision(n):  # a copy, then let go of the shard's mapped pages (they count in RSS while mapped)
            a = ckpt.vision(n).numpy().copy()
            release()
            return a

        multimodal = write_multimodal(model, out_dir, c, vision, vision_dtype or ("fp32" if dtype == "fp32" else "fp16"))
    del model
    tok, tok_files = copy_tokenizer(ckpt.path, out_dir, c.context_length)
    eos = list(c.eos_token_ids)
    (out_dir / "genai_config.json").write_text(json.dumps(genai_config(c, threads, eos, c.bos_token_id, onnx_head_size(c)), indent=4))

    n_weights = sum(int(np.prod(ckpt.shape(n))) for n in names if len(ckpt.shape(n)) == 2)
    q = ({"scheme": "int4_sym_rtn", "bits": 4, "block_size": block_size, "method": "rtn (onnxruntime quantize_matmul_4bits)",
          "bits_per_weight": 4 + 32 / block_size} if dtype == "int4" else
         {"scheme": "fp32", "bits": 32, "block_size": None, "method": "none", "bits_per_weight": 32.0})
    if q_model is not None:
        q = q_model.describe()
    if dtype == "int4":
        q["accuracy_level"] = accuracy_level  # MatMulNBits' activations (ACCURACY_LEVELS)
    per, P = int(np.dtype(KV_DTYPES[kv_dtype][1]).itemsize), onnx_head_size(c)
    kv = {"dtype": kv_dtype, "bytes_per_element": per, "head_size": P,
          "layout": "K and V per layer, (batch, kv_heads, seq, head_size)" + (
              f" (MLA decompressed: q/k heads of {c.head_dim} and v heads of {c.v_head_dim} zero-padded to {P})"
              if c.attention == "mla" else ""),
          "bytes_per_token": 2 * c.num_hidden_layers * c.num_key_value_heads * P * per}
    out = {"format": "onnx", "quantization": q, "dtype": dtype, "threads": threads, "kv_cache": kv,
           "files": [MODEL_FILE, DATA_FILE, "genai_config.json", *tok_files], "quantized_weights": n_weights}
    if multimodal:
        out["multimodal"] = multimodal
    return out
