"""int4 schemes and calibration (edgepack.quant): determinism, grid error bounds, exact AWQ fold."""
import numpy as np
import pytest
import torch

from edgepack.quant import blocks, calibrate, gptq, methods
from edgepack.model.checkpoint import load
from edgepack.errors import BadInput
from edgepack.fidelity import reference_logits
from edgepack.model.testmodels import make_tiny
from edgepack.model.tokenizer import load_tokenizer

FP16 = 2.0 ** -11  # fp16-rounded scales may miss the block's extreme by 2^bits · FP16 steps


@pytest.fixture(scope="module")
def tiny_gqa(tmp_path_factory):
    return load(make_tiny(tmp_path_factory.mktemp("quant-gqa"), gqa=True))


@pytest.fixture(scope="module")
def tiny_mha(tmp_path_factory):
    return load(make_tiny(tmp_path_factory.mktemp("quant-mha"), gqa=False))


def _tok(ckpt):
    c = ckpt.config
    return load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)


def _quantized(ckpt, name, n_tokens=1024):
    return methods.quantize_model(ckpt, name, tokenizer=_tok(ckpt), n_tokens=n_tokens)


def _weights(w_seed=0, n=48, k=128):
    g = torch.Generator().manual_seed(w_seed)
    w = torch.randn(n, k, generator=g)
    w[3, 5] = 9.0  # an outlier block
    w[7, 32:64] = w[7, 32:64].abs()  # a one-signed block
    return w


def _grid_residual(qt, w):
    """|w − deq| and the scale per element, and whether each element lies inside the block's range."""
    n, k = qt.shape
    s = np.repeat(np.abs(qt.scales), qt.block_size, 1).reshape(n, k)
    z = np.repeat(qt.zeros, qt.block_size, 1).reshape(n, k).astype(np.float32)
    pos = w.numpy() / np.repeat(qt.scales, qt.block_size, 1).reshape(n, k) + z
    inside = (pos >= -0.5) & (pos <= 2 ** qt.bits - 0.5)
    return np.abs(w.numpy() - qt.dequantize()), s, inside


@pytest.mark.parametrize("sym,clip", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("bits", [4, 8])
def test_block_quantizer_within_half_a_step(sym, clip, bits):
    w = _weights()
    qt = blocks.quantize(w, bits, sym, clip)
    assert qt.codes.dtype == np.uint8 and qt.codes.max() <= 2 ** bits - 1
    err, s, inside = _grid_residual(qt, w)
    # every weight inside its block's range is within half a step of its dequantized value
    assert np.all(err[inside] <= s[inside] * (0.5 + 1e-6))
    if not clip:
        # unclipped asymmetric grids cover the whole block; the symmetric one (extreme -> -2^(b-1)) may
        # clamp the opposite extreme by at most one step, like onnxruntime's packer and Q4_0
        assert np.all(err <= s * ((1.0 if sym else 0.5) + 2 ** bits * FP16))
    else:
        # clipping trades range for resolution: never worse than the unclipped grid per block (MSE)
        plain = blocks.quantize(w, bits, sym, False)
        e_clip = ((w.numpy() - qt.dequantize()) ** 2).reshape(w.shape[0], -1, 32).sum(-1)
        e_plain = ((w.numpy() - plain.dequantize()) ** 2).reshape(w.shape[0], -1, 32).sum(-1)
        assert np.all(e_clip <= e_plain + 1e-7)


def test_symmetric_rtn_matches_onnxruntime_packer():
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    w = _weights(1)
    n, k = w.shape
    packed = np.zeros((n, k // 32, 16), np.uint8)
    scales = np.zeros((n, k // 32), np.float32)
    quantize_matmul_4bits(packed, np.ascontiguousarray(w.numpy().T), scales, np.zeros((n, 2), np.uint8), 32, n, k, True)
    qt = blocks.quantize(w, 4, sym=True)
    # same codes where the fp16-rounded scale does not move a weight across a rounding boundary
    assert np.mean(qt.packed() == packed) > 0.99
    assert np.allclose(qt.scales, scales, rtol=1e-3)


def test_packing_layouts():
    w = _weights(2, n=8, k=96)  # 3 blocks: an odd count pads the zero points
    qt = blocks.quantize(w, 4, sym=False)
    p = qt.packed()
    assert p.shape == (8, 3, 16)
    assert np.array_equal(p & 0x0F, qt.codes[..., 0::2]) and np.array_equal(p >> 4, qt.codes[..., 1::2])
    zp = qt.packed_zeros()
    assert zp.shape == (8, 2)
    assert np.array_equal(zp[:, 0] & 0x0F, qt.zeros[:, 0]) and np.array_equal(zp[:, 1] & 0x0F, qt.zeros[:, 2])


@pytest.mark.parametrize("block", [32, 128])
def test_gptq_with_uncorrelated_inputs_is_rtn(block):
    """With a diagonal Hessian no error is propagated, so GPTQ is exactly round-to-nearest on the same grid
    (block 128: wider than GPTQ's 32-column lazy batch, and each grid still covers its whole block)."""
    w = _weights(3, k=256)
    H = torch.diag(torch.rand(w.shape[1], generator=torch.Generator().manual_seed(0)) + 0.5)
    for sym in (True, False):
        g, r = gptq.gptq(w, H, 4, sym=sym, block=block), blocks.quantize(w, 4, sym=sym, block=block)
        assert g.block_size == block
        assert np.array_equal(g.codes, r.codes) and np.array_equal(g.scales, r.scales)


def test_gptq_on_grid_and_lowers_output_error():
    w = _weights(4, n=32, k=128)
    g = torch.Generator().manual_seed(5)
    X = torch.randn(512, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.3  # correlated inputs
    qg = gptq.gptq(w, X.T @ X / len(X), 4, sym=False)
    qr = blocks.quantize(w, 4, sym=False)
    # GPTQ's codes are ordinary grid points: codes in range, dequantization is scale·(code − zero)
    assert qg.codes.max() <= 15 and qg.zeros.max() <= 15
    deq = (qg.codes.astype(np.float32) - qg.zeros[..., None]) * qg.scales[..., None]
    assert np.array_equal(deq.reshape(qg.shape), qg.dequantize())
    err = lambda qt: float(((X @ (w - torch.from_numpy(qt.dequantize())).T) ** 2).sum())  # noqa: E731
    assert err(qg) < 0.8 * err(qr)


def test_gptq_damping_defaults_to_the_module_constant(monkeypatch):
    """gptq() without damp= damps by gptq.DAMP, act-order's pass too (the K-quant grids call it so)."""
    w = _weights(4, n=32, k=128)
    g = torch.Generator().manual_seed(5)
    X = torch.randn(64, 128, generator=g) @ torch.randn(128, 128, generator=g)  # T < K: damping matters
    H = X.T @ X / len(X)
    for ao in (False, True):
        light, heavy = (gptq.gptq(w, H, 4, clip=True, damp=d, act_order=ao).codes for d in (0.01, 1.0))
        assert not np.array_equal(light, heavy)
        assert np.array_equal(gptq.gptq(w, H, 4, clip=True, act_order=ao).codes, light)
        monkeypatch.setattr(gptq, "DAMP", 1.0)
        assert np.array_equal(gptq.gptq(w, H, 4, clip=True, act_order=ao).codes, heavy)
        monkeypatch.setattr(gptq, "DAMP", 0.01)


def test_a_methods_damping_reaches_its_calibration(tiny_gqa):
    """Act-order methods damp by gptq.AO_DAMP, the others by gptq.DAMP, unless the Method names its own
    (benchmarks/quant_methods.py --damp): the codes follow the damping the method asks for."""
    from dataclasses import replace

    ao, fo = methods.method("awq_gptq_sym_ao+emb8"), methods.method("awq_gptq_sym+emb8")
    assert (ao.gptq_damp, fo.gptq_damp, replace(ao, damp=0.05).gptq_damp) == (gptq.AO_DAMP, gptq.DAMP, 0.05)
    assert gptq.AO_DAMP != gptq.DAMP
    digest = lambda m: methods.digest(_quantized(tiny_gqa, m, n_tokens=256))  # noqa: E731
    assert digest(ao) == digest(replace(ao, damp=gptq.AO_DAMP)) != digest(replace(ao, damp=gptq.DAMP))
    assert digest(fo) == digest(replace(fo, damp=gptq.DAMP)) != digest(replace(fo, damp=gptq.AO_DAMP))


def test_gptq_over_stacked_rows_equals_gptq_per_linear():
    """Calibration runs q|k|v (and gate|up) as one GPTQ pass over their stacked rows: rows are
    independent given the shared Hessian, so it must quantize each linear as a pass of its own would."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(256, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.3
    H = 2 * X.T @ X / len(X)
    parts = [_weights(s, n=n, k=128) for s, n in ((11, 48), (12, 16), (13, 16))]
    stacked = gptq.gptq(torch.cat(parts), H, 4, sym=True, clip=True)
    lo = 0
    for w in parts:
        one, rows = gptq.gptq(w, H, 4, sym=True, clip=True), stacked.rows(slice(lo, lo + len(w)))
        lo += len(w)
        assert np.mean(one.codes == rows.codes) > 0.999 and np.allclose(one.scales, rows.scales)


def test_gptq_rows_over_threads_equal_one_thread(monkeypatch):
    """GPTQ splits its rows over the intra-op threads (rows are independent given H): the codes and
    scales are those of one pass over all rows."""
    g = torch.Generator().manual_seed(9)
    X = torch.randn(256, 128, generator=g) @ torch.randn(128, 128, generator=g) * 0.3
    w = torch.cat([_weights(s, n=32, k=128) for s in (21, 22)]).double()
    n_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(gptq, "ROWS_PER_THREAD", 8)  # 64 rows -> 2 threads of 32
        split = gptq.gptq(w, gptq.hessian(X.double()), 4, sym=True, clip=True)
        monkeypatch.setattr(gptq, "ROWS_PER_THREAD", 10 ** 9)
        whole = gptq.gptq(w, gptq.hessian(X.double()), 4, sym=True, clip=True)
    finally:
        torch.set_num_threads(n_threads)
    assert np.array_equal(split.codes, whole.codes) and np.array_equal(split.scales, whole.scales)


def test_act_order_keeps_the_layout_and_lowers_output_error():
    """Act-order rounds the columns in descending H-diagonal order onto grids fitted beforehand: the
    blocks stay consecutive columns with the grids of the clip search weighted by H's diagonal (what
    MatMulNBits and Q4_0 read), the codes lie on them, and on inputs of unequal importance (channel
    scales spread as in a real model's activations) the output error is below GPTQ's in file order."""
    g = torch.Generator().manual_seed(3)
    X = (torch.randn(1024, 256, generator=g) @ torch.randn(256, 256, generator=g) * 0.1) * torch.randn(256, generator=g).exp()
    H, w = gptq.hessian(X.double()), _weights(4, n=64, k=256).double()
    ao = gptq.gptq(w, H, 4, sym=True, clip=True, act_order=True)
    base = gptq.gptq(w, H, 4, sym=True, clip=True)
    s, _ = blocks.fit_grid(w.reshape(64, 8, 32), 4, True, True, H.diag().reshape(8, 32)[None])
    assert ao.block_size == 32 and ao.codes.shape == base.codes.shape and ao.codes.max() <= 15
    assert np.array_equal(ao.scales, s[..., 0].float().numpy())
    assert not np.array_equal(ao.codes, base.codes)
    err = lambda qt: float(((X.double() @ (w - torch.from_numpy(qt.dequantize()).double()).T) ** 2).sum())  # noqa: E731
    assert err(ao) < 0.9 * err(base)


def test_least_squares_scales_lower_the_hessian_error_and_keep_the_codes():
    """refine_scales keeps GPTQ's codes and moves each block's scale to the least-squares one: the
    H-weighted error (what GPTQ minimizes) drops, and the scales stay fp16 values."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(512, 128, generator=g, dtype=torch.float64) * torch.rand(128, generator=g, dtype=torch.float64) * 3
    H, w = gptq.hessian(X), _weights(6, n=64, k=128).double()
    base = gptq.gptq(w, H, 4, sym=True, clip=True)
    ls = gptq.refine_scales(base, w, H)
    err = lambda qt: float(((X @ (w - torch.from_numpy(qt.dequantize()).double()).T) ** 2).sum())  # noqa: E731
    assert np.array_equal(ls.codes, base.codes) and np.array_equal(ls.zeros, base.zeros)
    assert not np.array_equal(ls.scales, base.scales)
    assert np.array_equal(ls.scales, ls.scales.astype(np.float16).astype(np.float32))
    assert err(ls) < 0.99 * err(base)


def test_float_target_aims_at_the_float_outputs():
    """float_target's W + ΔW solves the normal equations of ‖W·x_f − W'·x‖² (tiny damping, full-rank x),
    and is W itself when the quantized model's inputs are the float model's."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(400, 48, generator=g, dtype=torch.float64)
    xf = x + 0.1 * torch.randn(400, 48, generator=g, dtype=torch.float64)
    w = torch.randn(16, 48, generator=g, dtype=torch.float64)
    H = gptq.hessian(x)
    assert torch.equal(calibrate.float_target(w, x, x, H), torch.zeros_like(w))
    w2 = w + calibrate.float_target(w, x, xf, H, damp=1e-12)
    assert torch.allclose(w2 @ (x.T @ x), w @ (xf.T @ x), rtol=1e-8, atol=1e-8)
    assert (w2 - w).abs().max() > 1e-2
    heavy = w + calibrate.float_target(w, x, xf, H)  # FT_DAMP: pulled back towards W
    assert (heavy - w).norm() < (w2 - w).norm()


@pytest.mark.parametrize("name", ["awq_gptq_sym_ls+emb8", "awq_gptq_sym_seq+emb8", "awq_gptq_sym_ft+emb8"])
def test_refining_methods_change_the_codes_or_scales_and_stay_close(tiny_gqa, name):
    """The opt-in refinements of the default (least-squares scales, sequential inputs, the float
    target) each give other weights than the default, deterministically, as close to the float model."""
    base, a, b = _quantized(tiny_gqa, "awq_gptq_sym+emb8", 512), _quantized(tiny_gqa, name, 512), _quantized(tiny_gqa, name, 512)
    assert methods.digest(a) == methods.digest(b) != methods.digest(base)
    ids = _tok(tiny_gqa).encode("def f(x): return x + 1  # a comment about lists and dicts")
    ref = reference_logits(tiny_gqa, ids)
    err = lambda q: np.abs(reference_logits(tiny_gqa, ids, weights=q.weight) - ref).max()  # noqa: E731
    assert err(a) < 2 * err(base)


def test_refining_methods_refuse_kquant_and_experts(tiny_gqa, tmp_path):
    with pytest.raises(BadInput, match="dense"):
        methods.quantize_model(tiny_gqa, "awq_gptq_sym_ft", tokenizer=_tok(tiny_gqa), kmix="q4_k_m")
    moe = load(make_tiny(tmp_path / "moe", shape="moe", fmt="bin"))
    for name in ("awq_gptq_sym_ls", "awq_gptq_sym_seq"):
        with pytest.raises(BadInput, match="mixture-of-experts"):
            methods.quantize_model(moe, name, tokenizer=_tok(moe))


def test_moe_experts_take_the_methods_act_order():
    """A mixture-of-experts layer's experts are fitted by moe._fit: act-order reaches them too."""
    from edgepack.quant import moe

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g, dtype=torch.float64) * torch.randn(64, generator=g, dtype=torch.float64).exp()
    w = torch.randn(32, 64, generator=g, dtype=torch.float64)
    got = moe._fit(w, x, methods.method("awq_gptq_sym_ao"), 32)
    want = gptq.gptq(w, gptq.hessian(x), 4, True, True, block=32, damp=gptq.AO_DAMP, act_order=True)
    plain = gptq.gptq(w, gptq.hessian(x), 4, True, True, block=32, damp=gptq.AO_DAMP)
    assert np.array_equal(got.codes, want.codes) and not np.array_equal(got.codes, plain.codes)


def test_hessian_and_inverse_cholesky():
    """hessian() multiplies only the blocks on and above the diagonal; _inverse_cholesky's one reversed
    Cholesky gives the factor the three-pass chol(cholesky_inverse(chol(H))) gives, with the diagonal given."""
    g = torch.Generator().manual_seed(10)
    x = torch.randn(300, 200, generator=g, dtype=torch.float64) @ torch.randn(200, 200, generator=g, dtype=torch.float64)
    H = gptq.hessian(x, piece=64)  # four column pieces, the last one short
    ref = 2 * x.T @ x / len(x)
    assert torch.allclose(H, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    d = H.diag() + 0.01 * H.diag().mean()
    Hd = H.clone()
    Hd.diagonal().copy_(d)
    H0 = H.clone()
    U = gptq._inverse_cholesky_(H.flip(0, 1), d)
    old = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
    assert torch.equal(U, U.triu()) and torch.allclose(U, old, rtol=1e-9, atol=1e-12 * float(old.abs().max()))
    assert torch.equal(H, H0)  # gptq() factors a reversed copy: H itself is not changed
    L = torch.linalg.cholesky(Hd[:101, :101])  # the recursion by halves, odd sizes on the way down
    assert torch.allclose(gptq._lower_inverse_(L.clone(), leaf=16), torch.linalg.inv(L), rtol=1e-9, atol=1e-12)
    bad = torch.eye(64, dtype=torch.float64)
    bad[0, 1] = bad[1, 0] = 5.0  # indefinite even after the 1% damping
    with pytest.raises(torch.linalg.LinAlgError):
        gptq.gptq(torch.randn(8, 64), bad, 4)
    t = torch.arange(35.0).reshape(5, 7)
    assert torch.equal(gptq._reverse_(t.clone(), chunk=4), t.flip(0, 1))


@pytest.mark.parametrize("name", ["rtn", "asym", "mse", "awq", "gptq", "awq_gptq", "rtn+emb8"])
def test_methods_are_deterministic(tiny_gqa, name):
    a, b = _quantized(tiny_gqa, name), _quantized(tiny_gqa, name)
    for n in tiny_gqa.names:
        if len(tiny_gqa.shape(n)) == 2:
            qa, qb = a.qtensor(n), b.qtensor(n)
            assert np.array_equal(qa.codes, qb.codes) and np.array_equal(qa.scales, qb.scales) and np.array_equal(qa.zeros, qb.zeros), n
            assert (qa.bits, qa.block_size) == ((8, 64) if name.endswith("emb8") and n == "model.embed_tokens.weight" else (4, 32))
        assert torch.equal(a.weight(n), b.weight(n)), n


_CODES_HASH = """
import sys
from edgepack.model.checkpoint import load
from edgepack.quant import methods
print(methods.digest(methods.quantize_model(load(sys.argv[1]), sys.argv[2], n_tokens=512)))
"""


@pytest.mark.parametrize("name", ["awq_gptq_sym+emb8", "awq_gptq"])
def test_calibration_is_the_same_whatever_the_cpu_kernels(tiny_gqa, name):
    """The calibration's codes, scales and rescaled norms are bit-identical whichever kernels torch
    and MKL pick: what a CPU without AVX-512 (or with AMX) gets is simulated by forcing torch's
    kernels to scalar / AVX2 (ATEN_CPU_CAPABILITY) and MKL's to its compatible / AVX2 branch
    (MKL_CBWR), with 1 or 2 threads. With float32 calibration every one of these four gave other
    codes on this tiny model (and +4.0% vs +6.5% Δppl on the demo between an Intel and an AMD CPU)."""
    import os
    import subprocess
    import sys

    runs = [{}, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"},
            {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "2"}]
    out = []
    for extra in runs:
        env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")} | extra
        r = subprocess.run([sys.executable, "-c", _CODES_HASH, str(tiny_gqa.path), name], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(r.stdout.split()[-1])
    assert len(set(out)) == 1, dict(zip(map(str, runs), out))


@pytest.mark.parametrize("fixture", ["tiny_gqa", "tiny_mha"])
def test_awq_fold_is_exact_in_float(fixture, request):
    """Scales folded into the norms / v rows / up rows and divided into the weights: the same function."""
    ckpt = request.getfixturevalue(fixture)
    q = methods.Quantized(ckpt, methods.method("awq"))
    calibrate._calibrate(q, calibrate.calibration_ids(_tok(ckpt), 256, 128), float_only=True)
    changed = [n for n in q.floats if not torch.equal(q.floats[n], ckpt.torch(n))]
    assert any("layernorm" in n for n in changed) and any("v_proj" in n for n in changed) and any("up_proj" in n for n in changed)
    ids = _tok(ckpt).encode("The quick brown fox jumps over the lazy dog. " * 4)
    ref, folded = reference_logits(ckpt, ids), reference_logits(ckpt, ids, weights=q.weight)
    assert np.allclose(ref, folded, atol=1e-4 * np.abs(ref).max())


def test_calibrated_quantized_model_is_close_and_records_calibration(tiny_mha):
    q = _quantized(tiny_mha, "awq_gptq")
    assert q.info["calibration"]["tokens"] == 1024 and q.info["calibration"]["sequences"] == 2
    assert "from 'c' on" in q.info["calibration"]["source"]
    ids = _tok(tiny_mha).encode("def f(x): return x + 1  # a comment about lists and dicts")
    ref, got = reference_logits(tiny_mha, ids), reference_logits(tiny_mha, ids, weights=q.weight)
    assert np.abs(ref - got).max() < 0.5 * np.abs(ref).max()


def test_calibration_is_shared_only_inside_its_scope(tiny_mha, monkeypatch):
    """An export's ONNX and GGUF reuse one calibration; outside the scope nothing is cached (and held)."""
    calls = []
    real = calibrate._calibrate
    monkeypatch.setattr(methods, "_calibrate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    with methods.shared_calibration():
        a = _quantized(tiny_mha, "gptq_sym+emb8", n_tokens=256)
        b = _quantized(tiny_mha, "gptq_sym+emb5", n_tokens=256)  # other table bits, same layers
        assert len(calls) == 1 and b.tensors.keys() >= {n for n in a.tensors if n.startswith("model.layers.")}
    assert methods._SHARED is None
    _quantized(tiny_mha, "gptq_sym+emb8", n_tokens=256)
    assert len(calls) == 2


def test_unknown_method_is_bad_input():
    with pytest.raises(BadInput, match="unknown int4 method"):
        methods.method("awq+emb2")


# -- the formats carry the quantized weights exactly --------------------------------------------------
def _gguf_weights(path, ckpt):
    import gguf
    from gguf import quants

    from edgepack.formats.gguf_writer import permute_qk

    c = ckpt.config
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.MINICPM, c.num_hidden_layers)
    by_gguf = {names.get_name(n, try_suffixes=(".weight",)): n for n in ckpt.names}
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        hf = by_gguf[t.name]
        w = np.asarray(t.data, np.float32) if t.tensor_type.name == "F32" else \
            quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(ckpt.shape(hf))
        if hf.endswith(("q_proj.weight", "k_proj.weight")):  # undo llama.cpp's row order
            heads = c.num_attention_heads if "q_proj" in hf else c.num_key_value_heads
            w = w[np.argsort(permute_qk(np.arange(w.shape[0]), heads))]
        out[hf] = (t.tensor_type.name, w)
    return out


@pytest.mark.parametrize("name,types", [("awq_gptq_sym_ao+emb5", {"Q4_0", "Q5_0"}), ("asym+emb8", {"Q4_1", "Q8_0"}),
                                        ("awq_gptq_sym_ls+emb5", {"Q4_0", "Q5_0"})])
def test_gguf_holds_the_quantized_weights(tiny_gqa, tmp_path, name, types):
    from edgepack.formats.gguf_writer import write_gguf

    q = methods.quantize_model(tiny_gqa, name, tokenizer=_tok(tiny_gqa), block8=32)  # the quant stage, then the encoder
    info = write_gguf(tiny_gqa, tmp_path, quantized=q)
    assert info["quantization"]["method"] == name and set(info["quantization"]["tensor_types"]) == types
    got = _gguf_weights(tmp_path / info["file"], tiny_gqa)
    for n in tiny_gqa.names:
        ref = q.weight(n).numpy()
        # Q4_1 stores the offset m = −scale·zero in fp16: the only rounding the file adds
        tol = 1e-3 * np.abs(ref).max() if got[n][0] == "Q4_1" else 0
        assert np.abs(got[n][1] - ref).max() <= tol, n


class _Shapes:
    """A checkpoint's names and shapes from a config alone (what calibrate.default_tokens reads)."""
    def __init__(self, **fields):
        from edgepack.model.checkpoint import expected_shapes
        from edgepack.model.families import parse_config
        from edgepack.model.testmodels import tiny_config

        self.config = parse_config(tiny_config(**fields))
        self._shapes = expected_shapes(self.config)
        self.names = list(self._shapes)

    def shape(self, name):
        return self._shapes[name]


def test_the_default_calibration_size_follows_the_model_size(tiny_gqa):
    """More tokens where they are cheap: 8192 for a small model, 4096 on MiniCPM-2B's layers (its act-order
    calibration then fits 30 minutes on 2 cores), 2048 from a MiniCPM3-4B-sized stack on; the embedding
    does not count (calibration never multiplies by it)."""
    big = dict(num_attention_heads=36, num_key_value_heads=36, vocab_size=122753)
    assert calibrate.default_tokens(tiny_gqa) == calibrate.MAX_CALIBRATION_TOKENS == 8192
    assert calibrate.default_tokens(_Shapes(hidden_size=2304, num_hidden_layers=40, intermediate_size=5760, **big)) == 4096
    assert calibrate.default_tokens(_Shapes(hidden_size=2304, num_hidden_layers=80, intermediate_size=5760, **big)) == 2048
    assert calibrate.default_tokens(_Shapes(hidden_size=2304, num_hidden_layers=20, intermediate_size=5760, **big)) == 8192
    assert calibrate.default_tokens(_Shapes(hidden_size=2304, num_hidden_layers=20, intermediate_size=5760,
                                            **{**big, "vocab_size": 10 * 122753})) == 8192


@pytest.mark.parametrize("name,block", [("awq_gptq+emb8", 32), ("gptq_sym", 32), ("awq_gptq_sym_ao+emb8", 16),
                                        ("awq_gptq_sym_ls+emb8", 32)])
def test_onnx_runs_the_quantized_weights(tiny_gqa, tmp_path, name, block):
    """The ONNX graph (MatMulNBits with our scales/zero points, 8-bit GatherBlockQuantized table)
    computes what the float reference computes on the dequantized weights, at the block size asked for
    (the tiny model's dimensions divide by 16 and 32 only)."""
    import onnx

    from edgepack.formats.onnx_writer import write_onnx
    from edgepack.runtime.onnx_backend import OnnxBackend

    q = methods.quantize_model(tiny_gqa, name, tokenizer=_tok(tiny_gqa), block=block)
    entry = write_onnx(tiny_gqa, tmp_path, dtype="int4", threads=1, quantized=q, block_size=block)
    qd = entry["quantization"]
    assert qd["method"] == name and qd["calibration"]["tokens"] == calibrate.default_tokens(tiny_gqa) == 8192
    assert qd["gptq_damping"] == methods.method(name).gptq_damp  # the manifest says how GPTQ was damped
    assert qd["block_size"] == block and qd["scheme"].startswith(f"int4_sym_block{block}" if methods.method(name).sym else f"int4_asym_block{block}")
    m = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    ops = {(n.op_type, a.i) for n in m.graph.node for a in n.attribute if a.name == "bits"}
    assert ("MatMulNBits", 4) in ops and (("GatherBlockQuantized", 8) in ops) == name.endswith("emb8")
    assert {a.i for n in m.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
            if a.name == "block_size" and n.input[1].startswith("model.layers")} == {block}
    assert any(i.name.endswith("_zero_points") for i in m.graph.initializer) == (not methods.method(name).sym)
    ids = _tok(tiny_gqa).encode("The quick brown fox jumps over the lazy dog. def f(x): return x + 1")
    ref = reference_logits(tiny_gqa, ids, weights=q.weight)
    with OnnxBackend(tmp_path, threads=1) as b:
        got = b.forward(ids, all_logits=True)
    # MatMulNBits rounds activations to int8 (accuracy_level 4): ~1% of the logit range
    assert np.abs(got - ref).max() < 0.03 * np.abs(ref).max()
