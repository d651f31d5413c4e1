"""Multi-head latent attention (MiniCPM3, attention "mla") for the ONNX writer: onnxruntime has no MLA operator,
so each step decompresses the latent into the same GroupQueryAttention (kv heads = heads), exactly:

    MatMulNBits(q_a | kv_a_mqa) ─ Split ─ q_a ─ SimplifiedLayerNorm ─ MatMulNBits(q_b, rows per head [rope | nope])
                                        ├ latent ─ SimplifiedLayerNorm ─ MatMulNBits(kv_b, rows [k nope … | v …]) ─ Split
                                        └ k_rope (one head) ─ Expand to every head
    Q = [q_rope | q_nope | 0], K = [k_rope | k_nope | 0], V = [v | 0] per head, each P wide
    GroupQueryAttention(q, K, V; rotary over the first D dims: the cos/sin caches are D/2 wide;
                        scale 1/sqrt(nope + rope), the true q/k width)
    ─ Slice each head's first v_head_dim outputs ─ MatMulNBits(o_proj, the checkpoint's own rows)

The rope part goes first in each head because GQA rotates the first 2·(cache width) dims of a head and
leaves the rest as they are (tests/test_mla.py checks it against the reference and that the other order
fails). Slicing the output instead of giving o_proj zero columns keeps o_proj's int4 blocks those of the
checkpoint (shared with the GGUF and the quant stage) and its cost that of the real model.

Heads of any width (issue 34): GQA wants k and v equally wide, heads a multiple of 16 and caches a
multiple of 8 wide. So P (manifest.onnx_head_size) is the next multiple of 16 at least as wide as
nope + rope and v_head_dim, the zeros are Pad nodes after q_b_proj and kv_b_proj (zero columns add nothing
to q·k: exact; every weight and its int4 blocks, which run along the input widths, stay the checkpoint's),
and D (mla_rotary_dim) is rope_dim rounded up to 16: the caches turn the extra pairs by angle 0 and
mla_head_order puts nope dims there. MiniCPM3-4B (nope 64 + rope 32, v 64) needs none of it. The cache
holds decompressed K and V, (batch, heads, seq, P) each: what genai_config's head_size, the manifest's
kv_cache and `inspect` say.
"""
import numpy as np

from ..errors import NotSupported
from .manifest import onnx_head_size
from .onnx_graph import Rows, _cat


def add(w, i, rest, t):
    """One of layer i's attention tensors (all but o_proj) into the writer w's graph, in checkpoint order."""
    c, g, st = w.c, w.g, w.qkv
    n, hd, r, vd, P = c.num_attention_heads, c.head_dim, c.rope_dim, c.v_head_dim, onnx_head_size(c)
    name, node = f"model.layers.{i}.attn", f"/model/layers.{i}/attn"
    st[rest] = t
    if rest == "self_attn.kv_a_proj_with_mqa.weight":  # both read the layer's normed input: one MatMul
        a = w._linear(w.x, _cat([st.pop("self_attn.q_a_proj.weight"), st.pop(rest)]), f"{name}.q_a_kv_a_proj")
        st["q_a"], st["latent"], st["k_rope"] = g.node("Split", [a, g.const([c.q_lora_rank, c.kv_lora_rank, r])],
                                                       f"{node}/q_a_kv_a_proj/Split", n_out=3, axis=-1)
    elif rest == "self_attn.q_a_layernorm.weight":
        st["q_a"] = _plain_norm(w, st.pop("q_a"), st.pop(rest), f"{node}/q_a_layernorm", f"model.layers.{i}.{rest}")
    elif rest == "self_attn.q_b_proj.weight":  # rows of each head reordered to [rope | nope]
        st["q"] = w._linear(st.pop("q_a"), _rows(st.pop(rest), mla_q_rows(c)), f"{name}.q_b_proj")
    elif rest == "self_attn.kv_a_layernorm.weight":
        st["latent"] = _plain_norm(w, st.pop("latent"), st.pop(rest), f"{node}/kv_a_layernorm", f"model.layers.{i}.{rest}")
    elif rest == "self_attn.kv_b_proj.weight":  # rows reordered to [k_nope of every head | v of every head]
        kv = w._linear(st.pop("latent"), _rows(st.pop(rest), mla_kv_rows(c)), f"{name}.kv_b_proj")
        k_nope, v = g.node("Split", [kv, g.const([n * (hd - r), n * vd])], f"{node}/kv_b_proj/Split", n_out=2, axis=-1)
        k_nope = g.node("Reshape", [k_nope, g.const([0, 0, n, hd - r])], f"{node}/k_nope/Reshape")
        k_rope = g.node("Reshape", [st.pop("k_rope"), g.const([0, 0, 1, r])], f"{node}/k_rope/Reshape")
        k_rope = g.node("Expand", [k_rope, g.const([1, 1, n, 1])], f"{node}/k_rope/Expand")  # shared by every head
        k = g.node("Concat", [k_rope, k_nope], f"{node}/k/Concat", axis=-1)  # (B, T, n, hd)
        if not np.array_equal(perm := mla_head_order(c), np.arange(hd)):  # q_b's rows are in this order too
            k = g.node("Gather", [k, g.const(perm.tolist())], f"{node}/k/Gather", axis=3)
        q = st.pop("q")
        if P != hd:  # zeros after each q/k head: GQA wants heads of P (a multiple of 16), q·k is unchanged
            k = g.node("Pad", [k, g.const([0, 0, 0, 0, 0, 0, 0, P - hd])], f"{node}/k/Pad")
            q = _pad_heads(w, q, hd, P, f"{node}/q")
        k = g.node("Reshape", [k, g.const([0, 0, n * P])], f"{node}/k/Reshape")
        if vd != P:  # GQA wants v as wide as k: zeros after each head's v (their outputs are sliced off)
            v = _pad_heads(w, v, vd, P, f"{node}/v")
        y = w._gqa(i, [q, k, v])  # (B, T, n·P)
        if vd != P:
            y = g.node("Reshape", [y, g.const([0, 0, n, P])], f"{node}/y/Reshape")
            y = g.node("Slice", [y, g.const([0]), g.const([vd]), g.const([3])], f"{node}/y/Slice")
            y = g.node("Reshape", [y, g.const([0, 0, n * vd])], f"{node}/y/Reshape_1")
        w.x = y

def _pad_heads(w, x, width, P, name):
    """(B, T, n·width) -> (B, T, n·P): zeros after each head."""
    g, n = w.g, w.c.num_attention_heads
    x = g.node("Reshape", [x, g.const([0, 0, n, width])], f"{name}/Reshape")
    x = g.node("Pad", [x, g.const([0, 0, 0, 0, 0, 0, 0, P - width])], f"{name}/Pad")
    return g.node("Reshape", [x, g.const([0, 0, n * P])], f"{name}/Reshape_1")

def _plain_norm(w, x, weight, name, init_name):
    return w.g.node("SimplifiedLayerNormalization", [x, w.g.init(init_name, weight)], name + "/LayerNorm",
                       epsilon=w.c.latent_norm_eps, axis=-1, stash_type=1)


def mla_rotary_dim(c):
    """The dims of each head GQA rotates: rope_dim rounded up to 16 (its cos/sin caches are a multiple of 8 wide)."""
    return -(-c.rope_dim // 16) * 16 if c.attention == "mla" else c.rope_dim


def mla_head_order(c):
    """Each q/k head in the graph, as indices into [rope | nope]: identity when rope_dim is a multiple of 16.
    Otherwise GQA rotates dims j and j + D/2 (D = mla_rotary_dim) where RoPE pairs rope dims j and j + rope/2,
    so the rope halves go to 0 and D/2 and nope dims fill the gaps, which the caches turn by angle 0."""
    r, nope, D = c.rope_dim, c.head_dim - c.rope_dim, mla_rotary_dim(c)
    f = (D - r) // 2  # gap after each rope half
    if 2 * f > nope:
        raise NotSupported(f"MLA heads of qk_rope_head_dim {r} need qk_nope_head_dim >= {2 * f} in ONNX "
                           f"(GroupQueryAttention rotates {D} dims), not {nope}")
    h, no = r // 2, r + np.arange(nope)
    return np.r_[0:h, no[:f], h:r, no[f:2 * f], no[2 * f:]]


def mla_q_rows(c):
    """q_b_proj's rows in the graph's order: each head [rope | nope] (the checkpoint has [nope | rope]),
    in mla_head_order."""
    hd, r = c.head_dim, c.rope_dim
    per = np.r_[hd - r:hd, 0:hd - r][mla_head_order(c)]
    return np.concatenate([h * hd + per for h in range(c.num_attention_heads)])


def mla_kv_rows(c):
    """kv_b_proj's rows in the graph's order: k_nope of every head, then v of every head."""
    nope, vd, n = c.head_dim - c.rope_dim, c.v_head_dim, c.num_attention_heads
    per = nope + vd
    return np.concatenate([h * per + np.arange(nope) for h in range(n)] + [h * per + nope + np.arange(vd) for h in range(n)])


def _rows(w, index):
    """The same weight with its rows reordered (float array, Rows or QTensor)."""
    if isinstance(w, np.ndarray):
        return w[index]
    if isinstance(w, Rows):
        import torch

        return Rows(w.t[torch.as_tensor(index)], w.scale)
    return w.rows(index)
