"""GPTQ rounding: quantize column by column, spreading each column's error with the inverse Hessian."""
import numpy as np
import torch

from .blocks import BLOCK, QTensor, _fp16, _qtensor, fit_grid

DAMP = 0.01  # H's diagonal is damped by DAMP x its mean (GPTQ's percdamp); benchmarks/quant_methods.py --damp probes it
AO_DAMP = 0.3  # act-order's damping: on the demo it lowered Δppl at 2048, 4096 and 8192 calibration tokens
               # (+6.2/+5.2/+3.6% at DAMP, +4.6/+3.2/+2.7% at 0.3) and KL with it; the file-order default's
               # Δppl rose instead (benchmarks/README.md, decision log "int4 method")
ROWS_PER_THREAD = 1024  # below this many rows per thread, one thread runs GPTQ


# -- GPTQ -------------------------------------------------------------------------------------------
def hessian(x, piece=1024):
    """GPTQ's H = 2·xᵀx/T for x (T, K), float64, by column pieces: only the blocks on and above the
    diagonal are multiplied and the rest mirrored (at K = 6400, 10 products of 15 instead of a full
    K×K gemm's 16: MiniCPM3-4B's down_proj Hessian 2.3 -> 1.5 s here)."""
    T, K = x.shape
    if K <= piece:
        return (x.T @ x).mul_(2 / T)
    H = torch.empty(K, K, dtype=x.dtype)
    cuts = list(range(0, K, piece)) + [K]
    for a, b in zip(cuts, cuts[1:]):
        xa = x[:, a:b].T
        H[a:b, a:] = xa @ x[:, a:]
        H[b:, a:b] = H[a:b, b:].T
    return H.mul_(2 / T)


def gptq(w, H, bits=4, sym=True, clip=False, block=BLOCK, damp=None, batch=32, grid=None, act_order=False):
    """GPTQ (Frantar et al. 2022): quantize column by column, spreading each
    column's error over the not yet quantized columns with the inverse Hessian's Cholesky factor.
    The grid of each block is fitted on the already-updated weights at its first column; grid=(S, Z),
    each (N, K/block), fixes it instead (w ≈ (q − Z)·S, Z may be fractional: kquant.py's K-quant
    sub-blocks) and the codes alone come back, float (N, K).

    The column loop is thousands of small ops: one intra-op thread runs it 6x faster than two on
    this shared 2-core machine (measured: 33 s -> 5 s per demo layer), so it runs single-threaded;
    the O(K³) factorizations before it keep every thread (single-threaded they were 17% of a 2B
    layer's calibration).

    The same codes on every CPU: the column loop is elementwise float32 (each op correctly rounded,
    so no SIMD width changes it), and everything that sums (the factorizations, the lazy batch
    update) runs in float64, where a CPU's summation order moves results by ~1e-16, far below
    float32's rounding step.

    Layout, for speed: W stays float64 and each lazy batch update is one in-place addmm (a float64
    temporary and its float32 copy of the whole remaining W per batch were 31% of calibration,
    memory-bound and page-faulting); the column loop runs on the batch transposed, so a column is a
    contiguous row; rows are split over the threads. MiniCPM3-4B's shape on 2 cores of an AMD EPYC:
    GPTQ of gate|up (12800x2560) 13.8 -> 3.7 s, of down (2560x6400) 19.7 -> 9.7 s; a whole layer's
    calibration 70 -> 32 s (benchmarks/bench_calibration_2b.py, results/quant_calibration_minicpm3_4b.json).

    act_order: the columns in descending order of H's diagonal (the inputs that matter most first,
    while most columns are left to absorb their error), on grids fitted beforehand: _act_order."""
    damp = DAMP if damp is None else damp
    if act_order:
        wh = [w, H]
        del w, H  # _act_order lets go of the caller's temporaries as it goes (peak RSS)
        return _act_order(wh, bits, sym, clip, block, damp, batch)
    W = w.double().clone()
    del w  # frees the caller's stacked temporary (calibrate.py's torch.cat of a group's rows)
    N, K = W.shape
    # H's diagonal with dead inputs at 1 and the damping added; H itself is neither copied nor changed
    # (a Gram matrix's dead columns are zero; K x K float64 copies are 265 MB at MoE-8x2B's down_proj)
    d = H.diag().double()
    dead = d == 0
    d[dead] = 1
    W[:, dead] = 0
    d += damp * d.mean()
    batch = max(batch, block)  # a block's grid is fitted inside one lazy batch
    Hf = H.double().flip(0, 1)  # the one K x K float64 copy: factored and inverted in place
    del H  # frees the caller's hessian(x) when it was passed as a temporary
    Hinv = _inverse_cholesky_(Hf, d)
    n_threads = torch.get_num_threads()
    diag = d.float()
    parts = min(n_threads, max(1, N // ROWS_PER_THREAD))
    if parts == 1:
        torch.set_num_threads(1)
        try:
            return _gptq(W, diag, Hinv, bits, sym, clip, block, batch, n_threads, grid)
        finally:
            torch.set_num_threads(n_threads)
    # rows are independent given H: each thread runs the whole loop (its lazy updates too) on a slice of
    # rows with one intra-op thread, so the column loop's small ops keep every core busy
    from concurrent.futures import ThreadPoolExecutor

    def run(rows):
        torch.set_num_threads(1)
        return _gptq(W[rows], diag, Hinv, bits, sym, clip, block, batch, 1, None if grid is None else (grid[0][rows], grid[1][rows]))

    cuts = [N * j // parts for j in range(parts + 1)]
    with ThreadPoolExecutor(parts) as pool:
        out = list(pool.map(run, [slice(a, b) for a, b in zip(cuts, cuts[1:])]))
    return torch.cat(out) if grid is not None else QTensor.cat(out)


def _act_order(wh, bits, sym, clip, block, damp, batch):
    """GPTQ with act-order and static groups: every block's grid is fitted first, on the original
    weights with the clip search weighted by H's diagonal (so the file layout, one scale per block of
    consecutive columns, stays what MatMulNBits and Q4_0 read), then the columns are rounded in
    descending H-diagonal order onto their block's fixed grid (gptq(grid=...) with one grid column
    per weight column) and the codes put back in file order. On the demo (fake-quant, same bytes;
    benchmarks/README.md, decision log "int4 method"): top-1 and KL better at 2048 and 8192
    calibration tokens, Δppl worse at 2048 (+6.2 against +4.6%) and best of all at 8192 (+3.6%);
    damped by AO_DAMP instead of DAMP, +4.6% at 2048 and +2.7% at 8192 (the default since); the
    calibration takes 8% longer (93 s against 86 s)."""
    w, H = wh
    wh.clear()
    N, K = w.shape
    nb = K // block
    d = H.diag().double()
    S, Z = fit_grid(w.double().reshape(N, nb, block), bits, sym, clip, d.reshape(nb, block)[None] if clip else None)
    S, Z = S[..., 0], Z[..., 0]  # (N, nb)
    perm = torch.argsort(d, descending=True, stable=True)  # stable: dead (zero) columns keep their order
    col_block = perm // block  # the block of each permuted column
    # the permuted copies replace the originals, and gptq frees them in turn (passed as temporaries)
    args = [w[:, perm], H.index_select(0, perm).index_select(1, perm)]
    del w, H
    codes = gptq(args.pop(0), args.pop(0), bits, sym, False, 1, damp, batch, (S[:, col_block], Z[:, col_block]))
    q = torch.empty_like(codes)
    q[:, perm] = codes
    return _qtensor(q.reshape(N, nb, block), S[..., None], Z[..., None], bits, sym)


def _inverse_cholesky_(Hf, diag):
    """The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), in place in Hf, the reversed H (JHJ, J the
    reversal; its diagonal is replaced by diag, H's own order): JHJ = RRᵀ gives U = J R⁻¹ J, so one
    Cholesky and one triangular inverse (chol(cholesky_inverse(chol(H))) is three O(K³) passes: 7.6 s at
    K = 6400 here, against 2.9 s). In place because at MoE-8x2B's w2 (K = 5760) each K x K float64 copy is
    265 MB, and the copies made the largest part of a MoE export's peak RSS."""
    Hf.diagonal().copy_(diag.flip(0))
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(Hf, out=(Hf, info))
    if info.item():  # cholesky_ex does not raise: what torch.linalg.cholesky would have said
        raise torch.linalg.LinAlgError(f"GPTQ: the damped Hessian is not positive-definite (leading minor {info.item()})")
    return _reverse_(_lower_inverse_(Hf.tril_()))


def _lower_inverse_(L, leaf=512):
    """L⁻¹ of a lower-triangular L, in place, by halves: [[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [−C⁻¹BA⁻¹, C⁻¹]].
    K³/3 flops in float64 matmuls; solve_triangular against the identity does K³ (3.9 s at K = 6400
    against 1.2 s)."""
    n = len(L)
    if n <= leaf:
        return L.copy_(torch.linalg.solve_triangular(L, torch.eye(n, dtype=L.dtype), upper=False))
    h = n // 2
    _lower_inverse_(L[:h, :h], leaf)
    _lower_inverse_(L[h:, h:], leaf)
    L[h:, :h] = -(L[h:, h:] @ (L[h:, :h] @ L[:h, :h]))
    return L


def _reverse_(t, chunk=2 ** 20):
    """t.flip(0, 1) in place for a contiguous matrix: its flattened elements reversed, a chunk at a time."""
    flat, n = t.view(-1), t.numel()
    for i in range(0, n // 2, chunk):
        j = min(i + chunk, n // 2)
        a = flat[i:j].clone()
        flat[i:j] = flat[n - j:n - i].flip(0)
        flat[n - j:n - i] = a.flip(0)
    return t


def _gptq(W, diag, Hinv, bits, sym, clip, block, batch, n_threads, grid=None):
    N, K = W.shape
    nb = K // block
    Q = torch.empty(K, N)  # transposed: column col is the contiguous row Q[col]
    S, Z = torch.empty(nb, N), torch.empty(nb, N)
    qmax = 2 ** bits - 1
    Hinv32 = Hinv.float()
    for i1 in range(0, K, batch):
        i2 = min(i1 + batch, K)
        W1, Hi = W[:, i1:i2].T.float().contiguous(), Hinv32[i1:i2, i1:i2]  # (batch, N)
        E = torch.empty_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % block == 0 and grid is not None:
                g = col // block
                S[g], Z[g] = grid[0][:, g], grid[1][:, g]
            elif col % block == 0:  # batch is a multiple of block, so the block lies inside W1
                g = col // block
                imp = diag[col:col + block][None, None] if clip else None
                s, z = fit_grid(W1[i:i + block].T[:, None], bits, sym, clip, imp)
                S[g], Z[g] = s[:, 0, 0], z[:, 0, 0]
            s, z = S[col // block], Z[col // block]
            q = (W1[i] / s + z).round_().clamp_(0, qmax)
            Q[col] = q
            err = (W1[i] - (q - z) * s) / Hi[i, i]
            W1[i:] -= Hi[i, i:, None] * err[None]
            E[i] = err
        if i2 < K:
            torch.set_num_threads(n_threads)  # the lazy batch update is one large matmul, in place
            W[:, i2:].addmm_(E.T.double(), Hinv[i1:i2, i2:], alpha=-1)
            torch.set_num_threads(1)
    if grid is not None:
        return Q.T.contiguous()
    return _qtensor(Q.T.reshape(N, nb, block), S.T.contiguous()[..., None], Z.T.contiguous()[..., None], bits, sym)


def refine_scales(qt, w, H, chunk=None):
    """The least-squares scales for a QTensor's codes: per row, the s minimizing (w − Q̃s)ᵀ H (w − Q̃s),
    Q̃ the codes minus zero points laid out one column per block (an nb x nb solve per row: the normal
    equations, with a 1e-6 ridge towards the old scales for blocks whose codes are all at the zero
    point), rounded to fp16 like every grid's scales; the codes stay as they are. On the demo after
    the default's GPTQ (fake-quant, 2048 tokens): +4.3% Δppl, 87.6% top-1, KL 0.066 against +4.6%,
    86.3%, 0.074 (benchmarks/README.md, decision log "int4 method"). Opt-in (`_ls` methods): the K² product per
    row more than doubles a 2B calibration (2239 s against 940 s on 2 cores, over the 30-minute bar)."""
    N, K = w.shape
    bs = qt.block_size
    nb = K // bs
    H = H.double()
    Hb = H.view(nb, bs, K)
    codes = torch.from_numpy(qt.codes.astype(np.float64)) - torch.from_numpy(qt.zeros.astype(np.float64))[..., None]
    s0 = torch.from_numpy(qt.scales.astype(np.float64))
    chunk = chunk or max(1, 2 ** 24 // (nb * K))  # rows per pass: a (rows, nb, K) float64 temporary of 128 MB
    out = np.empty_like(qt.scales)
    ridge = 1e-6 * H.diag().mean()
    for lo in range(0, N, chunk):
        hi = min(lo + chunk, N)
        Q = codes[lo:hi]  # (R, nb, bs)
        T = torch.bmm(Q.transpose(0, 1), Hb).transpose(0, 1)  # (R, nb, K): Q̃_bᵀ H[b, :]
        A = torch.einsum("rbcj,rcj->rbc", T.reshape(hi - lo, nb, nb, bs), Q)  # Q̃ᵀ H Q̃ per row
        rhs = torch.einsum("rbk,rk->rb", T, w[lo:hi].double())  # Q̃ᵀ H w
        A.diagonal(dim1=1, dim2=2).add_(ridge)
        rhs += ridge * s0[lo:hi]
        # Cholesky (A is positive-definite with the ridge): torch.linalg.solve's batched LU failed now and
        # then at nb = 180 here (MKL "Parameter 6 was incorrect on entry to DLASWP", 2B's down_proj)
        L, info = torch.linalg.cholesky_ex(A)
        if info.any():
            raise torch.linalg.LinAlgError("least-squares scales: a block Gram matrix is not positive-definite")
        out[lo:hi] = _fp16(torch.cholesky_solve(rhs[..., None], L)[..., 0]).numpy()
    out = np.where(out == 0, qt.scales, out).astype(np.float32)  # a zero scale is no grid (fit_grid's rule)
    return QTensor(qt.data, out, qt.zeros, qt.bits, qt.sym)
