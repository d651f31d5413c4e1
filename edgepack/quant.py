"""Calibration-aware int4: block quantizers, AWQ-style scaling, GPTQ-style rounding, 8-bit keeps.

Every scheme produces the same thing per 2-D weight: codes on a block grid along the input dimension
(K), one scale per block and (asymmetric) one integer zero point per block,

    w ≈ scale · (code − zero)      code ∈ [0, 2^bits − 1]

which is exactly MatMulNBits' layout (ONNX) and, for 4 bits with zero 8 and fp16 scales, exactly
GGUF's Q4_0 (asymmetric codes map onto Q4_1: d = scale, m = −scale·zero). Scales are rounded to
fp16 so both formats store them without a second rounding.

Methods (Method, METHODS), all deterministic (fixed calibration tokens and order, no sampling):
- rtn: symmetric round-to-nearest (the vmax/−8 rule of onnxruntime's packer and gguf's Q4_0).
- asym: min/max with a zero point.  mse: asym + per-block clip search (error weighted by E[x²]
  when calibrated, plain weight MSE otherwise).
- awq: per-input-channel scales s = E|x|^α (α searched per group on the calibration activations),
  w·s quantized, 1/s folded *exactly* into what feeds the group: the input RMSNorm weight for
  q/k/v and gate/up, v_proj rows for o_proj (tied across the query heads of one KV head under
  GQA), up_proj rows for down_proj.
- gptq: error-compensating rounding column by column with the inverse calibration Hessian
  H = XᵀX (1% damping, lazy 32-column batches), grid fitted per block on the updated weights.
- +emb8 / +emb5: the tied embedding/lm_head (the most sensitive tensor, measured) at 8 bits
  (symmetric, block KEEP8_BLOCK) or at 5 bits (GGUF Q5_0's grid).
  onnxruntime 1.32 runs MatMulNBits and GatherBlockQuantized with bits=8 (checked), so they stay
  quantized in the ONNX graph.

This is export's quantization stage (load -> canonical model -> quantize -> encode): export calls
quantize_model once per format (inside shared_calibration(), so ONNX and GGUF share one calibration)
and hands the Quantized model to the writers, which only fold and encode its codes and scales
(edgepack.onnx_writer: MatMulNBits; edgepack.gguf_writer.blocks: Q4_0/Q4_1/Q5_0/Q8_0). Plain RTN
(`--method rtn`) is encoded by each format's own quantizer instead: onnxruntime's packer and
gguf.quants' Q4_0 are what the builder and llama-quantize write, and they differ from this module's
rtn (fp16 scales, other rounding of ties) in a few hundred codes per tensor, so both stay bit-exact.

Calibration streams layer by layer (calibrate()): the calibration tokens' hidden states go through
one float layer, the inputs of its seven linears are captured, scales/Hessians computed, the layer
quantized, and the *quantized* layer produces the next layer's input. Only one layer's weights and
activations are alive at a time (benchmarks/bench_calibration_2b.py measures the 2B shape).

Measured on the demo model (benchmarks/quant_methods.py, fake-quant through the float reference,
first 2048 tokens of edgepack.texts.eval_text(), calibration on calibration_text()):

Fake quantization (float reference on the dequantized weights; the int8 activations of MatMulNBits
and llama.cpp are not modelled). Float ppl 11.91. Size: codes + fp32 scales + packed zero points vs
plain RTN (benchmarks/results/quant_methods.json):

    | method | ppl | Δ ppl | top-1 | KL | bits/weight | size vs rtn |
    |---|---|---|---|---|---|---|
    | rtn | 15.74 | +32.2% | 72.4% | 0.327 | 5.01 | 1.000 |
    | asym | 15.95 | +33.9% | 73.1% | 0.324 | 5.13 | 1.025 |
    | gptq+emb8 | 12.71 | +6.8% | 86.4% | 0.077 | 5.84 | 1.167 |
    | awq_gptq+emb8 | 12.69 | +6.5% | 88.8% | 0.057 | 5.84 | 1.167 |
    | rtn+emb8 | 14.54 | +22.1% | 75.3% | 0.253 | 5.74 | 1.147 |
    | gptq_sym+emb8 | 13.08 | +9.8% | 86.0% | 0.092 | 5.74 | 1.147 |

    (This sweep predates the stacked-rows GPTQ pass and 32-column batches; the export table below
    was re-measured after them. awq rows were measured with 20 α × 512 scoring tokens and the
    calibration fed through the quantized table; the shipped settings are 10 α × 256 tokens and
    the float table.)

What earned its place: the 8-bit table (rtn -> rtn+emb8: +32% -> +22%) and GPTQ (+22% -> +7..10%);
AWQ on top improves top-1 and KL further (86.4% -> 88.8% with zero points). Zero points (asym)
alone do nothing here (+33.9% vs +32.2%) and cost 0.125 bit/weight, which the size budget cannot
afford next to the 8-bit table, so the defaults are symmetric.

The defaults through the real runtimes (`edgepack export --model demo`, fidelity by onnxruntime /
llama.cpp on 2048 eval tokens; sizes are whole artifact folders vs `--method rtn`;
benchmarks/results/quant_export_demo.json):

    | format | method            | ppl   | Δ ppl | top-1 | KL    | size vs rtn |
    |--------|-------------------|-------|-------|-------|-------|-------------|
    | onnx   | rtn (packer)      | 15.84 | +33.0%| 72.5% | 0.330 | 1.000       |
    | onnx   | awq_gptq_sym+emb8 | 12.43 | +4.3% | 87.0% | 0.073 | 1.137       |
    | gguf   | rtn (Q4_0)        | 15.90 | +33.5%| 72.8% |   -   | 1.000       |
    | gguf   | awq_gptq_sym+emb5 | 12.54 | +5.3% | 84.9% | 0.093 | 1.046       |

    (on 8192 eval tokens, 4 windows of 2048: onnx +5.8%, 85.6%; gguf +7.5%, 82.9%)

How noisy these are: stacking q|k|v and gate|up into one GPTQ pass and 32-column lazy batches
(the same algorithm, other float rounding) once moved the ONNX row from +6.2% to +4.0%, and float32
calibration gave +4.0% on an Intel Xeon and +6.5% on an AMD EPYC: read ±2 points of Δ ppl and ±1
point of top-1 as the resolution of 2048 evaluation tokens as a quality measure. Since calibration
runs in float64 (CALIBRATION_DTYPE) the weights are bit-identical on every CPU, and the rows above are
what any machine exports, up to the engines' own int8 kernels (±0.5 point of Δ ppl:
benchmarks/fidelity_engine_kernels.py).

The GGUF default keeps its table at 5 bits (Q5_0) because Q8_0's 8.5 bits/weight would make the
file 1.19x the Q4_0 one; ONNX has no 5-bit MatMulNBits, and its 8-bit table fits in 1.137x.
A caveat about the demo model: it was dequantized from a Q4_1 GGUF (layers) with a Q8_0 table,
so its weights already sit on a block-32 grid; the asym row shows that integer zero points do not
exploit it, and the calibrated methods gain for the usual reasons (Hessian-aware rounding).
Free-running greedy decoding is a noisier measure: on the three chat prompts of tests/test_runtime.py
the default ONNX artifact follows float greedy for 6, 0, 0 tokens, plain RTN for 6, 1, 11 (one early
near-tie flip changes the whole continuation); teacher-forced top-1 over 2048 tokens is 87% vs 72%.

Cost (`python benchmarks/bench_calibration_2b.py /tmp/minicpm2b` -> results/quant_calibration_2b.json,
quiet 2-core machine): the MiniCPM-2B shape calibrates all 40 layers in 19.5 min (1172 s, 26-29 s
per layer) with peak RSS 5.3 GB (4.9 GiB, the 40 layers' codes included): both bars (30 min, 6 GB)
are met. What got it there from ~39 s per layer: one GPTQ pass over the stacked q|k|v and gate|up rows
(one Hessian and Cholesky per input instead of per linear), the clip search's block extremes found
once instead of per ratio, the O(K³) factorizations on every thread. On the demo, the default
export and the --method rtn one together (calibration, both formats, fidelity) took 79 s.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .errors import BadInput

BLOCK = 32
# The export defaults: the best measured method within 1.15x the plain RTN artifact (table above).
DEFAULT_METHOD = "awq_gptq_sym+emb8"       # ONNX: MatMulNBits/GatherBlockQuantized take an 8-bit table
DEFAULT_GGUF_METHOD = "awq_gptq_sym+emb5"  # GGUF: Q8_0's 8.5 bits/weight table would cost 1.19x; Q5_0 fits
KEEP8_BLOCK = 256  # 8-bit tensors: the largest power-of-two block ≤ this dividing K (int8 error is tiny
                   # even per 256 weights; fewer fp32 scales: 8.125 bits/weight instead of 9 at block 32)
CALIBRATION_TOKENS = 2048  # default calibration size (tokens of texts.calibration_text())
CALIBRATION_SEQ = 512      # tokens per calibration sequence
AWQ_GRID = 10              # α ∈ {0, 0.1, ..., 0.9}
AWQ_TOKENS = 256           # activations used to score each α (20 α × 512 tokens: 7 min per 2B layer here)
CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(13))  # shrink the range by up to 30%
# Calibration computes in float64 so that its discrete choices (AWQ's α, each block's clip ratio, every
# GPTQ rounding) do not depend on the CPU: float32 sums and matmuls round differently with the SIMD
# width and BLAS kernel a CPU gets (AVX2 vs AVX-512 vs AMX), which moved the demo's ONNX Δppl from
# +4.0% to +6.5% between an Intel and an AMD machine. tests/test_quant.py checks the codes are
# bit-identical across torch's and MKL's kernel choices and thread counts (and
# benchmarks/calibration_reproducibility.py on the demo). Cost, against float32: demo 1.47x time
# (benchmarks/profile_calibration.py demo --layers 30, one thread); 2B shape, 40 layers: 28.2 min,
# 4.3 GB peak RSS vs 19.5 min, 5.3 GB (benchmarks/bench_calibration_2b.py, quiet machine).
CALIBRATION_DTYPE = torch.float64


# -- the grid ---------------------------------------------------------------------------------------
@dataclass
class QTensor:
    """One quantized weight (N, K): codes on (N, K/block, block), scales/zeros (N, K/block).

    4-bit codes are held packed two per byte (MatMulNBits' layout), so a 2B model's codes take
    1.2 GB while calibration runs."""
    data: np.ndarray  # uint8 (N, nb, block) for 8 bits, (N, nb, block/2) packed for 4 bits
    scales: np.ndarray  # float32 (N, nb), fp16-representable
    zeros: np.ndarray  # uint8 (N, nb); all 2^(bits-1) for symmetric schemes
    bits: int
    sym: bool

    @classmethod
    def from_codes(cls, codes, scales, zeros, bits, sym):
        codes = np.asarray(codes, np.uint8)
        data = codes if bits != 4 else (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
        return cls(data, np.asarray(scales, np.float32), np.asarray(zeros, np.uint8), bits, sym)

    @property
    def block_size(self):
        return self.data.shape[2] * (2 if self.bits == 4 else 1)

    @property
    def shape(self):
        return self.data.shape[0], self.data.shape[1] * self.block_size

    @property
    def codes(self):
        if self.bits != 4:
            return self.data
        c = np.empty(self.data.shape[:2] + (self.block_size,), np.uint8)
        c[..., 0::2], c[..., 1::2] = self.data & 0x0F, self.data >> 4
        return c

    def dequantize(self):
        """float32 (N, K)."""
        q = self.codes.astype(np.float32) - self.zeros[..., None].astype(np.float32)
        return (q * self.scales[..., None]).reshape(self.shape)

    def packed(self):
        """MatMulNBits' B input: 4-bit codes two per byte, low nibble first (8-bit: as is)."""
        return self.data

    def packed_zeros(self):
        """MatMulNBits' zero_points input: (N, ceil(nb·bits/8)) uint8, 4-bit ones low nibble first."""
        if self.bits == 8:
            return np.ascontiguousarray(self.zeros)
        z = self.zeros
        if z.shape[1] % 2:
            z = np.concatenate([z, np.full((z.shape[0], 1), 8, np.uint8)], 1)
        return (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8)

    def rows(self, index):
        """The same quantized rows reordered (GGUF's q/k permutation) or selected."""
        return QTensor(self.data[index], self.scales[index], self.zeros[index], self.bits, self.sym)

    @classmethod
    def cat(cls, parts):
        """Row-wise concatenation (the fused q|k|v projection)."""
        a = parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("data", "scales", "zeros")), a.bits, a.sym)

    def scaled(self, c):
        """The same codes for the weight × c (edgepack.fold's constants): scales × c, fp32."""
        return QTensor(self.data, (self.scales * np.float32(c)).astype(np.float32), self.zeros, self.bits, self.sym)

    @property
    def nbytes(self):
        """Stored as MatMulNBits stores it: codes, fp32 scales, packed zero points (asymmetric only)."""
        n, k = self.shape
        return n * k * self.bits // 8 + self.scales.size * 4 + (0 if self.sym else self.packed_zeros().nbytes)


def _fp16(x):
    return x.to(torch.float16).to(x.dtype)


def fit_grid(w, bits=4, sym=True, clip=False, imp=None):
    """Scale and zero point per block of w (N, nb, bs) -> (scale, zero) each (N, nb, 1).

    clip: try shrinking the range by CLIP_RATIOS and keep, per block, the one with the least
    squared error weighted by imp (bs-broadcastable, e.g. E[x²] of the block's input channels)."""
    qmax, half = 2 ** bits - 1, 2 ** (bits - 1)
    # the block extremes do not depend on the clip ratio: found once, not once per ratio (GPTQ fits
    # ~10k blocks per 2B layer; the per-ratio argmax was 12% of calibration time)
    if sym:
        vmax0 = w.gather(-1, w.abs().argmax(-1, keepdim=True))
    else:
        mn0, mx0 = w.amin(-1, keepdim=True).clamp(max=0), w.amax(-1, keepdim=True).clamp(min=0)

    def grid(r):
        if sym:
            vmax = vmax0 * r
            s = _fp16(vmax / -half)  # the extreme maps to −half (the packer's and Q4_0's rule)
            s = torch.where(s == 0, torch.ones_like(s), s)
            return s, torch.full_like(s, half)
        mn, mx = mn0 * r, mx0 * r
        s = _fp16((mx - mn) / qmax)
        s = torch.where(s == 0, torch.ones_like(s), s)
        return s, (-mn / s).round().clamp(0, qmax)

    best = grid(1.0)
    if not clip:
        return best
    err_best = _block_err(w, *best, qmax, imp)
    for r in CLIP_RATIOS[1:]:
        s, z = grid(r)
        err = _block_err(w, s, z, qmax, imp)
        better = err < err_best
        best = (torch.where(better, s, best[0]), torch.where(better, z, best[1]))
        err_best = torch.minimum(err, err_best)
    return best


def _block_err(w, s, z, qmax, imp):
    d = (w / s + z).round().clamp(0, qmax).sub(z).mul(s).sub(w).pow(2).double()
    if imp is not None:
        d = d * imp
    return d.sum(-1, keepdim=True)  # float64: a float32 sum's rounding depends on the SIMD width


def quantize_grid(w, s, z, bits):
    return (w / s + z).round().clamp(0, 2 ** bits - 1)


def fake(w, bits=4, sym=True, clip=False, imp=None, block=BLOCK):
    """Quantize-dequantize w (N, K) on the block grid (float32 torch)."""
    N, K = w.shape
    b = w.reshape(N, K // block, block)
    s, z = fit_grid(b, bits, sym, clip, imp)
    return ((quantize_grid(b, s, z, bits) - z) * s).reshape(N, K)


def quantize(w, bits=4, sym=True, clip=False, imp=None, block=BLOCK, chunk_rows=8192):
    """RTN-style QTensor of w (N, K) (float32 torch); imp (K,) weights the clip search.
    Row chunks bound the temporaries (a 2B model's embedding is 283M weights)."""
    N, K = w.shape
    if K % block:
        raise BadInput(f"input dimension {K} is not a multiple of the block size {block}")
    im = None if imp is None else imp.reshape(1, K // block, block)
    parts = []
    for lo in range(0, N, chunk_rows):
        b = w[lo:lo + chunk_rows].reshape(-1, K // block, block)
        s, z = fit_grid(b, bits, sym, clip, im)
        parts.append(_qtensor(quantize_grid(b, s, z, bits), s, z, bits, sym))
    return parts[0] if len(parts) == 1 else QTensor.cat(parts)


def _qtensor(q, s, z, bits, sym):
    return QTensor.from_codes(q.to(torch.uint8).numpy(), s[..., 0].numpy(), z[..., 0].to(torch.uint8).numpy(), bits, sym)


# -- GPTQ -------------------------------------------------------------------------------------------
def gptq(w, H, bits=4, sym=True, clip=False, block=BLOCK, damp=0.01, batch=32):
    """GPTQ (Frantar et al. 2022) without act-order: quantize column by column, spreading each
    column's error over the not yet quantized columns with the inverse Hessian's Cholesky factor.
    The grid of each block is fitted on the already-updated weights at its first column.

    The column loop is thousands of small ops: one intra-op thread runs it 6x faster than two on
    this shared 2-core machine (measured: 33 s -> 5 s per demo layer), so it runs single-threaded;
    the O(K³) factorizations before it keep every thread (single-threaded they were 17% of a 2B
    layer's calibration).

    The same codes on every CPU: the column loop is elementwise float32 (each op correctly rounded,
    so no SIMD width changes it), and everything that sums (the factorizations, the lazy batch
    update) runs in float64, where a CPU's summation order moves results by ~1e-16, far below
    float32's rounding step."""
    W = w.float().clone()
    N, K = W.shape
    H = H.clone().double()
    dead = H.diag() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * H.diag().mean() * torch.eye(K, dtype=H.dtype)
    batch = max(batch, block)  # a block's grid is fitted inside one lazy batch
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq(W, H.diag().float(), Hinv, bits, sym, clip, block, batch, n_threads)
    finally:
        torch.set_num_threads(n_threads)


def _gptq(W, diag, Hinv, bits, sym, clip, block, batch, n_threads):
    N, K = W.shape
    nb = K // block
    Q = torch.empty(N, K)
    S, Z = torch.empty(N, nb, 1), torch.empty(N, nb, 1)
    qmax = 2 ** bits - 1
    Hinv32 = Hinv.float()
    for i1 in range(0, K, batch):
        i2 = min(i1 + batch, K)
        W1, Hi = W[:, i1:i2].clone(), Hinv32[i1:i2, i1:i2]
        E = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % block == 0:  # batch is a multiple of block, so the block lies inside W1
                g = col // block
                imp = diag[col:col + block][None, None] if clip else None
                S[:, g:g + 1], Z[:, g:g + 1] = fit_grid(W1[:, i:i + block][:, None], bits, sym, clip, imp)
            s, z = S[:, col // block], Z[:, col // block]
            q = (W1[:, i:i + 1] / s + z).round().clamp(0, qmax)
            Q[:, col] = q[:, 0]
            err = (W1[:, i:i + 1] - (q - z) * s) / Hi[i, i]
            W1[:, i:] -= err * Hi[i, i:][None]
            E[:, i] = err[:, 0]
        torch.set_num_threads(n_threads)  # the lazy batch update is one large matmul
        W[:, i2:] -= (E.double() @ Hinv[i1:i2, i2:]).float()
        torch.set_num_threads(1)
    return _qtensor(Q.reshape(N, nb, block), S, Z, bits, sym)


# -- AWQ --------------------------------------------------------------------------------------------
def awq_scales(X, weights, bits=4, sym=True, tie=None, grid=AWQ_GRID, block=BLOCK):
    """Per-input-channel scales s (K,) for linears sharing input X (T, K): s = mean|x|^α with the
    α that minimizes ‖Q(W·s)·(x/s) − W·x‖² summed over the linears. tie (K,) long: channels with
    the same id must share one scale (o_proj's input channels that read one v_proj row under GQA)."""
    xm = X.abs().mean(0)
    if tie is not None:
        n = int(tie.max()) + 1
        z = torch.zeros(n, dtype=xm.dtype)
        xm = z.clone().index_add_(0, tie, xm).div_(z.index_add_(0, tie, torch.ones_like(xm)))[tie]
    ref = [X @ w.T for w in weights]
    best, best_err = torch.ones_like(xm), math.inf
    for a in range(grid):
        s = xm.pow(a / grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        # fake quantization is elementwise (exact in float32 on any CPU); the products and sums are float64
        err = sum(float((((X / s) @ fake((w * s).float(), bits, sym, block=block).to(X.dtype).T) - r).pow(2).sum())
                  for w, r in zip(weights, ref))
        if err < best_err:
            best, best_err = s, err
    return best


# -- methods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    name: str
    sym: bool = True
    clip: bool = False
    awq: bool = False
    gptq: bool = False
    embed_bits: int = 4  # bits of the tied table / lm_head: 4, 5 (GGUF Q5_0's grid) or 8
    describe: str = ""

    @property
    def calibrated(self):
        return self.awq or self.gptq or (self.clip and not self.sym and False)


METHODS = {m.name: m for m in [
    Method("rtn", describe="symmetric round-to-nearest (onnxruntime's packer / Q4_0 rule)"),
    Method("asym", sym=False, describe="asymmetric min/max with a zero point"),
    Method("mse", sym=False, clip=True, describe="asymmetric, per-block clip search on weight MSE"),
    Method("awq", sym=False, clip=True, awq=True, describe="AWQ scales folded into norms/v/up rows, asym, clip search"),
    Method("gptq", sym=False, clip=True, gptq=True, describe="GPTQ rounding with calibration Hessians, asym, clip search"),
    Method("awq_gptq", sym=False, clip=True, awq=True, gptq=True, describe="AWQ scales, then GPTQ rounding, asym"),
    Method("gptq_sym", clip=True, gptq=True, describe="GPTQ rounding, symmetric (Q4_0's grid), clip search"),
    Method("awq_gptq_sym", clip=True, awq=True, gptq=True, describe="AWQ scales, then GPTQ rounding, symmetric"),
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


# -- the whole model --------------------------------------------------------------------------------
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


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

    def qtensor(self, name):
        if name not in self.tensors:  # calibration-free methods: computed on demand
            self.tensors[name] = self._plain(name)
        return self.tensors[name]

    def weight(self, name):
        if name in self.floats:
            return self.floats[name]
        if len(self.ckpt.shape(name)) == 1:
            return self.ckpt.torch(name)
        return torch.from_numpy(self.qtensor(name).dequantize())

    def bits(self, name):
        return self.qtensor(name).bits

    def planned_bits(self, name):
        """The bits qtensor(name) has or will have, without computing it (writers plan their layout)."""
        return self.method.embed_bits if _is_embed(name, self.ckpt.config) else 4

    @property
    def block(self):
        return self.block4

    def describe(self):
        return describe(self)

    def _plain(self, name):
        m, w = self.method, self.ckpt.torch(name)
        bits = m.embed_bits if _is_embed(name, self.ckpt.config) else 4
        if bits == 8:
            K = w.shape[1]
            return quantize(w, 8, sym=True, block=max(b for b in (32, 64, 128, 256) if b <= self.block8 and K % b == 0))
        if bits == 5:  # Q5_0's grid: symmetric, block 32
            return quantize(w, 5, sym=True)
        return quantize(w, 4, m.sym, m.clip, block=self.block)


def _is_embed(name, cfg):
    return name == "lm_head.weight" or (name == "model.embed_tokens.weight" and cfg.tie_word_embeddings)


def calibration_ids(tokenizer, n_tokens=CALIBRATION_TOKENS, seq=CALIBRATION_SEQ):
    """(n_seq, seq) token ids: consecutive windows of texts.calibration_text(), each starting with
    bos when the tokenizer adds one (as the evaluation text does)."""
    from .texts import calibration_text

    ids = tokenizer.encode(calibration_text(), add_bos=False)
    head = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    body = seq - len(head)
    n_seq = max(1, n_tokens // seq)
    if len(ids) < n_seq * body:
        raise BadInput(f"calibration text has {len(ids)} tokens, fewer than the {n_seq * body} asked for")
    return torch.tensor([head + ids[i * body:(i + 1) * body] for i in range(n_seq)])


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


def quantize_model(ckpt, spec="rtn", tokenizer=None, n_tokens=CALIBRATION_TOKENS, progress=None, block8=KEEP8_BLOCK,
                   block=BLOCK):
    """Quantize ckpt with a method; calibrated methods stream the calibration layer by layer."""
    from .texts import sources

    m = method(spec)
    q = Quantized(ckpt, m, block8=block8, block4=block)
    q.info = {"method": m.name, "description": m.describe, "bits": 4, "block_size": block,
              "symmetric": m.sym, "embedding_bits": m.embed_bits}
    key = (str(ckpt.path), m.sym, m.clip, m.awq, m.gptq, n_tokens, block)
    if (m.awq or m.gptq) and _SHARED and key in _SHARED:  # the other format of the same export: same layers
        q.tensors.update(_SHARED[key].tensors)
        q.floats.update(_SHARED[key].floats)
        q.info["calibration"] = _SHARED[key].info["calibration"]
    elif m.awq or m.gptq:
        if tokenizer is None:
            from .tokenizer import load_tokenizer

            c = ckpt.config
            tokenizer = load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)
        ids = calibration_ids(tokenizer, n_tokens)
        _calibrate(q, ids, progress)
        q.info["calibration"] = {"source": sources()[1], "tokens": int(ids.numel()), "sequences": int(ids.shape[0])}
        if _SHARED is not None:
            _SHARED.clear()
            _SHARED[key] = Quantized(ckpt, m, {n: t for n, t in q.tensors.items() if n.startswith("model.layers.")},
                                     dict(q.floats), dict(q.info), block4=block)
    else:
        q.info["calibration"] = None
    return q


def _attach(module, name, tensor):
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    setattr(module, leaf, torch.nn.Parameter(tensor, requires_grad=False))


def _gqa_tie(c):
    """o_proj input channel -> the v_proj row it reads (query head h reads KV head h // group)."""
    hd, group = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    j = torch.arange(c.num_attention_heads * hd)
    return (j // hd // group) * hd + j % hd


@torch.no_grad()
def _calibrate(q, ids, progress=None, float_only=False):
    """float_only: apply the AWQ scales but keep every weight float (q.floats), to check the fold."""
    from .reference import Block

    ckpt, m, c = q.ckpt, q.method, q.ckpt.config
    B, T = ids.shape
    pos = torch.arange(T)
    emb_name = "model.embed_tokens.weight"
    if float_only:
        q.floats[emb_name] = ckpt.torch(emb_name)
    # (B, T, H) from the float table, so the layers' results do not depend on the embedding's bits.
    # All of the calibration runs in float64 (CALIBRATION_DTYPE's note says why)
    h = ckpt.torch(emb_name)[ids].to(CALIBRATION_DTYPE) * c.embedding_scale
    tie = _gqa_tie(c)
    L = c.num_hidden_layers
    # mmapped safetensors pages count in RSS while the file is open: let go of them after each layer
    release = ckpt.close if any(ckpt.path.glob("*.safetensors")) else (lambda: None)
    for i in range(L):
        p = f"model.layers.{i}."
        W = {n: ckpt.torch(p + n + ".weight").to(CALIBRATION_DTYPE) for n in LINEARS}
        norms = {n: ckpt.torch(p + n + ".weight").to(CALIBRATION_DTYPE) for n in ("input_layernorm", "post_attention_layernorm")}
        with torch.device("meta"):
            block = Block(c)
        for n, t in {**W, **norms}.items():
            _attach(block, n + ".weight", t)
        X = _capture(block, h, pos)  # inputs of the seven linears, float layer
        if m.awq:
            _awq_layer(W, norms, X, m, c, tie, q.block)
        for group in SHARED_INPUT:
            x = X[group[0]]
            if float_only:
                for n in group:
                    q.floats[p + n + ".weight"] = W[n].float()
                    _attach(block, n + ".weight", W[n])
                continue
            if m.gptq:  # one pass over the stacked rows: GPTQ treats rows independently given H
                qt = gptq(torch.cat([W[n] for n in group]), 2 * x.T @ x / len(x), 4, m.sym, m.clip, block=q.block)
                lo = 0
                for n in group:
                    q.tensors[p + n + ".weight"], lo = qt.rows(slice(lo, lo + len(W[n]))), lo + len(W[n])
            else:
                imp = x.pow(2).mean(0) if m.clip else None
                for n in group:
                    q.tensors[p + n + ".weight"] = quantize(W[n], 4, m.sym, m.clip, imp=imp, block=q.block)
            for n in group:  # the float64 original goes as soon as its quantized twin is attached (peak RSS)
                _attach(block, n + ".weight", torch.from_numpy(q.tensors[p + n + ".weight"].dequantize()).to(CALIBRATION_DTYPE))
                del W[n]
        for n, t in norms.items():
            q.floats[p + n + ".weight"] = t.float()
            _attach(block, n + ".weight", t)
        del X, W
        release()
        _trim_heap()
        h = block(h, pos, None)  # the quantized layer feeds the next one
        if progress:
            progress("calibrate", i + 1, L)


def _trim_heap():
    """Give the layer's freed float64 temporaries back to the OS (glibc keeps them in its heap
    otherwise, and RSS climbed by ~20 MB per demo layer more than the codes kept)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


# linears that read the same activations: one Hessian, one GPTQ pass over their stacked rows (2B shape:
# 12,672 column steps per layer instead of 19,584, 4 Cholesky factorizations instead of 7)
SHARED_INPUT = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


def _capture(block, h, pos):
    """Run the float block on h; return {linear: its input as (tokens, K)} (q/k/v share one, gate/up too)."""
    X, hooks = {}, []
    for n in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"):
        mod = block.get_submodule(n)
        hooks.append(mod.register_forward_pre_hook(lambda mod, args, n=n: X.__setitem__(n, args[0].reshape(-1, args[0].shape[-1]))))
    block(h, pos, None)
    for hk in hooks:
        hk.remove()
    X["self_attn.k_proj"] = X["self_attn.v_proj"] = X["self_attn.q_proj"]
    X["mlp.up_proj"] = X["mlp.gate_proj"]
    return X


def _awq_layer(W, norms, X, m, c, tie, block=BLOCK):
    """Search and fold the four AWQ scales of one layer; W, norms and X are updated in place, exactly
    (the float layer computes the same function afterwards)."""
    sub = lambda x: x[:: max(1, len(x) // AWQ_TOKENS)]  # noqa: E731  evenly spaced tokens score α
    q, k, v, o = (f"self_attn.{n}_proj" for n in "qkvo")
    g, u, d = "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"
    s = awq_scales(sub(X[q]), [W[q], W[k], W[v]], 4, m.sym, block=block)
    norms["input_layernorm"] = norms["input_layernorm"] / s
    for n in (q, k, v):
        W[n] = W[n] * s
    X[q] = X[k] = X[v] = X[q] / s
    s = awq_scales(sub(X[o]), [W[o]], 4, m.sym, tie=tie, block=block)
    sv = torch.ones(W[v].shape[0], dtype=s.dtype).index_copy_(0, tie, s)  # the v_proj row each tied group reads
    W[v] = W[v] / sv[:, None]
    W[o] = W[o] * s
    X[o] = X[o] / s
    s = awq_scales(sub(X[g]), [W[g], W[u]], 4, m.sym, block=block)
    norms["post_attention_layernorm"] = norms["post_attention_layernorm"] / s
    W[g], W[u] = W[g] * s, W[u] * s
    X[g] = X[u] = X[g] / s
    s = awq_scales(sub(X[d]), [W[d]], 4, m.sym, block=block)
    W[u] = W[u] / s[:, None]
    W[d] = W[d] * s
    X[d] = X[d] / s


def digest(q):
    """sha256 (hex) of every code, scale and zero point and every float tensor of a Quantized model, in
    checkpoint order: equal digests mean bit-identical weights (calibration reproducibility checks)."""
    import hashlib

    h = hashlib.sha256()
    for name in q.ckpt.names:
        if len(q.ckpt.shape(name)) == 2:
            t = q.qtensor(name)
            h.update(t.data.tobytes() + t.scales.tobytes() + t.zeros.tobytes())
        else:
            h.update(q.weight(name).numpy().tobytes())
    return h.hexdigest()


def size_bytes(q):
    """Bytes of all quantized weights (codes + scales + zero points), norms as float32."""
    total = 0
    for name in q.ckpt.names:
        if len(q.ckpt.shape(name)) == 1:
            total += 4 * q.ckpt.shape(name)[0]
        else:
            total += q.qtensor(name).nbytes
    return total


def describe(q):
    """The manifest's quantization fields for a Quantized model (bits/weight over all 2-D weights)."""
    names = [n for n in q.ckpt.names if len(q.ckpt.shape(n)) == 2]
    n_weights = sum(int(np.prod(q.ckpt.shape(n))) for n in names)
    nbytes = sum(q.qtensor(n).nbytes for n in names)
    m = q.method
    return {"scheme": f"int4_{'sym' if m.sym else 'asym'}_block{q.block}" + (f"_emb{m.embed_bits}" if m.embed_bits != 4 else ""),
            "bits": 4, "block_size": q.block, "method": m.name, "method_description": m.describe,
            "embedding_bits": m.embed_bits, "bits_per_weight": round(8 * nbytes / n_weights, 3),
            "calibration": q.info.get("calibration")}
