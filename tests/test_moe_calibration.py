"""Per-expert calibration of MiniCPM-MoE (quant/moe.py): each expert is GPTQ'd from the calibration tokens the
float router sends it, an expert routed too few tokens falls back to RTN, the manifest counts both, and the
calibrated codes are what the ONNX QMoE and the GGUF stacked Q4_0 experts hold.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgepack.export import export
from edgepack.model import reference
from edgepack.model.checkpoint import load
from edgepack.model.fold import fold_scale
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import make_tiny
from edgepack.model.tokenizer import load_tokenizer
from edgepack.quant import methods, moe
from edgepack.quant.calibrate import calibration_ids

METHOD = "gptq_sym"  # both formats take it (ONNX at block 32, GGUF Q4_0): one shared calibration


def _unrouted_expert_0(d):
    """Layer 0's router with expert 0 never chosen: its row is zero (logit 0), and the other four rows are
    ±v, ±u, so each token has two strictly positive logits among them (top-2 never reaches expert 0)."""
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    g = torch.Generator().manual_seed(3)
    v, u = torch.randn(2, sd["model.layers.0.mlp.gate.weight"].shape[1], generator=g)
    sd["model.layers.0.mlp.gate.weight"] = torch.stack([torch.zeros_like(v), v, -v, u, -u]) * 10
    torch.save(sd, d / "pytorch_model.bin")
    return d


@pytest.fixture(scope="module")
def dead(tmp_path_factory):
    """A tiny MoE (5 experts, 2 used) whose layer-0 expert 0 gets no token, exported with a calibrated method."""
    d = _unrouted_expert_0(make_tiny(tmp_path_factory.mktemp("src"), shape="moe", fmt="bin", num_experts=5))
    out = export(model=d, out=tmp_path_factory.mktemp("a") / "art", method=METHOD, fidelity_tokens=0, threads=1)
    q = methods.quantize_model(load(d), METHOD, block=32, scratch=tmp_path_factory.mktemp("spill"))
    return d, out, q


def test_manifest_counts_add_up_and_an_unrouted_expert_is_rtn(dead):
    d, out, q = dead
    man = json.loads((out / "edgepack.json").read_text())
    assert [a["format"] for a in man["artifacts"]] == ["onnx", "gguf"]
    for a in man["artifacts"]:
        e = a["quantization"]["experts"]
        print(a["format"], {k: v for k, v in e.items() if k != "note"})
        assert e["calibrated_experts"] + e["rtn_experts"] == 2 * 5
        assert e["routed_tokens_per_layer"][0][0] == 0  # the forced expert
        assert e["min_routed_tokens"] == moe.MIN_EXPERT_TOKENS
        low = sum(n < moe.MIN_EXPERT_TOKENS for layer in e["routed_tokens_per_layer"] for n in layer)
        assert e["rtn_experts"] == low >= 1 and e["calibrated_experts"] == 10 - low >= 8
        assert e["method"] == "gptq_sym+clip"
        assert sum(map(sum, e["routed_tokens_per_layer"])) == 2 * 2 * a["quantization"]["calibration"]["tokens"]
    from edgepack.formats.manifest import format_artifact, inspect_artifact

    text = format_artifact(inspect_artifact(out))
    assert "      experts: gptq_sym+clip, 9 calibrated, 1 RTN (routed fewer than 128 calibration tokens)" in text, text
    ck = load(d)
    dead0 = moe.expert_name(0, 0, "w1")
    assert _same(q.qtensor(dead0), moe.rtn(ck.torch(dead0), 32))  # the unrouted expert: RTN
    assert not _same(q.qtensor(moe.expert_name(0, 1, "w1")), moe.rtn(ck.torch(moe.expert_name(0, 1, "w1")), 32))


def _same(a, b):
    return np.array_equal(a.data, b.data) and np.array_equal(a.scales, b.scales)


def test_expert_codes_leave_memory_layer_by_layer(tmp_path, monkeypatch):
    """Each layer's expert codes are spilled to the scratch folder before the next layer's experts are
    calibrated (memory holds one layer's experts), read back unchanged, and the folder goes with the model."""
    import gc

    from edgepack.quant import calibrate

    d = make_tiny(tmp_path / "m", shape="moe", fmt="bin")
    events, real_cal, real_put = [], calibrate.calibrate_experts, methods.Quantized.put

    def cal(ckpt, i, *a, **k):
        events.append(("calibrate", i))
        layer = real_cal(ckpt, i, *a, **k)
        kept.update(layer[0])
        return layer

    def put(self, name, qt):
        events.append(("spill", int(name.split(".")[2])))
        real_put(self, name, qt)

    kept = {}
    (tmp_path / "spill").mkdir()
    monkeypatch.setattr(calibrate, "calibrate_experts", cal)
    monkeypatch.setattr(methods.Quantized, "put", put)
    q = methods.quantize_model(load(d), METHOD, block=32, scratch=tmp_path / "spill")
    assert events == [("calibrate", 0)] + [("spill", 0)] * 12 + [("calibrate", 1)] + [("spill", 1)] * 12
    assert not any(moe.is_expert(n) for n in q.tensors) and sorted(q.spilled) == sorted(kept)
    folder = Path(q.scratch.name)
    assert folder.parent == tmp_path / "spill" and len(list(folder.iterdir())) == 24
    assert all(_same(q.qtensor(n), kept[n]) for n in kept)
    del q
    gc.collect()
    assert not folder.exists()


def test_the_written_codes_are_the_calibrated_ones(dead):
    """Both formats hold the Quantized model's expert codes bit for bit (the ONNX QMoE de-interleaved, the GGUF
    stacked Q4_0), and they are not what today's RTN writes (gguf.quants' Q4_0) for the calibrated experts."""
    import gguf
    import onnx
    from gguf import quants
    from onnx import numpy_helper

    from edgepack.formats.gguf_writer import blocks

    d, out, q = dead
    ck, c = load(d), load(d).config
    E, F = c.num_experts, c.intermediate_size
    m = onnx.load(str(out / "onnx" / "model.onnx"))
    init = {t.name: t for t in m.graph.initializer}
    r = gguf.GGUFReader(next((out / "gguf").glob("*.gguf")))
    gt = {t.name: t for t in r.tensors}
    differs = 0
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}.moe.experts"
        fc1, s1 = (numpy_helper.to_array(init[f"{p}.gate_up_proj.{k}"], str(out / "onnx")) for k in ("qweight", "scales"))
        fc2, s2 = (numpy_helper.to_array(init[f"{p}.down_proj.{k}"], str(out / "onnx")) for k in ("qweight", "scales"))
        onnx_parts = {"w1": (fc1[:, 0::2], s1[:, 0::2]), "w3": (fc1[:, 1::2], s1[:, 1::2]), "w2": (fc2, s2)}
        for w, role in (("w1", "gate"), ("w3", "up"), ("w2", "down")):
            stacked = np.asarray(gt[f"blk.{i}.ffn_{role}_exps.weight"].data).reshape(E, -1)
            assert gt[f"blk.{i}.ffn_{role}_exps.weight"].tensor_type.name == "Q4_0"
            for e in range(E):
                n = moe.expert_name(i, e, w)
                qt = q.qtensor(n)
                assert np.array_equal(stacked[e], blocks(qt)[0].reshape(-1)), n
                scaled = qt.scaled(fold_scale(c, n))
                codes, scales = onnx_parts[w]
                assert np.array_equal(codes[e].reshape(-1), qt.packed().reshape(-1)), n
                assert np.array_equal(scales[e], scaled.scales), n
                differs += not np.array_equal(stacked[e], quants.quantize(ck.torch(n).numpy(), quants.GGMLQuantizationType.Q4_0).reshape(-1))
    assert differs >= 3 * 8  # every calibrated expert's three tensors differ from plain RTN
    assert fc1.shape == (E, 2 * F, c.hidden_size // 2)


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """The default tiny MoE calibrated with the Hessians GPTQ receives recorded, and the reference's own
    routing of the calibration tokens at layer 0 (float64, where calibration runs)."""
    d = make_tiny(tmp_path_factory.mktemp("src"), shape="moe", fmt="bin")
    ck = load(d)
    calls = []
    real = moe.gptq

    def spy(w, H, *a, **k):
        calls.append((tuple(w.shape), H.clone()))
        return real(w, H, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(moe, "gptq", spy)
    try:
        q = methods.quantize_model(ck, METHOD, block=32)
    finally:
        mp.undo()
    ids = calibration_ids(load_tokenizer(d), q.info["calibration"]["tokens"])  # the default size for this model
    ref = MiniCPM.from_checkpoint(ck).double()
    x = {}
    ref.model.layers[0].mlp.register_forward_pre_hook(lambda mod, args: x.__setitem__("x", args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        ref(ids)
        _, idx = reference.route(ref.model.layers[0].mlp.gate(x["x"]), ck.config.num_experts_per_tok)
    rows = {e: (idx == e).any(-1).nonzero()[:, 0] for e in range(ck.config.num_experts)}
    return ck, q, calls, x["x"], rows


def test_each_expert_is_calibrated_on_the_rows_the_reference_routes_to_it(routed):
    """Layer 0 (its input is the float model's): expert e's w1|w3 Hessian is exactly that of the rows the
    reference's top-k sends to e, and its w2 Hessian that of its own activation on those rows. Rows routed
    by top-1, top-3 or to all experts give other Hessians (so the equality can fail)."""
    ck, q, calls, x, rows = routed
    c = ck.config
    F = c.intermediate_size
    assert q.info["experts"]["routed_tokens"][0] == [len(rows[e]) for e in range(c.num_experts)]
    assert sum(map(len, rows.values())) == 2 * len(x)
    layer0 = calls[:2 * c.num_experts]  # expert by expert: w1|w3, then w2
    for e in range(c.num_experts):
        (s13, H13), (s2, H2) = layer0[2 * e], layer0[2 * e + 1]
        assert s13 == (2 * F, c.hidden_size) and s2 == (c.hidden_size, F)
        xe = x[rows[e]]
        assert torch.allclose(H13, 2 * xe.T @ xe / len(xe), rtol=1e-10, atol=1e-12), e
        w = {k: ck.torch(moe.expert_name(0, e, k)).double() for k in ("w1", "w3")}
        a = torch.nn.functional.silu(xe @ w["w1"].T) * (xe @ w["w3"].T)
        assert torch.allclose(H2, 2 * a.T @ a / len(a), rtol=1e-10, atol=1e-12), e
        for k in (1, 3):  # a wrong k routes other rows: a different Hessian
            _, idx = reference.route(x @ ck.torch("model.layers.0.mlp.gate.weight").double().T, k)
            xk = x[(idx == e).any(-1)]
            assert not torch.allclose(H13, 2 * xk.T @ xk / len(xk), rtol=1e-3, atol=1e-6)
        assert not torch.allclose(H13, 2 * x.T @ x / len(x), rtol=1e-3, atol=1e-6)


def test_calibrated_experts_beat_rtn_on_their_routed_rows(routed):
    """Each layer-0 expert's output error on its routed rows, GPTQ codes against RTN's."""
    ck, q, _, x, rows = routed
    for e in range(ck.config.num_experts):
        xe = x[rows[e]]
        w = {k: ck.torch(moe.expert_name(0, e, k)).double() for k in ("w1", "w3", "w2")}
        a = torch.nn.functional.silu(xe @ w["w1"].T) * (xe @ w["w3"].T)
        for k, inp in (("w1", xe), ("w3", xe), ("w2", a)):
            n = moe.expert_name(0, e, k)
            err = {how: float(((inp @ (w[k] - torch.from_numpy(qt.dequantize()).double()).T) ** 2).sum())
                   for how, qt in (("gptq", q.qtensor(n)), ("rtn", moe.rtn(w[k], 32)))}
            print(f"expert {e} {k}: GPTQ/RTN output error {err['gptq'] / err['rtn']:.2f}")
            assert err["gptq"] < 0.9 * err["rtn"], (n, err)


def test_the_quantized_layer_feeds_the_next_one_through_the_reference_routing():
    """Routed (what turns a calibrated layer's output into the next layer's input) is reference.MoE on the
    same weights: softmax, top-k, renormalised. Without the renormalisation, or with k±1, it is not."""
    from edgepack.model.families import parse_config
    from edgepack.model.testmodels import tiny_config

    c = parse_config(tiny_config(shape="moe"))
    ref = reference.MoE(c).double()
    x = torch.randn(300, c.hidden_size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    weights = lambda e: tuple(getattr(ref.experts[e], w).weight for w in ("w1", "w3", "w2"))  # noqa: E731
    with torch.no_grad():
        want = ref(x)
        assert torch.allclose(moe.Routed(ref.gate.weight, c.num_experts_per_tok, weights)(x), want, rtol=1e-12, atol=1e-12)
        for k in (1, 3):
            assert not torch.allclose(moe.Routed(ref.gate.weight, k, weights)(x), want, rtol=1e-3, atol=1e-6)
        mp = pytest.MonkeyPatch()
        mp.setattr(moe, "route", lambda logits, k: reference.route(logits, k, renormalize=False))
        try:
            assert not torch.allclose(moe.Routed(ref.gate.weight, 2, weights)(x), want, rtol=1e-3, atol=1e-6)
        finally:
            mp.undo()


@pytest.mark.parametrize("method, experts", [("awq_gptq", "gptq_sym+clip"), ("awq", "clip_sym (routed E[x^2])"), ("mse", "rtn")])
def test_asymmetric_and_awq_only_methods_keep_symmetric_calibrated_experts(tmp_path, method, experts):
    """An asymmetric method (Q4_1 / zero points for the dense linears) still writes experts on the symmetric grid
    QMoE and Q4_0 take; AWQ alone calibrates the experts' clip search from their routed rows; a method without
    calibration (mse) leaves them RTN and the router float. Both engines run each."""
    d = make_tiny(tmp_path / "m", shape="moe", fmt="bin")
    out = export(model=d, out=tmp_path / "art", method=method, fidelity_tokens=128, threads=1)
    for a in json.loads((out / "edgepack.json").read_text())["artifacts"]:
        e = a["quantization"]["experts"]
        n = 0 if experts == "rtn" else 8  # mse: no calibration at all, so RTN experts
        assert (e["method"], e["calibrated_experts"], e["rtn_experts"]) == (experts, n, 8 - n), a["format"]
        assert a["fidelity"]["top1_agreement"] > 0.9, a["format"]
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(next((out / "gguf").glob("*.gguf"))).tensors}
    assert types["blk.0.ffn_gate_exps.weight"] == "Q4_0" and types["blk.0.attn_q.weight"] == "Q4_1"


def test_method_rtn_keeps_every_expert_rtn(tmp_path):
    d = make_tiny(tmp_path / "m", shape="moe", fmt="bin")
    out = export(model=d, out=tmp_path / "art", method="rtn", formats=("onnx",), fidelity_tokens=0, threads=1)
    e = json.loads((out / "edgepack.json").read_text())["artifacts"][0]["quantization"]["experts"]
    assert (e["method"], e["calibrated_experts"], e["rtn_experts"]) == ("rtn", 0, 8)
