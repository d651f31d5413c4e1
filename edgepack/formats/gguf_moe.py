"""Mixture-of-experts tensors for the GGUF writer: each layer's experts stacked into one tensor per role.

llama.cpp's minicpm arch (its Granite graph with MoE: build_moe_ffn with softmax gating and normalised
top-k weights) reads, per layer,

    blk.N.ffn_gate_inp   (n_expert, hidden)              the router, f32 (llama-quantize keeps it so)
    blk.N.ffn_gate_exps  (n_expert, ff, hidden)          every expert's w1, stacked
    blk.N.ffn_up_exps    (n_expert, ff, hidden)          w3
    blk.N.ffn_down_exps  (n_expert, hidden, ff)          w2

plus the keys {arch}.expert_count and {arch}.expert_used_count. Quantized blocks run along each row, so a
stacked tensor is its experts' blocks one after the other: each expert is read, converted and quantized on
its own, and only one expert's float copy exists at a time. From a calibrated export each expert arrives
as edgepack.quant's codes (symmetric 4-bit, blocks of 32: Q4_0 exactly, quant/moe.py) and is encoded as it is. llama.cpp's converter has no MiniCPM expert
stacking; names come from gguf-py's constants like every other tensor's.
"""
import re

import numpy as np

EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(w[123])\.weight$")
ROUTER = re.compile(r"model\.layers\.(\d+)\.mlp\.gate\.weight$")
STACKED = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(w[123])$")  # a plan's stand-in for E tensors
ROLES = (("w1", "FFN_GATE_EXP"), ("w3", "FFN_UP_EXP"), ("w2", "FFN_DOWN_EXP"))


def is_expert(hf):
    return EXPERT.match(hf) is not None


def stacked_entries(cfg, hf, wtype):
    """After a layer's router: (gguf name, stand-in name, shape, ggml type) of its three stacked tensors."""
    import gguf

    i = int(ROUTER.match(hf).group(1))
    E, F, H = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
    out = []
    for w, role in ROLES:
        shape = (E, H, F) if w == "w2" else (E, F, H)
        qtype = wtype
        if qtype not in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32) and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = gguf.GGMLQuantizationType.F16
        name = gguf.TENSOR_NAMES[getattr(gguf.MODEL_TENSOR, role)].format(bid=i) + ".weight"
        out.append((name, f"model.layers.{i}.mlp.experts.{w}", shape, qtype))
    return out


def stacked_tensor(ckpt, hf, qtype, quantize, encoded=None):
    """The bytes (or floats) of one stacked tensor, expert by expert; quantize(float32 2-D, qtype) -> array,
    or encoded(expert tensor name) -> its bytes in qtype (a calibrated export's codes)."""
    i, w = STACKED.match(hf).groups()
    parts = None
    for j in range(ckpt.config.num_experts):
        name = f"model.layers.{i}.mlp.experts.{j}.{w}.weight"
        t = encoded(name) if encoded else quantize(np.ascontiguousarray(ckpt.torch(name).numpy()), qtype)
        if parts is None:
            parts = np.empty((ckpt.config.num_experts, *t.shape), t.dtype)
        parts[j] = t
    return parts


def add_hparams(w, cfg):
    if cfg.num_experts:
        w.add_expert_count(cfg.num_experts)
        w.add_expert_used_count(cfg.num_experts_per_tok)
