"""Mixture-of-experts layers for the ONNX writer: one com.microsoft QMoE node per layer (MoE for fp32).

    x (normalized) ─ MatMul(router, float) ─ Reshape[-1, E] ─┐
    x ───────────────────────────────────────────────────────┴─ QMoE(k, swiglu) ─ output (added to the residual)

onnxruntime-genai's builder emits the same for its CPU MoE models (Qwen3.5-MoE, gpt-oss: router MatMul ->
Reshape, QMoE with activation_type swiglu, swiglu_fusion 1, normalize_routing_weights 1). The op's contract
on CPU (onnxruntime >= 1.23.1; checked on 1.32):
- router_probs are the router's logits (N, E); the kernel takes the top k and a softmax over them, which
  equals the top k of the softmax renormalised (MiniCPM-MoE's routing),
- fc1 (E, 2F, H/2) uint8 holds each expert's gate (w1) and up (w3) rows interleaved g0, u0, g1, u1, ...
  (swiglu_fusion=1, the only fused layout the CPU kernel implements: separate fc3 is "not implemented"),
  activation silu(g)·u with activation_alpha 1, activation_beta 0,
- fc2 (E, H, F/2): w2; weights are MatMulNBits' int4 layout (two codes a byte, low nibble first, zero
  point 8) with float scales (E, N, K/block_size) and the block_size attribute (expert_weight_bits 4).
Interleaving quantized rows is the same as quantizing interleaved rows (blocks run along each row), so each
expert is packed by onnxruntime's own quantize_matmul_4bits like every MatMulNBits weight, or, from a
calibrated export, arrives as edgepack.quant's QTensor (symmetric 4-bit on the same grid, quant/moe.py) and
its codes and scales are written as they are. A layer's experts
are collected as they stream in and encoded when the last one arrives: one layer's experts alive at a time.
"""
import re

import numpy as np

from ..errors import InternalError

EXPERT = re.compile(r"mlp\.experts\.(\d+)\.(w[123])\.weight$")


def handles(rest):
    return rest == "mlp.gate.weight" or EXPERT.match(rest) is not None


def add(wr, i, rest, t):
    """Feed one router or expert tensor of layer i to writer wr (onnx_writer._Writer)."""
    g, c = wr.g, wr.c
    if rest == "mlp.gate.weight":  # the router stays float: routing decides which experts run at all
        w = t if isinstance(t, np.ndarray) else t.t.float().numpy() * t.scale
        logits = g.node("MatMul", [wr.x, g.init(f"model.layers.{i}.moe.gate.MatMul.weight", np.ascontiguousarray(w.T))],
                        f"/model/layers.{i}/moe/gate/MatMul")
        wr.moe = {"x": wr.x, "router": g.node("Reshape", [logits, g.const([-1, c.num_experts])],
                                               f"/model/layers.{i}/moe/gate/Reshape")}
        return
    j, role = EXPERT.match(rest).groups()
    wr.moe[(int(j), role)] = t
    if len(wr.moe) == 2 + 3 * c.num_experts:
        _emit(wr, i)


def _emit(wr, i):
    g, c, m = wr.g, wr.c, wr.moe
    E, F, H = c.num_experts, c.intermediate_size, c.hidden_size
    p = f"model.layers.{i}.moe.experts"
    if wr.int4:
        fc1, s1, fc2, s2 = [], [], [], []
        for e in range(E):
            (pg, sg), (pu, su) = (_int4(m[e, w], wr.bs) for w in ("w1", "w3"))
            fc1.append(np.stack([pg.reshape(F, -1), pu.reshape(F, -1)], 1).reshape(2 * F, -1))  # g0, u0, g1, u1, ...
            s1.append(np.stack([sg, su], 1).reshape(2 * F, -1))
            pd, sd = _int4(m[e, "w2"], wr.bs)
            fc2.append(pd.reshape(H, -1))
            s2.append(sd)
            for w in ("w1", "w2", "w3"):
                del m[e, w]  # one expert's codes at a time beside the stacked ones
        ins = [g.init(f"{p}.gate_up_proj.qweight", np.stack(fc1)), g.init(f"{p}.gate_up_proj.scales", np.stack(s1)), "",
               g.init(f"{p}.down_proj.qweight", np.stack(fc2)), g.init(f"{p}.down_proj.scales", np.stack(s2)), ""]
        op, attrs = "QMoE", {"expert_weight_bits": 4, "block_size": wr.bs}
    else:
        fc1 = np.stack([np.stack([m[e, "w1"], m[e, "w3"]], 1).reshape(2 * F, H) for e in range(E)])
        fc2 = np.stack([m[e, "w2"] for e in range(E)])
        ins = [g.init(f"{p}.gate_up_proj.weight", fc1), "", g.init(f"{p}.down_proj.weight", fc2), ""]
        op, attrs = "MoE", {}
    x, router = m["x"], m["router"]
    wr.moe = None
    wr.pending = g.node(op, [x, router, *ins], f"/model/layers.{i}/moe/{op}", domain="com.microsoft",
                        k=c.num_experts_per_tok, activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.0,
                        activation_beta=0.0, normalize_routing_weights=1, use_sparse_mixer=0, **attrs)


def _int4(t, block_size):
    """(packed codes (N, K/block, block/2), scales (N, K/block)) of an expert: a calibrated QTensor's own,
    or onnxruntime's packer over the float rows (Rows)."""
    from ..quant.blocks import QTensor
    from .onnx_graph import quantize_int4

    if isinstance(t, QTensor):
        if t.bits != 4 or not t.sym or t.block_size != block_size:
            raise InternalError(f"QMoE takes symmetric 4-bit experts in blocks of {block_size}, not {t.bits}-bit "
                                f"{'symmetric' if t.sym else 'asymmetric'} blocks of {t.block_size}")
        return t.packed(), t.scales
    return quantize_int4(t.t, block_size, scale=t.scale)
