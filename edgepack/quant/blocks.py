"""The int4/int8 block grid: one scale (and zero point) per block of K, codes, RTN.

Every method produces the same thing per 2-D weight: codes on a block grid along the input dimension
(K), one scale per block and (asymmetric) one integer zero point per block,

    w ≈ scale · (code − zero)      code ∈ [0, 2^bits − 1]

which is exactly MatMulNBits' layout (ONNX) and, for 4 bits with zero 8 and fp16 scales, exactly
GGUF's Q4_0 (asymmetric codes map onto Q4_1: d = scale, m = −scale·zero). Scales are rounded to
fp16 so both formats store them without a second rounding.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BadInput


BLOCK = 32
CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(13))  # shrink the range by up to 30%


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
        codes = np.ascontiguousarray(codes, np.uint8)
        data = codes if bits != 4 else (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
        return cls(data, np.ascontiguousarray(scales, np.float32), np.ascontiguousarray(zeros, np.uint8), bits, sym)

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
        """The same codes for the weight × c (edgepack.model.fold's constants): scales × c, fp32."""
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
    # in place on one temporary (GPTQ fits a block's grid 13 times per 32 columns: 1.3-1.6x faster than
    # a fresh tensor per op; all clip ratios in one broadcast pass were slower still, out of cache)
    d = (w / s).add_(z).round_().clamp_(0, qmax).sub_(z).mul_(s).sub_(w).pow_(2).double()
    if imp is not None:
        d.mul_(imp)
    return d.sum(-1, keepdim=True)  # float64: a float32 sum's rounding depends on the SIMD width


def quantize_grid(w, s, z, bits):
    return (w / s + z).round().clamp(0, 2 ** bits - 1)


def fake(w, bits=4, sym=True, clip=False, imp=None, block=BLOCK):
    """Quantize-dequantize w (N, K) on the block grid (float32 torch)."""
    N, K = w.shape
    b = w.reshape(N, K // block, block)
    s, z = fit_grid(b, bits, sym, clip, imp)
    # in place on one temporary: the same ops in the same order as quantize_grid, then (q - z)·s
    return (b / s).add_(z).round_().clamp_(0, 2 ** bits - 1).sub_(z).mul_(s).reshape(N, K)


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
