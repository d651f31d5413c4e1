"""K-quant GGUF types written from edgepack's codes: the blocks decode bit-exactly under gguf's (llama.cpp's)
dequantization, the per-tensor types are llama.cpp's own mix, and llama.cpp's logits on the file equal the
reference on edgepack's dequantized weights within llama.cpp's activation-rounding noise."""
import numpy as np
import pytest
import torch

import gguf
from gguf import quants

from edgepack.errors import BadInput
from edgepack.formats.gguf_kquant import pack_k, pack_q5_0
from edgepack.formats.gguf_writer import llama_quantize, write_gguf
from edgepack.model.checkpoint import load
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import make_tiny
from edgepack.model.tokenizer import load_tokenizer
from edgepack.quant import kquant
from edgepack.quant.blocks import quantize
from edgepack.quant.gptq import gptq, hessian
from edgepack.quant.methods import quantize_model
from edgepack.runtime.gguf_backend import GGUFBackend

PROMPT = "The quick brown fox jumps over the lazy dog. " * 4


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def layer():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 512, generator=g, dtype=torch.float64) * 0.05
    w[3, :40] = 0  # a dead stretch: a zero sub-block must stay exact too
    x = torch.randn(600, 512, generator=g, dtype=torch.float64) * torch.rand(512, generator=g, dtype=torch.float64) * 3
    return w, x


@pytest.mark.parametrize("kind", ["q4_k", "q5_k", "q6_k"])
@pytest.mark.parametrize("rounding", ["rtn", "gptq"])
def test_k_blocks_decode_exactly(layer, kind, rounding):
    w, x = layer
    kt = kquant.quantize_as(w, kind, hessian(x) if rounding == "gptq" else None, imp=x.pow(2).mean(0))
    data, name = pack_k(kt)
    assert data.nbytes == kt.nbytes == 48 * 2 * kquant.K_KINDS[kind][3]
    assert np.array_equal(quants.dequantize(data, gguf.GGMLQuantizationType[name]), kt.dequantize())
    bits = kquant.K_KINDS[kind][0]
    assert int(kt.codes.max()) <= 2 ** bits - 1 and len(np.unique(kt.codes)) > 2 ** bits // 2  # the whole range in use
    err = float(np.abs(kt.dequantize() - w.numpy()).mean() / np.abs(w.numpy()).mean())
    assert err < {4: 0.2, 5: 0.1, 6: 0.05}[bits]


def test_gptq_on_the_fixed_grid_beats_rounding(layer):
    """The codes of the GPTQ path carry the error feedback: a smaller output error than round-to-nearest
    on the very same grid (and the grid itself is the same: GPTQ chooses codes only)."""
    w, x = layer
    H = hessian(x)
    rtn, gq = kquant.quantize_as(w, "q4_k", imp=x.pow(2).mean(0)), kquant.quantize_as(w, "q4_k", H, imp=x.pow(2).mean(0))
    assert np.array_equal(rtn.d, gq.d) and np.array_equal(rtn.sc, gq.sc) and np.array_equal(rtn.m, gq.m)
    out = lambda kt: float(((torch.from_numpy(kt.dequantize()).double() - w) @ x.T).pow(2).mean())  # noqa: E731
    assert out(gq) < 0.8 * out(rtn)


def test_q5_0_codes_pack_exactly(layer):
    w, x = layer
    for qt in (quantize(w.float(), 5, True), gptq(w, hessian(x), 5, True, True, block=32)):
        data = pack_q5_0(qt.codes, qt.scales)
        assert np.array_equal(quants.dequantize(data, gguf.GGMLQuantizationType.Q5_0), qt.dequantize())


def test_mix_is_llama_cpps_rule():
    mix = lambda m, n, K=256: kquant.mix(m, n, K, 30, True)  # noqa: E731
    assert mix("q4_k_m", "model.embed_tokens.weight") == "q6_k"  # the tied table is the output
    assert kquant.mix("q4_k_m", "model.embed_tokens.weight", 256, 30, False) == "q4_k"
    assert [i for i in range(30) if mix("q4_k_m", f"model.layers.{i}.mlp.down_proj.weight") == "q6_k"] == \
        [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    assert mix("q4_k_m", "model.layers.5.self_attn.q_proj.weight") == "q4_k"
    assert mix("q4_k_s", "model.layers.3.self_attn.v_proj.weight") == "q5_k"
    assert mix("q4_k_s", "model.layers.4.self_attn.v_proj.weight") == "q4_k"
    assert mix("q5_k_m", "model.layers.4.self_attn.o_proj.weight") == "q5_k"
    # rows not a multiple of 256 (the demo's 576): Q5_0 for Q4_K/Q5_K, Q8_0 for Q6_K
    assert mix("q4_k_m", "model.layers.5.self_attn.q_proj.weight", 576) == "q5_0"
    assert mix("q5_k_m", "model.layers.5.self_attn.q_proj.weight", 576) == "q5_0"
    assert mix("q4_k_m", "model.embed_tokens.weight", 576) == "q8_0"
    with pytest.raises(BadInput, match="unknown K-quant mix"):
        kquant.mix("q3_k_m", "x", 256, 1, True)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A tiny model whose every row is 256 wide (K types apply to all its weights), 8 layers."""
    d = make_tiny(tmp_path_factory.mktemp("wide"), gqa=True, hidden_size=256, intermediate_size=512, num_hidden_layers=8)
    return d, load(d), load_tokenizer(d)


@pytest.mark.parametrize("mix", ["q4_k_m", "q4_k_s", "q5_k_m"])
def test_tensor_types_match_llama_cpps_quantizer(wide, mix, tmp_path):
    d, ckpt, tok = wide
    f32 = write_gguf(ckpt, tmp_path, gguf_type="f32")["file"]
    llama_quantize(tmp_path / f32, tmp_path / "theirs.gguf", mix)
    q = quantize_model(ckpt, "rtn", kmix=mix)
    ours = tmp_path / write_gguf(ckpt, tmp_path, gguf_type=mix, quantized=q)["file"]
    types = lambda p: {t.name: t.tensor_type.name for t in gguf.GGUFReader(p).tensors}  # noqa: E731
    assert types(ours) == types(tmp_path / "theirs.gguf")
    assert gguf.GGUFReader(ours).fields["general.file_type"].contents() == getattr(gguf.LlamaFileType, f"MOSTLY_{mix.upper()}")


@pytest.mark.parametrize("mix", ["q4_k_m"])  # Q5_K's blocks: test_k_blocks_decode_exactly and the type test
def test_llama_cpp_logits_equal_dequantized_reference(wide, mix, tmp_path):
    """llama.cpp loads the file; its logits are the reference's on q.weight (edgepack's dequantized codes)
    within the noise of its Q8_K activation rounding, far closer than to the float model's."""
    d, ckpt, tok = wide
    q = quantize_model(ckpt, "awq_gptq_sym", tokenizer=tok, kmix=mix, n_tokens=512)
    info = write_gguf(ckpt, tmp_path, gguf_type=mix, quantized=q)
    assert info["quantization"]["scheme"] == mix.upper() and info["quantization"]["calibration"]["tokens"] == 512
    ids = tok.encode(PROMPT)
    ref_q = MiniCPM.from_checkpoint(ckpt, weights=q.weight)(torch.tensor([ids]))[0].numpy()
    ref_f = MiniCPM.from_checkpoint(ckpt)(torch.tensor([ids]))[0].numpy()
    with GGUFBackend(tmp_path / info["file"], threads=2) as be:
        got = be.forward(ids, all_logits=True)
    noise, quant = rel_err(got, ref_q), rel_err(got, ref_f)
    print(f"{mix}: vs dequantized reference {noise:.2e}, vs float {quant:.2e}")
    assert noise < 0.015 and noise < quant / 3


def test_fallback_rows_and_bad_requests(tmp_path):
    d = make_tiny(tmp_path / "m")  # 64-wide rows: every weight falls back (Q5_0, the table Q8_0)
    ckpt = load(d)
    q = quantize_model(ckpt, "rtn", kmix="q4_k_m")
    info = write_gguf(ckpt, tmp_path, gguf_type="q4_k_m", quantized=q)
    types = {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / info["file"]).tensors if len(t.shape) > 1}
    assert types == {"Q5_0", "Q8_0"}
    ids = load_tokenizer(d).encode(PROMPT)
    ref = MiniCPM.from_checkpoint(ckpt, weights=q.weight)(torch.tensor([ids]))[0].numpy()
    with GGUFBackend(tmp_path / info["file"]) as be:
        assert rel_err(be.forward(ids, all_logits=True), ref) < 0.015
    with pytest.raises(BadInput, match="kmix='q4_k_m'"):
        write_gguf(ckpt, tmp_path, gguf_type="q4_k_m")
    with pytest.raises(BadInput, match="unknown K-quant mix"):
        quantize_model(ckpt, "rtn", kmix="q2_k")


def test_export_writes_edgepack_k_codes_and_keeps_llama_cpps_route(wide, tmp_path):
    from edgepack.export import export

    d = wide[0]
    art = export(model=d, out=tmp_path / "a", formats=("gguf",), gguf_type="q4_k_m", method="rtn", fidelity_tokens=64)
    import json

    a = json.loads((art / "edgepack.json").read_text())["artifacts"][0]
    assert a["path"] == "gguf/model-Q4_K_M.gguf" and a["quantization"]["scheme"] == "Q4_K_M"
    assert a["quantization"]["tensor_kinds"] == {"q4_k": 48, "q6_k": 9}  # v/down of layers 0, 3, 6, 7 and the table: Q6_K
    assert a["fidelity"]["top1_agreement"] > 0.8
    art = export(model=d, out=tmp_path / "b", formats=("gguf",), gguf_type="q4_k_m-llamacpp", fidelity_tokens=0)
    assert (art / "gguf" / "model-Q4_K_M-llamacpp.gguf").is_file()


def test_llama_quantize_takes_an_importance_matrix(wide, tmp_path):
    """llama.cpp's own quantizer with an imatrix (its llama_model_imatrix_data array): other codes than without."""
    _, ckpt, _ = wide
    f32 = tmp_path / write_gguf(ckpt, tmp_path, gguf_type="f32")["file"]
    K = ckpt.config.hidden_size
    im = {f"blk.{i}.{t}.weight": np.geomspace(1e-3, 1e3, K).astype(np.float32)
          for i in range(ckpt.config.num_hidden_layers) for t in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")}
    llama_quantize(f32, tmp_path / "plain.gguf", "q4_k_m")
    llama_quantize(f32, tmp_path / "im.gguf", "q4_k_m", imatrix=im)
    a, b = ({t.name: t for t in gguf.GGUFReader(tmp_path / p).tensors} for p in ("plain.gguf", "im.gguf"))
    assert not np.array_equal(a["blk.0.attn_q.weight"].data, b["blk.0.attn_q.weight"].data)
    assert np.array_equal(a["blk.0.attn_output.weight"].data, b["blk.0.attn_output.weight"].data)  # no entry: as before
