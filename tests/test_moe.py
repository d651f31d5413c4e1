"""MiniCPM-MoE-8x2B: experts in the canonical description, the routed FFN in the reference (softmax, top-k,
renormalise, w2(silu(w1 x) * w3 x)), GGUF arch minicpm with stacked ffn_*_exps, ONNX with com.microsoft QMoE
(MoE for fp32). Tiny MoE checkpoints (4 experts, 2 per token, tied and untied) in MiniCPM-MoE's layout.
The int4 export here uses the default (calibrated) method; per-expert calibration itself: test_moe_calibration.py.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.errors import ConfigError
from edgepack.export import export
from edgepack.model import reference
from edgepack.model.checkpoint import load
from edgepack.model.families import parse_config
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import CHINESE, make_tiny, tiny_config
from edgepack.model.tokenizer import load_tokenizer
from edgepack.runtime.gguf_backend import GGUFBackend
from edgepack.runtime.onnx_backend import OnnxBackend

MOE_8X2B = dict(hidden_size=2304, num_hidden_layers=40, num_attention_heads=36, num_key_value_heads=36,
                intermediate_size=5760, vocab_size=122753, max_position_embeddings=4096, scale_emb=12,
                dim_model_base=256, scale_depth=1.4, num_experts=8, num_experts_per_tok=2)


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_the_moe_config_gains_experts():
    c = parse_config(tiny_config(**MOE_8X2B))
    assert (c.num_experts, c.num_experts_per_tok) == (8, 2)
    assert (parse_config(tiny_config()).num_experts, parse_config(tiny_config()).num_experts_per_tok) == (0, 0)
    from edgepack.model.checkpoint import expected_shapes

    s = expected_shapes(c)
    assert s["model.layers.0.mlp.gate.weight"] == (8, 2304)
    assert s["model.layers.39.mlp.experts.7.w1.weight"] == (5760, 2304) == s["model.layers.39.mlp.experts.7.w3.weight"]
    assert s["model.layers.39.mlp.experts.7.w2.weight"] == (2304, 5760)
    assert "model.layers.0.mlp.gate_proj.weight" not in s


def test_routing_is_a_renormalised_top_k_of_the_softmax():
    """= a softmax over the top-k logits (how onnxruntime's QMoE computes it)."""
    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * 3
    w, idx = reference.route(logits, 2)
    top, top_idx = logits.topk(2, -1)
    assert torch.equal(idx, top_idx)
    assert torch.allclose(w, torch.softmax(top, -1), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(50))


@pytest.fixture(scope="module", params=["tied", "untied"])
def fp32_moe(request, tmp_path_factory):
    d = make_tiny(tmp_path_factory.mktemp("src"), shape="moe", tied=request.param == "tied", fmt="bin")
    out = export(model=d, out=tmp_path_factory.mktemp("a") / "fp32", dtype="fp32", fidelity_tokens=0, threads=1)
    return d, out


def _ids(d, n=80):
    return load_tokenizer(d).encode(("The quick brown fox jumps over the lazy dog. " + CHINESE) * 3)[:n]


def _engines(out, ids):
    """{engine: (prefill logits, step-decode logits)} of the fp32 ONNX and f32 GGUF."""
    res = {}
    for B, path in ((OnnxBackend, out / "onnx"), (GGUFBackend, next((out / "gguf").glob("*.gguf")))):
        with B(path, threads=1, n_ctx=256) as b:
            full = b.forward(ids, all_logits=True)
            b.reset()
            steps = np.concatenate([b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]])
        res[B.__name__] = (full, steps)
    return res


def test_fp32_onnx_and_f32_gguf_equal_the_reference_prefill_and_decode(fp32_moe):
    d, out = fp32_moe
    ids = _ids(d)
    ref = MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()
    bound = 1e-3 * (ref.max() - ref.min())
    for engine, (full, steps) in _engines(out, ids).items():
        err = max(np.abs(full - ref).max(), np.abs(steps - ref).max())
        print(f"{engine}: max |error| {err / (ref.max() - ref.min()):.1e} of the logit range")
        assert err <= bound


@pytest.mark.parametrize("wrong", ["no renormalisation", "one expert too few", "one expert too many"])
def test_the_engines_disagree_with_a_wrongly_routed_reference(fp32_moe, wrong, monkeypatch):
    """What makes the test above able to fail: routing without the renormalisation, or with k-1 / k+1
    experts, moves the reference far outside the bound the engines meet."""
    d, out = fp32_moe
    ids = _ids(d)
    ck = load(d)
    k = ck.config.num_experts_per_tok
    if wrong == "no renormalisation":
        route = reference.route
        monkeypatch.setattr(reference, "route", lambda logits, k: route(logits, k, renormalize=False))
    bad = MiniCPM.from_checkpoint(ck)
    if wrong != "no renormalisation":
        for block in bad.model.layers:
            block.mlp.k = k - 1 if wrong == "one expert too few" else k + 1
    bad_ref = bad(torch.tensor([ids]))[0].numpy()
    bound = 1e-3 * (bad_ref.max() - bad_ref.min())
    for engine, (full, steps) in _engines(out, ids).items():
        err = np.abs(full - bad_ref).max()
        print(f"{wrong}: {engine} is {err / (bad_ref.max() - bad_ref.min()):.1e} of the range away")
        assert err > 3 * bound, engine  # the conformance test above (err <= bound) would fail


def test_gguf_has_the_router_and_stacked_experts(fp32_moe):
    import gguf

    d, out = fp32_moe
    r = gguf.GGUFReader(next((out / "gguf").glob("*.gguf")))
    f = {k: v.contents() for k, v in r.fields.items() if "expert" in k}
    assert f == {"minicpm.expert_count": 4, "minicpm.expert_used_count": 2}
    t = {x.name: (x.shape.tolist(), x.tensor_type.name) for x in r.tensors if x.name.startswith("blk.1.ffn")}
    assert t["blk.1.ffn_gate_inp.weight"] == ([64, 4], "F32")  # ggml order: (hidden, n_expert)
    assert t["blk.1.ffn_gate_exps.weight"][0] == t["blk.1.ffn_up_exps.weight"][0] == [64, 160, 4]
    assert t["blk.1.ffn_down_exps.weight"][0] == [160, 64, 4]
    assert not any(n.startswith("blk.1.ffn_gate.") or n.startswith("blk.1.ffn_up.") for n in t)


@pytest.fixture(scope="module")
def int4_moe(tmp_path_factory):
    d = make_tiny(tmp_path_factory.mktemp("src"), shape="moe", fmt="bin")
    out = tmp_path_factory.mktemp("int4") / "art"
    r = _run("export", "--int4", "--model", d, "--out", out, "--threads", "2", "--fidelity-tokens", "256", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_int4_onnx_is_one_qmoe_per_layer_behind_a_router_reshape(int4_moe):
    import onnx

    m = onnx.load(str(int4_moe / "onnx" / "model.onnx"), load_external_data=False)
    nodes = {n.name: n for n in m.graph.node}
    q = [n for n in m.graph.node if n.op_type == "QMoE"]
    assert len(q) == 2 and all(n.domain == "com.microsoft" for n in q)
    a = {x.name: onnx.helper.get_attribute_value(x) for x in q[0].attribute}
    assert (a["k"], a["activation_type"], a["swiglu_fusion"], a["expert_weight_bits"], a["block_size"]) == (2, b"swiglu", 1, 4, 32)
    assert (a["activation_alpha"], a["activation_beta"], a["normalize_routing_weights"]) == (1.0, 0.0, 1)
    router = nodes[q[0].input[1].rsplit("/", 1)[0]]
    assert router.op_type == "Reshape" and nodes[router.input[0].rsplit("/", 1)[0]].op_type == "MatMul"
    init = {t.name: list(t.dims) for t in m.graph.initializer}
    assert init[q[0].input[2]] == [4, 320, 32] and init[q[0].input[3]] == [4, 320, 2]  # (E, 2F, H/2), (E, 2F, H/32)
    assert init[q[0].input[5]] == [4, 64, 80] and init[q[0].input[6]] == [4, 64, 5]
    man = json.loads((int4_moe / "edgepack.json").read_text())
    for a in man["artifacts"]:  # the default method calibrates every expert from its routed tokens (test_moe_calibration.py)
        e = a["quantization"]["experts"]
        assert (e["calibrated_experts"], e["rtn_experts"], e["method"]) == (8, 0, "gptq_sym+clip")
        assert a["quantization"]["method"].startswith("awq_gptq_sym")
        assert a["fidelity"]["top1_agreement"] > 0.9


def test_int4_loads_unmodified_in_onnxruntime_genai_and_llama_cpp(int4_moe):
    import onnxruntime_genai as og

    art = int4_moe
    tok = load_tokenizer(art / "tokenizer")
    ids = tok.encode_chat([{"role": "user", "content": "Summarise: the fox jumps over the dog. 今天天气很好。"}])
    model = og.Model(str(art / "onnx"))
    p = og.GeneratorParams(model)
    p.set_search_options(do_sample=False, max_length=len(ids) + 8)
    g = og.Generator(model, p)
    g.append_tokens(ids)
    while not g.is_done():
        g.generate_next_token()
    assert len(g.get_sequence(0)) > len(ids)
    del g, model
    with GGUFBackend(next((art / "gguf").glob("*.gguf")), n_ctx=256, threads=2) as b:
        assert np.isfinite(b.forward(ids)).all()


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_edgepack_run_streams_from_both_backends(int4_moe, backend):
    r = _run("run", int4_moe, "--prompt", "Hello 你好", "--max-tokens", "8", "--backend", backend, "--threads", "1",
             "--json", "--no-speculate", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["tokens"] >= 1


# -- bad input: one line, exit 2, nothing written ---------------------------------------------------
def _broken(tmp_path, what):
    d = make_tiny(tmp_path / "m", shape="moe", fmt="bin")
    if what == "too many per token":
        raw = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**raw, "num_experts_per_tok": 5}))
        return d, r"config.json: field 'num_experts_per_tok' \(5\) must not exceed num_experts \(4\)"
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    if what == "missing expert":
        for w in ("w1", "w2", "w3"):
            del sd[f"model.layers.1.mlp.experts.3.{w}.weight"]
        msg = r"tensor model.layers.1.mlp.experts.3.w1.weight is missing from the weights"
    else:
        sd["model.layers.0.mlp.gate.weight"] = torch.zeros(5, 64)
        msg = r"tensor model.layers.0.mlp.gate.weight has shape \[5, 64\], but .*config.json implies \[4, 64\]"
    torch.save(sd, d / "pytorch_model.bin")
    return d, msg


@pytest.mark.parametrize("what", ["too many per token", "missing expert", "router shape"])
def test_bad_moe_inputs_are_one_error_line(tmp_path, what):
    import re

    d, msg = _broken(tmp_path, what)
    r = _run("export", "--int4", "--model", d, "--out", tmp_path / "out", "--fidelity-tokens", 0)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgepack: error: "), r.stderr
    assert re.search(msg, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_a_released_bin_is_mapped_again_on_the_next_read(tmp_path):
    d = make_tiny(tmp_path / "m", shape="moe", fmt="bin")
    ck = load(d)
    a = ck.torch("model.layers.1.mlp.experts.2.w3.weight")
    ck.release()
    assert ck._bin is None
    assert torch.equal(ck.torch("model.layers.1.mlp.experts.2.w3.weight"), a)


def test_qmoe_layer_equals_the_routed_ffn_on_its_dequantized_int4_weights(tmp_path):
    """The QMoE node alone (router MatMul -> Reshape -> QMoE) against the reference MoE module holding the
    same int4 weights dequantized: gate/up interleaving, nibble order, scales and routing are exact."""
    from types import SimpleNamespace

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgepack.formats import onnx_moe
    from edgepack.formats.onnx_graph import OPSET, Rows, _DataFile, _Graph, dequantize_int4, quantize_int4

    c = parse_config(tiny_config(shape="moe"))
    E, F, H = c.num_experts, c.intermediate_size, c.hidden_size
    g = torch.Generator().manual_seed(1)
    w = {(e, n): torch.randn(*((H, F) if n == "w2" else (F, H)), generator=g) * 0.1 for e in range(E) for n in ("w1", "w2", "w3")}
    gate = torch.randn(E, H, generator=g)
    data = _DataFile(tmp_path / "m.onnx.data")
    wr = SimpleNamespace(g=_Graph(data), c=c, x="x", int4=True, bs=32, moe=None, pending=None)
    onnx_moe.add(wr, 0, "mlp.gate.weight", gate.numpy())
    for (e, n), t in w.items():
        onnx_moe.add(wr, 0, f"mlp.experts.{e}.{n}.weight", Rows(t.to(torch.bfloat16), 1.0))
    data.close()
    graph = helper.make_graph(wr.g.nodes, "moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", H])],
                              [helper.make_tensor_value_info(wr.pending, TensorProto.FLOAT, ["n", H])], wr.g.inits)
    onnx.save_model(helper.make_model(graph, opset_imports=OPSET, ir_version=10), str(tmp_path / "m.onnx"))
    x = torch.randn(40, H, generator=g)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]

    moe = reference.MoE(c)
    with torch.no_grad():
        moe.gate.weight.copy_(gate)
        for (e, n), t in w.items():
            getattr(moe.experts[e], n).weight.copy_(torch.from_numpy(dequantize_int4(*quantize_int4(t.to(torch.bfloat16)))))
        want = moe(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
