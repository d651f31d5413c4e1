"""K-quant grids (llama.cpp's Q4_K, Q5_K, Q6_K) and the per-tensor type mix of its _K_S/_K_M files.

A K-quant row is cut into super-blocks of 256 weights. Q4_K/Q5_K: 8 sub-blocks of 32, each with a
6-bit scale sc and a 6-bit min m, the super-block with fp16 d and dmin:

    w = (d·sc)·q − (dmin·m)          q ∈ [0, 15] (Q4_K) or [0, 31] (Q5_K)

Q6_K: 16 sub-blocks of 16 with an int8 scale each and an fp16 d:  w = (d·sc)·(q − 32), q ∈ [0, 63].
KTensor.dequantize computes exactly that, in float32 and in llama.cpp's order (its dequantize_row_q*_K
and gguf.quants), so the writer's bytes decode to the very weights the calibration fed forward.

The grid (every d, dmin, sc, m) is chosen first, on the weights, per sub-block by fit_grid's clip
search weighted by the calibration's importance (mean x² per input column, llama.cpp's imatrix),
then its scales rounded onto the 6-bit/int8 sub-scale grid; the codes are then rounded onto that
fixed grid, by GPTQ's error feedback when there is a Hessian (gptq.gptq(grid=...)), else to nearest.

mix() is llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) for Q4_K_S, Q4_K_M and Q5_K_M:
Q6_K for the output table (the tied embedding) and, in _M, for attn_v and ffn_down of the layers
use_more_bits picks; Q5_K for attn_v of the first 4 layers and ffn_down of the first 1/8 in Q4_K_S.
A row whose width is not a multiple of 256 cannot hold a K type: llama.cpp falls back there to Q5_0
(for Q4_K), Q5_1 (Q5_K) and Q8_0 (Q6_K); edgepack falls back to its calibrated Q5_0, Q5_0 and Q8_0
(Q5_0 rather than Q5_1 for Q5_K: one bit of zero point per weight less, never more bytes than llama.cpp's).
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import BadInput, NotSupported
from .blocks import fit_grid, quantize

QK_K = 256
# kind -> (bits, sub-block, has mins, bytes per super-block)
K_KINDS = {"q4_k": (4, 32, True, 144), "q5_k": (5, 32, True, 176), "q6_k": (6, 16, False, 210)}
BLOCK_KINDS = {"q4_0": 4, "q5_0": 5, "q8_0": 8}  # edgepack's 32-weight symmetric grids (QTensor)
REFINE_STEPS = 4  # least-squares rounds of each sub-block's scale/min in fit_k
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_0", "q6_k": "q8_0"}
MIXES = ("q4_k_s", "q4_k_m", "q5_k_m")


@dataclass
class KTensor:
    """One weight (N, K) on a K-quant grid: codes (N, K) uint8, d/dmin (N, K/256) float32 (fp16 values),
    sc/m (N, K/256, sub-blocks) uint8 (Q6_K: sc int8, m and dmin zero)."""
    kind: str
    codes: np.ndarray
    d: np.ndarray
    dmin: np.ndarray
    sc: np.ndarray
    m: np.ndarray

    sym = False

    @property
    def bits(self):
        return K_KINDS[self.kind][0]

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self):
        n, k = self.shape
        return n * (k // QK_K) * K_KINDS[self.kind][3]

    def dequantize(self):
        """float32 (N, K), as llama.cpp decodes the blocks."""
        n, k = self.shape
        sub = K_KINDS[self.kind][1]
        s = self.d[..., None] * self.sc.astype(np.float32)  # (N, nsb, nsub) float32 products
        q = self.codes.reshape(n, k // QK_K, QK_K // sub, sub)
        if self.kind == "q6_k":
            return (s[..., None] * (q.astype(np.int8) - np.int8(32)).astype(np.float32)).reshape(n, k)
        mn = self.dmin[..., None] * self.m.astype(np.float32)
        return (s[..., None] * q.astype(np.float32) - mn[..., None]).reshape(n, k)

    def rows(self, index):
        return KTensor(self.kind, *(getattr(self, f)[index] for f in ("codes", "d", "dmin", "sc", "m")))

    @classmethod
    def cat(cls, parts):
        return cls(parts[0].kind, *(np.concatenate([getattr(p, f) for p in parts]) for f in ("codes", "d", "dmin", "sc", "m")))

    def scaled(self, c):
        raise NotSupported("K-quant tensors cannot be rescaled exactly (fp16 d): use GGUF type q4_0 for this architecture")


def fp16(x):
    return x.to(torch.float16).to(torch.float64)


def fit_k(w, kind, clip=True, imp=None):
    """The fixed K-quant grid of w (N, K) float64: (d, dmin, sc, m) as torch tensors and the effective
    per-sub-block (S, Z) with w ≈ (q − Z)·S that the rounding (RTN or GPTQ) uses."""
    bits, sub, mins, _ = K_KINDS[kind]
    N, K = w.shape
    if K % QK_K:
        raise BadInput(f"input dimension {K} is not a multiple of {QK_K}: no {kind.upper()} blocks")
    b = w.reshape(N, K // sub, sub)
    im = None if imp is None else imp.reshape(1, K // sub, sub)
    s, z = fit_grid(b, bits, sym=not mins, clip=clip, imp=im)  # per sub-block, fp16-rounded
    s, z = _refine(b, s, z, bits, mins, im)
    nsub = QK_K // sub
    s, z = s.reshape(N, K // QK_K, nsub), z.reshape(N, K // QK_K, nsub)
    if mins:
        mn = z * s  # w ≈ s·q − mn, mn ≥ 0 (fit_grid's asymmetric range always holds 0)
        smax, mmax = s.amax(-1, keepdim=True), mn.amax(-1, keepdim=True)
        d = fp16(smax / 63)
        d = torch.where(d == 0, torch.ones_like(d), d)
        dmin = fp16(mmax / 63)
        dmin = torch.where(dmin == 0, torch.ones_like(dmin), dmin)
        sc = (s / d).round().clamp(1, 63)
        m = (mn / dmin).round().clamp(0, 63)
        S, M = d.float().double() * sc, dmin * m
        S, M = S.float().double(), M.float().double()  # the float32 products llama.cpp decodes with
        return (d, dmin, sc, m), S.reshape(N, -1), (M / S).reshape(N, -1)
    amax = s.abs().amax(-1, keepdim=True)
    d = fp16(amax / 127)
    d = torch.where(d == 0, torch.ones_like(d), d)
    sc = (s / d).round().clamp(-128, 127)
    sc = torch.where(sc == 0, torch.ones_like(sc), sc)
    S = (d * sc).float().double()
    return (d, torch.zeros_like(d), sc, torch.zeros_like(sc)), S.reshape(N, -1), torch.full((N, K // sub), 32.0, dtype=w.dtype)


def _refine(b, s, z, bits, mins, imp, steps=REFINE_STEPS):
    """Weighted least squares of each sub-block's scale (and min) for its current codes, then the codes
    again, a few times (llama.cpp's make_qkx2_quants does the same kind of search); per sub-block the
    (s, z) with the least imp-weighted error is kept. z stays the min divided by s (fractional: K-quant
    mins are not integer zero points)."""
    qmax = 2 ** bits - 1
    wt = torch.ones_like(b) if imp is None else imp.expand_as(b)

    def err(s, z):
        q = (b / s + z).round().clamp(0, qmax)
        return (wt * ((q - z) * s - b) ** 2).sum(-1, keepdim=True), q

    best_e, q = err(s, z)
    for _ in range(steps):
        if mins:
            A, B, C = (wt * q * q).sum(-1, keepdim=True), (wt * q).sum(-1, keepdim=True), wt.sum(-1, keepdim=True)
            D, E = (wt * q * b).sum(-1, keepdim=True), (wt * b).sum(-1, keepdim=True)
            det = A * C - B * B
            ok = det > 0
            s1 = torch.where(ok, (C * D - B * E) / torch.where(ok, det, 1), s)
            mn = torch.where(ok, (B * D - A * E) / torch.where(ok, det, 1), z * s).clamp(min=0)
            s1 = torch.where(s1 > 0, s1, s)
            z1 = mn / s1
        else:
            q0 = q - 2 ** (bits - 1)
            A, D = (wt * q0 * q0).sum(-1, keepdim=True), (wt * q0 * b).sum(-1, keepdim=True)
            s1 = torch.where(A > 0, D / torch.where(A > 0, A, 1), s)
            s1 = torch.where(s1 == 0, s, s1)
            z1 = z
        e1, q1 = err(s1, z1)
        better = e1 < best_e
        s, z, best_e = torch.where(better, s1, s), torch.where(better, z1, z), torch.minimum(e1, best_e)
        q = torch.where(better, q1, q)
    return s, z


def ktensor(kind, grid, codes):
    d, dmin, sc, m = grid
    f32 = lambda t: t[..., 0].float().numpy()  # noqa: E731
    sc = sc.to(torch.int8 if kind == "q6_k" else torch.uint8).numpy()
    return KTensor(kind, np.ascontiguousarray(codes, np.uint8), f32(d), f32(dmin), sc, m.to(torch.uint8).numpy())


def quantize_as(w, kind, H=None, clip=True, imp=None, chunk_rows=8192, damp=None):
    """w (N, K) on the grid `kind` ('q4_k', 'q5_k', 'q6_k', or a 32-weight block grid 'q4_0', 'q5_0',
    'q8_0'): GPTQ rounding (damped by damp, default gptq.DAMP) when H (the calibration Hessian) is given,
    else round-to-nearest."""
    from .gptq import gptq

    if kind in BLOCK_KINDS:
        bits = BLOCK_KINDS[kind]
        if H is not None:
            return gptq(w.double(), H, bits, True, clip, block=32, damp=damp)
        return quantize(w.float(), bits, True, clip, imp=None if imp is None else imp.float(), block=32)
    bits, sub = K_KINDS[kind][:2]
    if H is None and len(w) > chunk_rows:  # a table: row chunks bound the float64 temporaries
        return KTensor.cat([quantize_as(w[i:i + chunk_rows], kind, None, clip, imp) for i in range(0, len(w), chunk_rows)])
    w = w.double()
    grid, S, Z = fit_k(w, kind, clip, None if imp is None else imp.double())
    if H is not None:
        codes = gptq(w, H, bits, block=sub, damp=damp, grid=(S, Z))
    else:
        N, K = w.shape
        codes = (w.reshape(N, -1, sub) / S[..., None] + Z[..., None]).round().clamp(0, 2 ** bits - 1).reshape(N, K)
    return ktensor(kind, grid, codes.to(torch.uint8).numpy())


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix(mix_name, name, K, n_layers, tied):
    """The grid of one 2-D weight (HF name, input width K) in llama.cpp's mix `mix_name`."""
    if mix_name not in MIXES:
        raise BadInput(f"unknown K-quant mix {mix_name!r} (choose from {', '.join(MIXES)})")
    base = "q5_k" if mix_name == "q5_k_m" else "q4_k"
    kind = base
    layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
    if name == "lm_head.weight" or (tied and name == "model.embed_tokens.weight"):
        kind = "q6_k"
    elif name.endswith(("self_attn.v_proj.weight", "mlp.down_proj.weight")):
        if mix_name != "q4_k_s" and use_more_bits(layer, n_layers):
            kind = "q6_k"
        elif mix_name == "q4_k_s" and layer < (4 if "v_proj" in name else n_layers // 8):
            kind = "q5_k"
    return FALLBACK[kind] if K % QK_K else kind
