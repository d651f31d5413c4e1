"""edgepack.quant's K-quant and 5-bit codes as GGUF block bytes, packed exactly (no re-quantization).

Layouts (ggml-common.h's block_q4_K / block_q5_K / block_q6_K / block_q5_0; gguf.quants decodes them):

    Q4_K  {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}            144 B / 256 weights
    Q5_K  {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}  176 B
    Q6_K  {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}            210 B
    Q5_0  {f16 d; u32 qh; u8 qs[16]}                                22 B / 32 weights

scales[12] holds 8 six-bit scales and 8 six-bit mins: bytes 0-3 sc[0..3] with sc[4..7]'s top two bits
in bits 6-7, bytes 4-7 the same for the mins, bytes 8-11 sc[4..7]'s low nibble | m[4..7]'s low nibble << 4.
Q4_K/Q5_K qs: per 64 weights 32 bytes, low nibble = weight l, high nibble = weight 32 + l; Q5_K's qh bit
j of byte l = the fifth bit of weight 32·j + l. Q6_K: per 128 weights, ql's 64 bytes hold weights l (low
nibble) and 64 + l (high), qh's 32 bytes their top two bits of weights l, 32 + l, 64 + l, 96 + l at
bits 0, 2, 4, 6.
"""
import numpy as np

from ..errors import InternalError


def _f16(x):
    return np.ascontiguousarray(x, np.float32).astype(np.float16).view(np.uint8).reshape(*x.shape, 2)


def _scales12(sc, m):
    """(…, 8) six-bit scales and mins -> (…, 12) bytes."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    lo = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    mid = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    hi = (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4)
    return np.concatenate([lo, mid, hi], -1)


def _nibbles(q):
    """(…, 256) codes -> (…, 128) bytes: per 64 weights, weight l low, weight 32 + l high."""
    q = q.reshape(*q.shape[:-1], 4, 2, 32)
    return ((q[..., 0, :] & 0x0F) | ((q[..., 1, :] & 0x0F) << 4)).reshape(*q.shape[:-3], 128)


def pack_k(kt):
    """A KTensor as (N, K/256 · block bytes) uint8, its GGUF type name."""
    n, k = kt.shape
    nsb = k // 256
    q = kt.codes.reshape(n, nsb, 256)
    if kt.kind in ("q4_k", "q5_k"):
        parts = [_f16(kt.d), _f16(kt.dmin), _scales12(kt.sc, kt.m)]
        if kt.kind == "q5_k":
            hb = (q >> 4) & 1  # (n, nsb, 256): weight 32·j + l -> bit j of byte l
            parts.append((hb.reshape(n, nsb, 8, 32) << np.arange(8, dtype=np.uint8)[:, None]).sum(-2, dtype=np.uint8))
        parts.append(_nibbles(q))
        out = np.concatenate(parts, -1)
    elif kt.kind == "q6_k":
        h = q.reshape(n, nsb, 2, 128)
        ql = (h[..., :64] & 0x0F) | ((h[..., 64:] & 0x0F) << 4)  # (n, nsb, 2, 64)
        top = (h >> 4).reshape(n, nsb, 2, 4, 32)
        qh = (top << (2 * np.arange(4, dtype=np.uint8))[:, None]).sum(-2, dtype=np.uint8)  # (n, nsb, 2, 32)
        out = np.concatenate([ql.reshape(n, nsb, 128), qh.reshape(n, nsb, 64), kt.sc.view(np.uint8), _f16(kt.d)], -1)
    else:
        raise InternalError(f"no GGUF block layout for {kt.kind}")
    return np.ascontiguousarray(out.reshape(n, -1)), kt.kind.upper()


def pack_q5_0(codes, scales):
    """5-bit symmetric codes (N, nb, 32) in [0, 31] (zero 16) with fp16 scales (N, nb) -> Q5_0 bytes (N, nb·22)."""
    n, nb, _ = codes.shape
    qh = ((codes >> 4).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(-1, dtype=np.uint32)
    qs = (codes[..., :16] & 0x0F) | ((codes[..., 16:] & 0x0F) << 4)
    out = np.concatenate([_f16(scales), qh.astype("<u4").view(np.uint8).reshape(n, nb, 4), qs], -1)
    return np.ascontiguousarray(out.reshape(n, -1))
