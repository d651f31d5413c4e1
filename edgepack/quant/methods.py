"""The int4 methods (rtn, asym, mse, awq, gptq and their mixes, +emb8/+emb5) and quantize_model.

This is export's quantization stage: export calls quantize_model once per format (inside
shared_calibration(), so ONNX and GGUF share one calibration) and hands the Quantized model to the
writers, which only fold and encode its codes and scales. All methods are deterministic (fixed
calibration tokens and order, no sampling). Why the defaults are what they are, with the figures:
benchmarks/README.md, decision log ("int4 method").
"""
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import BadInput
from . import kquant
from .blocks import BLOCK, QTensor, quantize
from .calibrate import _calibrate, calibration_ids, default_tokens
from .moe import is_expert, is_router, rtn


# The export defaults: the best measured method within 1.15x the plain RTN artifact (benchmarks/README.md, decision log).
# Act-order at gptq.AO_DAMP on calibrate.default_tokens: demo ONNX +2.9% / top-1 88.7%, GGUF +3.9% / 86.9%.
DEFAULT_METHOD = "awq_gptq_sym_ao+emb8"       # ONNX: MatMulNBits/GatherBlockQuantized take an 8-bit table
DEFAULT_GGUF_METHOD = "awq_gptq_sym_ao+emb5"  # GGUF: Q8_0's 8.5 bits/weight table would cost 1.19x; Q5_0 fits
DEFAULT_KQUANT_METHOD = "awq_gptq_sym"        # GGUF K types: their GPTQ runs in file order (no act-order)
KEEP8_BLOCK = 256  # 8-bit tensors: the largest power-of-two block ≤ this dividing K (int8 error is tiny
                   # even per 256 weights; fewer fp32 scales: 8.125 bits/weight instead of 9 at block 32)


# -- methods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    sym: bool = True
    clip: bool = False
    awq: bool = False
    gptq: bool = False
    act_order: bool = False  # GPTQ's columns in descending H-diagonal order, on grids fitted first (gptq.py)
    refine: bool = False  # least-squares scales for GPTQ's codes (gptq.refine_scales)
    seq: bool = False  # each group's inputs captured again once the groups before it are quantized
    ft: bool = False  # GPTQ aims at the float model's outputs W·x_float (calibrate.float_target); needs seq
    embed_bits: int = 4  # bits of the tied table / lm_head: 4, 5 (GGUF Q5_0's grid) or 8
    describe: str = ""
    damp: float = None  # GPTQ's damping (default: gptq.AO_DAMP with act-order, else gptq.DAMP)

    @property
    def calibrated(self):
        return self.awq or self.gptq or (self.clip and not self.sym and False)

    @property
    def gptq_damp(self):
        from . import gptq

        return self.damp if self.damp is not None else gptq.AO_DAMP if self.act_order else gptq.DAMP


METHODS = {m.name: m for m in [
    Method("rtn", describe="symmetric round-to-nearest (onnxruntime's packer / Q4_0 rule)"),
    Method("asym", sym=False, describe="asymmetric min/max with a zero point"),
    Method("mse", sym=False, clip=True, describe="asymmetric, per-block clip search on weight MSE"),
    Method("awq", sym=False, clip=True, awq=True, describe="AWQ scales folded into norms/v/up rows, asym, clip search"),
    Method("gptq", sym=False, clip=True, gptq=True, describe="GPTQ rounding with calibration Hessians, asym, clip search"),
    Method("awq_gptq", sym=False, clip=True, awq=True, gptq=True, describe="AWQ scales, then GPTQ rounding, asym"),
    Method("gptq_sym", clip=True, gptq=True, describe="GPTQ rounding, symmetric (Q4_0's grid), clip search"),
    Method("awq_gptq_sym", clip=True, awq=True, gptq=True, describe="AWQ scales, then GPTQ rounding, symmetric"),
    Method("awq_gptq_sym_ao", clip=True, awq=True, gptq=True, act_order=True,
           describe="AWQ scales, then GPTQ rounding in act-order (static groups), symmetric"),
    Method("awq_gptq_sym_ls", clip=True, awq=True, gptq=True, refine=True,
           describe="AWQ scales, GPTQ rounding, least-squares scales, symmetric"),
    Method("awq_gptq_sym_seq", clip=True, awq=True, gptq=True, seq=True,
           describe="AWQ scales, GPTQ rounding on inputs from the quantized groups before, symmetric"),
    Method("awq_gptq_sym_ft", clip=True, awq=True, gptq=True, seq=True, ft=True,
           describe="AWQ scales, GPTQ towards the float model's outputs, symmetric"),
    Method("awq_gptq_sym_ao_ft", clip=True, awq=True, gptq=True, act_order=True, seq=True, ft=True,
           describe="AWQ scales, GPTQ in act-order towards the float model's outputs, symmetric"),
    Method("awq_gptq_sym_ao_ls", clip=True, awq=True, gptq=True, act_order=True, refine=True,
           describe="AWQ scales, GPTQ rounding in act-order, least-squares scales, symmetric"),
]}


def method(spec):
    """A Method from a name, optionally with '+emb8' or '+emb5' (the tied embedding/lm_head at 8 or 5 bits)."""
    if isinstance(spec, Method):
        return spec
    base, *extras = spec.split("+")
    if base not in METHODS or len(extras) > 1 or any(e not in ("emb8", "emb5") for e in extras):
        raise BadInput(f"unknown int4 method {spec!r} (choose from {', '.join(METHODS)}, optionally +emb8 or +emb5)")
    m = METHODS[base]
    return replace(m, name=spec, embed_bits=int(extras[0][3:])) if extras else m


@dataclass
class Quantized:
    """A checkpoint's quantized weights: QTensors for 2-D weights, float tensors for (rescaled) norms.

    weight(name) is a drop-in `weights=` function for reference.MiniCPM / fidelity / fold.folded:
    the float32 tensor the quantized model computes with (dequantized or AWQ-rescaled)."""
    ckpt: object
    method: Method
    tensors: dict = field(default_factory=dict)
    floats: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    block8: int = KEEP8_BLOCK  # largest block of an 8-bit tensor (GGUF's Q8_0 needs 32)
    block4: int = BLOCK  # block of the 4-bit tensors (MatMulNBits takes 16..256; GGUF's Q4_0 is 32)
    # mixture-of-experts: expert codes spilled to disk as each layer finishes ({name: (path, bits, sym,
    # nbytes)}) so memory holds one layer's experts (MoE-8x2B's are ~7 GB in all); scratch: their
    # tempfile.TemporaryDirectory, removed when the last Quantized holding it goes
    spilled: dict = field(default_factory=dict)
    scratch: object = None
    kmix: str = None  # a llama.cpp K-quant mix (kquant.MIXES): each tensor on the grid kquant.mix() names

    def kind(self, name):
        """The grid of a 2-D weight under kmix ('q4_k', 'q6_k', 'q5_0', ...: kquant.py), known up front."""
        c = self.ckpt.config
        return kquant.mix(self.kmix, name, self.ckpt.shape(name)[-1], c.num_hidden_layers, c.tie_word_embeddings)

    def qtensor(self, name):
        if name in self.spilled:  # read back from disk for each use, never kept
            path, bits, sym, _ = self.spilled[name]
            with np.load(path) as f:
                return QTensor(f["data"], f["scales"], f["zeros"], bits, sym)
        if name not in self.tensors:  # calibration-free methods: computed on demand
            self.tensors[name] = self._plain(name)
        return self.tensors[name]

    def put(self, name, qt):
        """Keep one calibrated QTensor: in memory, or spilled to the scratch folder when there is one."""
        if self.scratch is None:
            self.tensors[name] = qt
            return
        path = f"{self.scratch.name}/{name}.npz"
        np.savez(path, data=qt.data, scales=qt.scales, zeros=qt.zeros)
        self.spilled[name] = (path, qt.bits, qt.sym, qt.nbytes)

    def nbytes(self, name):
        return self.spilled[name][3] if name in self.spilled else self.qtensor(name).nbytes

    def keeps_float(self, name):
        """Norms and a mixture-of-experts router: the writers encode weight(name) as floats."""
        return len(self.ckpt.shape(name)) == 1 or is_router(name)

    def weight(self, name):
        if name in self.floats:
            return self.floats[name]
        if self.keeps_float(name):
            return self.ckpt.torch(name)
        return torch.from_numpy(self.qtensor(name).dequantize())

    def bits(self, name):
        return self.qtensor(name).bits

    def planned_bits(self, name):
        """The bits qtensor(name) has or will have, without computing it (writers plan their layout)."""
        if self.kmix:
            k = self.kind(name)
            return kquant.BLOCK_KINDS.get(k) or kquant.K_KINDS[k][0]
        return self.method.embed_bits if _is_embed(name, self.ckpt.config) else 4

    @property
    def block(self):
        return self.block4

    def describe(self):
        return describe(self)

    def _plain(self, name):
        m, w = self.method, self.ckpt.torch(name)
        if is_expert(name):  # experts take the symmetric grid only (quant/moe.py)
            return rtn(w, self.block)
        if self.kmix:  # the table (and any weight not calibrated): round-to-nearest on its mix grid
            return kquant.quantize_as(w, self.kind(name), clip=m.clip and not _is_embed(name, self.ckpt.config))
        bits = m.embed_bits if _is_embed(name, self.ckpt.config) else 4
        if bits == 8:
            K = w.shape[1]
            return quantize(w, 8, sym=True, block=max(b for b in (32, 64, 128, 256) if b <= self.block8 and K % b == 0))
        if bits == 5:  # Q5_0's grid: symmetric, block 32
            return quantize(w, 5, sym=True)
        return quantize(w, 4, m.sym, m.clip, block=self.block)


def _embed_name(ckpt):
    return "lm_head.weight" if "lm_head.weight" in ckpt.names else "model.embed_tokens.weight"


def _is_embed(name, cfg):
    return name == "lm_head.weight" or (name == "model.embed_tokens.weight" and cfg.tie_word_embeddings)


_SHARED = None  # inside shared_calibration(): {key: the calibrated layers}, else no cache at all


@contextmanager
def shared_calibration():
    """Within the block, calibrated methods calibrate a checkpoint once and reuse its layers (the ONNX
    and GGUF of one export); leaving it lets go of them (a 2B model's layers are ~1.8 GB of codes)."""
    global _SHARED
    outer, _SHARED = _SHARED, ({} if _SHARED is None else _SHARED)
    try:
        yield
    finally:
        if outer is None:
            _SHARED = None


def quantize_model(ckpt, spec="rtn", tokenizer=None, n_tokens=None, progress=None, block8=KEEP8_BLOCK,
                   block=BLOCK, scratch=None, kmix=None):
    """Quantize ckpt with a method; calibrated methods stream the calibration layer by layer.
    n_tokens: calibration tokens (default calibrate.default_tokens(ckpt): 2048 to 8192 by the model's size).
    scratch: the folder where a mixture-of-experts model's calibrated expert codes are spilled (in a
    temporary folder of their own; default: the system's temporary folder).
    kmix: a llama.cpp K-quant mix ('q4_k_m', 'q4_k_s', 'q5_k_m'): every 2-D weight on the grid
    kquant.mix() gives it (K-quant super-blocks, or 32-weight Q5_0/Q8_0 where a row is not 256-wide),
    calibrated by the method's AWQ/GPTQ; the method's sym and +embN do not apply then."""
    from ..model.texts import sources

    m = method(spec)
    if kmix and ckpt.config.num_experts:
        raise BadInput("K-quant GGUF types are not offered for mixture-of-experts models: use GGUF type q4_0")
    if kmix:
        kquant.mix(kmix, "", 0, 0, False)  # an unknown mix is one clear error before any work
    if (m.seq or m.refine) and (kmix or ckpt.config.num_experts):
        raise BadInput(f"method {m.name} is for dense models' int4 grid: not with K-quant types or mixture-of-experts")
    n_tokens = default_tokens(ckpt) if n_tokens is None else n_tokens
    q = Quantized(ckpt, m, block8=block8, block4=block, kmix=kmix)
    q.info = {"method": m.name, "description": m.describe, "bits": 4, "block_size": block,
              "symmetric": m.sym, "embedding_bits": m.embed_bits}
    if kmix:
        q.info.update(kquant_mix=kmix, symmetric=None, embedding_bits=q.planned_bits(_embed_name(ckpt)))
    key = (str(ckpt.path), m.sym, m.clip, m.awq, m.gptq, m.act_order, m.refine, m.seq, m.ft, m.gptq_damp, n_tokens, block, kmix)
    if (m.awq or m.gptq) and _SHARED and key in _SHARED:  # the other format of the same export: same layers
        q.tensors.update(_SHARED[key].tensors)
        q.floats.update(_SHARED[key].floats)
        q.spilled.update(_SHARED[key].spilled)
        q.scratch = _SHARED[key].scratch
        q.info["calibration"] = _SHARED[key].info["calibration"]
        if "experts" in _SHARED[key].info:
            q.info["experts"] = _SHARED[key].info["experts"]
    elif m.awq or m.gptq:
        if tokenizer is None:
            from ..model.tokenizer import load_tokenizer

            c = ckpt.config
            tokenizer = load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)
        ids = calibration_ids(tokenizer, n_tokens)
        if ckpt.config.num_experts:
            import tempfile

            q.scratch = tempfile.TemporaryDirectory(prefix=".edgepack-experts-", dir=scratch)
        _calibrate(q, ids, progress)
        q.info["calibration"] = {"source": sources()[1], "tokens": int(ids.numel()), "sequences": int(ids.shape[0])}
        if _SHARED is not None:
            _SHARED.clear()
            _SHARED[key] = Quantized(ckpt, m, {n: t for n, t in q.tensors.items() if n.startswith("model.layers.")},
                                     dict(q.floats), dict(q.info), block4=block, spilled=dict(q.spilled),
                                     scratch=q.scratch, kmix=kmix)
    else:
        q.info["calibration"] = None
    return q


def digest(q):
    """sha256 (hex) of every code, scale and zero point and every float tensor of a Quantized model, in
    checkpoint order: equal digests mean bit-identical weights (calibration reproducibility checks)."""
    import hashlib

    h = hashlib.sha256()
    for name in q.ckpt.names:
        if not q.keeps_float(name):
            t = q.qtensor(name)
            h.update(t.data.tobytes() + t.scales.tobytes() + t.zeros.tobytes())
        else:
            h.update(q.weight(name).numpy().tobytes())
    return h.hexdigest()


def size_bytes(q):
    """Bytes of all quantized weights (codes + scales + zero points), norms (and a router) as float32."""
    total = 0
    for name in q.ckpt.names:
        if q.keeps_float(name):
            total += 4 * int(np.prod(q.ckpt.shape(name)))
        else:
            total += q.nbytes(name)
    return total


def describe(q):
    """The manifest's quantization fields for a Quantized model (bits/weight over all 2-D weights)."""
    names = [n for n in q.ckpt.names if len(q.ckpt.shape(n)) == 2]
    n_weights = sum(int(np.prod(q.ckpt.shape(n))) for n in names)
    nbytes = sum(4 * int(np.prod(q.ckpt.shape(n))) if q.keeps_float(n) else q.nbytes(n) for n in names)
    m = q.method
    if q.kmix:
        from collections import Counter

        kinds = Counter(q.kind(n) for n in names if not q.keeps_float(n))
        return {"scheme": q.kmix.upper(), "bits": 4 if q.kmix.startswith("q4") else 5, "block_size": kquant.QK_K,
                "method": m.name, "method_description": f"{m.describe}; llama.cpp's {q.kmix.upper()} type mix, "
                "edgepack's codes (K-quant super-blocks; Q5_0/Q8_0 where a row is not 256 wide)",
                "tensor_kinds": dict(kinds), "bits_per_weight": round(8 * nbytes / n_weights, 3),
                "gptq_damping": m.gptq_damp if m.gptq else None, "calibration": q.info.get("calibration")}
    return {"scheme": f"int4_{'sym' if m.sym else 'asym'}_block{q.block}" + (f"_emb{m.embed_bits}" if m.embed_bits != 4 else ""),
            "bits": 4, "block_size": q.block, "method": m.name, "method_description": m.describe,
            "embedding_bits": m.embed_bits, "bits_per_weight": round(8 * nbytes / n_weights, 3),
            "gptq_damping": m.gptq_damp if m.gptq else None, "calibration": q.info.get("calibration")}
