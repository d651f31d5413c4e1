"""MiniCPM-V in ONNX: vision.onnx (tower + resampler) and the decoder on inputs_embeds (genai's multimodal split).

vision.onnx: standard ops, one slice per run.

    pixel_values (1, 3, h·p, w·p)  position_ids (h·w) | pos_rows (h, G), pos_cols (w, G)   key_pos (h·w, D)
      ─ Conv(p×p, stride p) ─ + positions ─ N × [LayerNorm ─ attention ─ + ─ LayerNorm ─ gelu-tanh MLP ─ +]
      ─ LayerNorm ─ resampler (kv_proj, ln_kv, + key_pos on the keys, ln_q'd queries, softmax attention, out_proj,
        ln_post, @ proj) ─> image_embeds (1, query_num, D)

The positions come in as inputs computed by edgepack.image without torch: 4.0's NaViT bucket ids (a Gather
from the 70×70 table) or 2.0's bicubic resize of the 27×27 table written as two matrices (rows, cols:
table' = R · table · Cᵀ, antialiased cubic weights as PyTorch computes them); key_pos is the resampler's
2D sin-cos table of the slice's grid. A slice runs alone, so the graph has no padding mask: the reference's
masked batch is the same function (tests/test_minicpmv.py). Weights are float16 initializers Cast to float32
("fp16", the default) or float32 ("fp32", the conformance anchor); all arithmetic is float32.

The decoder: edgepack's usual graph (model.onnx, genai's text-only entry, unchanged) is split once more into
embedding.onnx (input_ids -> inputs_embeds: the embedding Gather alone) and decoder_embeds.onnx (the rest, fed
inputs_embeds), both pointing into the same model.onnx.data: the weights are stored once. An image prompt's
rows go straight into decoder_embeds; text goes through embedding first. onnxruntime-genai has no MiniCPM-V
image processor, so images run through edgepack's runtime (or any onnxruntime binding doing the same slicing).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import BadInput

OPSET = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
WDTYPES = ("fp16", "fp32", "int8")
# int8: the tower's linears as MatMulNBits with 8-bit codes in blocks of 32 (Q8_0's grid; zero point 128, the
# op's default) and float activations (accuracy_level 0: arm64's int8-activation path quantizes a whole row,
# benchmarks/arm_matmulnbits_kernels.py); the rest (patch conv, resampler, norms) stays fp16
INT8_BLOCK = 32


class _G:
    """The graph under construction. data: (open binary file, its name beside the .onnx) to stream each
    initializer of 1 KiB or more into as it is made, so the protos hold references and the tower's weights
    are never all in memory (MiniCPM-V 4.0: 0.8 GB of float16; whole-proto save_model peaked the 4.1B
    export at 4.04 GB RSS, benchmarks/bench_minicpmv.py)."""

    def __init__(self, wdtype, data=None):
        self.nodes, self.inits, self.n, self.wdtype, self.data = [], [], 0, wdtype, data

    def _init(self, a, name):
        t = onnx.numpy_helper.from_array(a, name)
        if self.data is not None and len(t.raw_data) >= 1024:
            f, location = self.data
            pad = -f.tell() % 64  # aligned, as onnx's own external-data writer does
            f.write(b"\0" * pad)
            offset = f.tell()
            f.write(t.raw_data)
            onnx.external_data_helper.set_external_data(t, location, offset, len(t.raw_data))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
        self.inits.append(t)

    def node(self, op, inputs, **attrs):
        self.n += 1
        out = f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{op}_{self.n}", **attrs))
        return out

    def weight(self, name, a):
        """A weight: float16 initializer + Cast (fp16, and int8's non-linear weights), or float32."""
        a = np.asarray(a, np.float32)
        if self.wdtype in ("fp16", "int8"):
            self._init(a.astype(np.float16), name)
            return self.node("Cast", [name], to=TensorProto.FLOAT)
        self._init(a, name)
        return name

    def const(self, a, name=None):
        name = name or f"const_{len(self.inits)}"
        self._init(np.asarray(a), name)
        return name

    def linear(self, x, get, prefix, bias=True):
        """x @ W.T (+ b) for W (out, in) stored transposed once (int8: MatMulNBits on W as it is)."""
        if self.wdtype == "int8":
            w = np.asarray(get(prefix + ".weight"), np.float32)
            codes, scales = int8_blocks(w)
            self._init(codes, prefix + ".weight_Q8")
            self._init(scales, prefix + ".weight_scales")
            y = self.node("MatMulNBits", [x, prefix + ".weight_Q8", prefix + ".weight_scales"], domain="com.microsoft",
                          K=w.shape[1], N=w.shape[0], bits=8, block_size=INT8_BLOCK, accuracy_level=0)
        else:
            y = self.node("MatMul", [x, self.weight(prefix + ".weight.T", get(prefix + ".weight").T)])
        return self.node("Add", [y, self.weight(prefix + ".bias", get(prefix + ".bias"))]) if bias else y

    def layernorm(self, x, get, prefix, eps):
        return self.node("LayerNormalization", [x, self.weight(prefix + ".weight", get(prefix + ".weight")),
                                                self.weight(prefix + ".bias", get(prefix + ".bias"))], axis=-1, epsilon=eps)

    def gelu_tanh(self, x):
        x3 = self.node("Mul", [self.node("Mul", [x, x]), x])
        inner = self.node("Mul", [self.node("Add", [x, self.node("Mul", [x3, self.const(np.float32(0.044715))])]),
                                  self.const(np.float32(np.sqrt(2 / np.pi)))])
        t = self.node("Add", [self.node("Tanh", [inner]), self.const(np.float32(1.0))])
        return self.node("Mul", [self.node("Mul", [x, t]), self.const(np.float32(0.5))])

    def attention(self, q, k, v, heads, hd):
        """q (Tq, heads·hd), k/v (Tk, heads·hd) -> (Tq, heads·hd): softmax(q kᵀ / sqrt(hd)) v per head."""
        split = lambda t: self.node("Transpose", [self.node("Reshape", [t, self.const(np.array([-1, heads, hd], np.int64))])],  # noqa: E731
                                    perm=[1, 0, 2])  # (heads, T, hd)
        qh, kh, vh = split(q), split(k), split(v)
        s = self.node("Mul", [self.node("MatMul", [qh, self.node("Transpose", [kh], perm=[0, 2, 1])]),
                              self.const(np.float32(1.0 / np.sqrt(hd)))])
        y = self.node("MatMul", [self.node("Softmax", [s], axis=-1), vh])  # (heads, Tq, hd)
        return self.node("Reshape", [self.node("Transpose", [y], perm=[1, 0, 2]), self.const(np.array([-1, heads * hd], np.int64))])


def int8_blocks(w, block=INT8_BLOCK):
    """W (N, K) -> MatMulNBits' 8-bit B (N, ceil(K/block), block) uint8 and scales (N, ceil(K/block)) float32:
    symmetric, scale = max|w| / 127 per block, code = round(w / scale) + 128 (K padded with zeros)."""
    N, K = w.shape
    nb = -(-K // block)
    b = np.zeros((N, nb * block), np.float32)
    b[:, :K] = w
    b = b.reshape(N, nb, block)
    scales = np.abs(b).max(-1) / 127
    q = np.round(b / np.where(scales == 0, 1, scales)[..., None])
    return (np.clip(q, -127, 127) + 128).astype(np.uint8), scales.astype(np.float32)


def vision_graph(v, get, wdtype="fp16", data=None):
    """The ModelProto. get(canonical name) -> float32 numpy array; data: see _G."""
    g, H, D, eps = _G(wdtype, data), v.hidden_size, v.embed_dim, v.layer_norm_eps
    # patches: Conv -> (1, H, h, w) -> (h·w, H), row-major like the reference
    x = g.node("Conv", ["pixel_values", g.weight("vpm.patch_embedding.weight", get("vpm.embeddings.patch_embedding.weight")),
                        g.weight("vpm.patch_embedding.bias", get("vpm.embeddings.patch_embedding.bias"))],
               kernel_shape=[v.patch_size] * 2, strides=[v.patch_size] * 2)
    x = g.node("Transpose", [g.node("Reshape", [x, g.const(np.array([H, -1], np.int64))])], perm=[1, 0])  # (L, H)
    table = g.weight("vpm.position_embedding", get("vpm.embeddings.position_embedding.weight"))  # (G², H)
    if v.position == "bucketed":
        inputs = [helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["patches"])]
        pos = g.node("Gather", [table, "position_ids"], axis=0)
    else:  # R (h, G) · T (G, G·H) -> (h, G, H) -> (h, H, G) · Cᵀ (G, w) -> (h, H, w) -> (h, w, H) -> (h·w, H)
        G = v.position_grid
        inputs = [helper.make_tensor_value_info("pos_rows", TensorProto.FLOAT, ["h", G]),
                  helper.make_tensor_value_info("pos_cols", TensorProto.FLOAT, ["w", G])]
        t = g.node("MatMul", ["pos_rows", g.node("Reshape", [table, g.const(np.array([G, G * H], np.int64))])])
        t = g.node("Transpose", [g.node("Reshape", [t, g.const(np.array([-1, G, H], np.int64))])], perm=[0, 2, 1])
        t = g.node("MatMul", [t, g.node("Transpose", ["pos_cols"], perm=[1, 0])])
        pos = g.node("Reshape", [g.node("Transpose", [t], perm=[0, 2, 1]), g.const(np.array([-1, H], np.int64))])
    x = g.node("Add", [x, pos])
    hd = H // v.num_attention_heads
    for i in range(v.num_hidden_layers):
        p = f"vpm.encoder.layers.{i}."
        h = g.layernorm(x, get, p + "layer_norm1", eps)
        q, k, vv = (g.linear(h, get, p + f"self_attn.{n}") for n in ("q_proj", "k_proj", "v_proj"))
        x = g.node("Add", [x, g.linear(g.attention(q, k, vv, v.num_attention_heads, hd), get, p + "self_attn.out_proj")])
        h = g.layernorm(x, get, p + "layer_norm2", eps)
        x = g.node("Add", [x, g.linear(g.gelu_tanh(g.linear(h, get, p + "mlp.fc1")), get, p + "mlp.fc2")])
    x = g.layernorm(x, get, "vpm.post_layernorm", eps)
    # resampler
    kv = g.node("MatMul", [x, g.weight("resampler.kv_proj.weight.T", get("resampler.kv_proj.weight").T)])
    kv = g.layernorm(kv, get, "resampler.ln_kv", 1e-6)
    q = g.layernorm(g.weight("resampler.query", get("resampler.query")), get, "resampler.ln_q", 1e-6)
    if v.query_pos:
        q = g.node("Add", [q, g.weight("resampler.pos_embed", get("resampler.pos_embed"))])
    W, b = get("resampler.attn.in_proj_weight"), get("resampler.attn.in_proj_bias")
    proj = lambda t, k: g.node("Add", [g.node("MatMul", [t, g.weight(f"resampler.attn.{k}.weight.T", W[k * D:(k + 1) * D].T)]),  # noqa: E731
                                       g.weight(f"resampler.attn.{k}.bias", b[k * D:(k + 1) * D])])
    y = g.attention(proj(q, 0), proj(g.node("Add", [kv, "key_pos"]), 1), proj(kv, 2), v.resampler_heads, D // v.resampler_heads)
    y = g.node("Add", [g.node("MatMul", [y, g.weight("resampler.attn.out_proj.weight.T", get("resampler.attn.out_proj.weight").T)]),
                       g.weight("resampler.attn.out_proj.bias", get("resampler.attn.out_proj.bias"))])
    y = g.node("MatMul", [g.layernorm(y, get, "resampler.ln_post", 1e-6), g.weight("resampler.proj", get("resampler.proj"))])
    g.nodes.append(helper.make_node("Unsqueeze", [y, g.const(np.array([0], np.int64))], ["image_embeds"], name="/out"))
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, "height", "width"]), *inputs,
              helper.make_tensor_value_info("key_pos", TensorProto.FLOAT, ["patches", D])]
    outputs = [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, [1, v.query_num, D])]
    graph = helper.make_graph(g.nodes, "edgepack_minicpmv_vision", inputs, outputs, g.inits)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=10, producer_name="edgepack")


def write_vision_onnx(v, get, path, wdtype="fp16"):
    if wdtype not in WDTYPES:
        raise BadInput(f"vision weights {wdtype!r} are not supported ({', '.join(WDTYPES)})")
    with open(path.parent / (path.name + ".data"), "wb") as f:
        model = vision_graph(v, get, wdtype, data=(f, path.name + ".data"))
    onnx.save_model(model, str(path))
    return {"path": path.name, "data": path.name + ".data", "dtype": wdtype}


# -- the decoder on inputs_embeds, cut out of model.onnx ---------------------------------------------
from .onnx_files import DECODER_EMBEDS_FILE, EMBEDDING_FILE, VISION_FILE  # noqa: E402,F401  (re-exported)


def split_embedding(model, hidden):
    """model.onnx's ModelProto -> (embedding, decoder_embeds) ModelProtos sharing its initializers."""
    g = model.graph
    gather = next(n for n in g.node if "input_ids" in n.input)
    made = {o: n for n in g.node for o in n.output}
    front = [made[i] for i in gather.input if i in made] + [gather]  # the table's Reshape (int4), then the gather
    emb_out = gather.output[0]
    rest = [n for n in g.node if n not in front]
    for n in rest:
        for k, i in enumerate(n.input):
            if i == emb_out:
                n.input[k] = "inputs_embeds"
    embeds = helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch_size", "sequence_length", hidden])

    def used(nodes):
        names = {i for n in nodes for i in n.input}
        return [t for t in g.initializer if t.name in names]

    front_nodes = [helper.make_node(n.op_type, list(n.input), list(n.output), name=n.name, domain=n.domain,
                                    **{a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in front]
    front_nodes[-1].output[0] = "inputs_embeds"
    emb = helper.make_graph(front_nodes, "edgepack_embedding", [g.input[0]], [embeds], used(front))
    dec = helper.make_graph(rest, "edgepack_decoder_embeds", [embeds, *g.input[1:]], list(g.output), used(rest))
    mk = lambda gr: helper.make_model(gr, opset_imports=list(model.opset_import), ir_version=model.ir_version,  # noqa: E731
                                      producer_name="edgepack")
    return mk(emb), mk(dec)


def write_multimodal(model, out_dir, cfg, get, vision_dtype="fp16"):
    """embedding.onnx + decoder_embeds.onnx (from model.onnx's graph) and vision.onnx into out_dir."""
    emb, dec = split_embedding(model, cfg.hidden_size)
    onnx.save_model(emb, str(out_dir / EMBEDDING_FILE))
    onnx.save_model(dec, str(out_dir / DECODER_EMBEDS_FILE))
    info = write_vision_onnx(cfg.vision, get, out_dir / VISION_FILE, vision_dtype)
    return {"embedding": EMBEDDING_FILE, "decoder": DECODER_EMBEDS_FILE, "vision": info}
