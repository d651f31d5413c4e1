"""ONNX writer + OnnxBackend: fp32 conformance with the reference, int4 in onnxruntime-genai, int4 error."""
import json

import numpy as np
import onnx
import pytest
import torch

from edgepack.model import checkpoint, fold, reference
from edgepack.formats.onnx_graph import dequantize_int4, quantize_int4
from edgepack.formats.onnx_writer import write_onnx
from edgepack.errors import BadInput
from edgepack.runtime.onnx_backend import OnnxBackend
from edgepack.model.testmodels import make_tiny

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]


def _export(tmp_path_factory, src, name, **kw):
    out = tmp_path_factory.mktemp(name)
    entry = write_onnx(checkpoint.load(src), out, **kw)
    return out, entry


@pytest.fixture(scope="module", params=["mha", "gqa", "untied"])
def tiny_fp32(request, tmp_path_factory):
    src = make_tiny(tmp_path_factory.mktemp(f"src-{request.param}"), gqa=request.param != "mha", tied=request.param != "untied")
    out, _ = _export(tmp_path_factory, src, f"onnx-{request.param}", dtype="fp32", threads=1)
    return src, out


@pytest.fixture(scope="module")
def demo_int4(tmp_path_factory, demo_dir):
    return _export(tmp_path_factory, demo_dir, "demo-int4", dtype="int4", threads=2)


def test_fp32_matches_reference_prefill_and_decode(tiny_fp32):
    src, out = tiny_fp32
    ck = checkpoint.load(src)
    ids = list(range(3, 43))
    want = reference.MiniCPM.from_checkpoint(ck)(torch.tensor([ids]))[0].numpy()
    with OnnxBackend(out, threads=1, n_ctx=64) as b:
        got = b.forward(ids, all_logits=True)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-4
        b.reset()
        step = [b.forward(ids[:10], all_logits=True)] + [b.forward([t])[None] for t in ids[10:]]
        assert b.n_past == len(ids)
        assert np.abs(np.concatenate(step) - want).max() <= 1e-4


def test_cache_sized_by_reserve_grows_mid_decode_without_changing_logits(tiny_fp32):
    src, out = tiny_fp32
    ids = list(range(3, 43))
    want = reference.MiniCPM.from_checkpoint(checkpoint.load(src))(torch.tensor([ids]))[0].numpy()
    with OnnxBackend(out, threads=1, n_ctx=64) as b:
        assert b.capacity == 0  # nothing allocated until asked
        b.reserve(12)
        assert b.capacity == 12
        step = [b.forward(ids[:10], all_logits=True)]
        for t in ids[10:]:
            step.append(b.forward([t])[None])  # the 13th token outgrows 12 rows: copy once, rebind
        assert b.capacity == 64  # doubling (or 256) capped at n_ctx
        assert np.abs(np.concatenate(step) - want).max() <= 1e-4
        b.reserve(1000)
        assert b.capacity == 64  # never past n_ctx


def test_long_prefill_is_chunked_and_exact(tiny_fp32, monkeypatch):
    import edgepack.runtime.onnx_backend as ob

    src, out = tiny_fp32
    ids = list(range(3, 60))
    want = reference.MiniCPM.from_checkpoint(checkpoint.load(src))(torch.tensor([ids]))[0].numpy()
    monkeypatch.setattr(ob, "PREFILL_CHUNK", 16)  # chunks that continue after a non-empty cache
    with OnnxBackend(out, threads=1, n_ctx=64) as b:
        assert np.abs(b.forward(ids, all_logits=True) - want).max() <= 1e-4
        assert b.n_past == len(ids)
        with pytest.raises(Exception, match="context full"):
            b.forward([1] * 10)


def test_folder_layout_and_genai_config(demo_int4):
    out, entry = demo_int4
    for f in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "genai_config.json").read_text())
    assert cfg["model"]["decoder"]["session_options"]["intra_op_num_threads"] == 2
    assert cfg["search"]["past_present_share_buffer"] is True
    assert cfg["model"]["context_length"] == 8192 and cfg["model"]["decoder"]["head_size"] == 64
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    q = entry["quantization"]
    assert (entry["format"], q["bits"], q["block_size"], q["bits_per_weight"]) == ("onnx", 4, 32, 5.0)


def test_tied_int4_embedding_is_stored_once_and_shared(demo_int4):
    out, _ = demo_int4
    g = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in g.node}
    assert {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization", "GatherBlockQuantized"} <= ops
    assert "MatMul" not in ops and "Gather" not in {n.op_type for n in g.node if "embed" in n.name}
    big = [t for t in g.initializer if t.dims and t.dims[0] == 49152]
    assert sorted(t.name for t in big) == ["lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"]
    gather = next(n for n in g.node if n.op_type == "GatherBlockQuantized")
    reshape = next(n for n in g.node if n.output[0] == gather.input[0])
    head = next(n for n in g.node if n.output[0] == "logits")
    assert head.op_type == "MatMulNBits" and reshape.input[0] == head.input[1] == "lm_head.MatMul.weight_Q4"
    # 135M weights at 4 bits + fp32 scales per 32: well under a byte per weight, embedding counted once
    assert (out / "model.onnx.data").stat().st_size < 135e6 * 5.5 / 8


def test_untied_int4_head_is_its_own_matmulnbits(tmp_path_factory, tiny_untied_dir):
    out, _ = _export(tmp_path_factory, tiny_untied_dir, "untied-int4", dtype="int4", block_size=32)
    g = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    head = next(n for n in g.node if n.output[0] == "logits")
    gather = next(n for n in g.node if n.op_type == "GatherBlockQuantized")
    assert head.op_type == "MatMulNBits" and head.input[1] == "lm_head.MatMul.weight_Q4"
    assert "lm_head" not in next(n for n in g.node if n.output[0] == gather.input[0]).input[0]
    with OnnxBackend(out, threads=1, n_ctx=32) as b:
        assert np.isfinite(b.forward([1, 5, 9])).all()


def test_int4_blocks_dequantize_within_rtn_bound():
    w = np.random.default_rng(0).standard_normal((96, 256)).astype(np.float32)
    w[0, :32] *= 50  # one block with an outlier
    packed, scales = quantize_int4(w, 32)
    assert packed.shape == (96, 8, 16) and scales.shape == (96, 8)
    err = np.abs(dequantize_int4(packed, scales) - w).reshape(96, 8, 32)
    step = np.abs(scales)[..., None]  # symmetric: amax maps to ±8, so one step is amax/8
    assert (err <= step * 0.5 + 1e-6).mean() > 0.99  # rounding: half a step...
    assert (err <= step + 1e-6).all()  # ...except +amax clamped to 7 when amax is the negative end
    amax = np.abs(w.reshape(96, 8, 32)).max(-1)
    assert np.allclose(np.abs(scales), amax / 8, rtol=1e-6)


def test_exported_int4_weights_are_the_folded_weights(demo_int4, demo_dir):
    """The bytes in model.onnx.data dequantize to the folded checkpoint, within the int4 bound."""
    from onnx.numpy_helper import to_array

    out, _ = demo_int4
    m = onnx.load(str(out / "model.onnx"))  # loads external data
    inits = {t.name: t for t in m.graph.initializer}
    ck = checkpoint.load(demo_dir)
    want = {}
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
             "model.layers.0.self_attn.v_proj.weight", "model.layers.3.self_attn.o_proj.weight"]
    for n in names:
        want[n] = ck.numpy(n) * fold.fold_scale(ck.config, n)
    qkv = np.concatenate([want[n] for n in names[:3]])
    for ref_w, base in ((qkv, "model.layers.0.attn.qkv_proj"), (want[names[3]], "model.layers.3.attn.o_proj")):
        p, s = to_array(inits[base + ".MatMul.weight_Q4"]), to_array(inits[base + ".MatMul.weight_scales"])
        err = np.abs(dequantize_int4(p, s) - ref_w).reshape(s.shape + (32,))
        assert (err <= np.abs(s)[..., None] + 1e-6).all()
        assert err.mean() < np.abs(ref_w).mean() * 0.2


@pytest.fixture(scope="module")
def chat_ids(demo_int4):
    from edgepack.model.tokenizer import load_tokenizer

    tok = load_tokenizer(demo_int4[0])
    return tok, [tok.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]


def test_genai_loads_int4_folder_and_greedy_matches_onnx_backend(demo_int4, chat_ids):
    """Whole greedy sequences may be compared here: genai and OnnxBackend run the same onnxruntime on
    the same graph, so every CPU gives both the same kernels (and roundings)."""
    import onnxruntime_genai as og

    out, entry = demo_int4
    tok, prompts = chat_ids
    assert entry["kv_cache"]["dtype"] == "float16"  # genai allocates its cache in the graph's past_key_values type
    model = og.Model(str(out))  # the folder, unedited
    n_new = 24
    with OnnxBackend(out, threads=2, n_ctx=256) as b:
        for ids in prompts:
            p = og.GeneratorParams(model)
            p.set_search_options(do_sample=False, max_length=len(ids) + n_new)
            g = og.Generator(model, p)
            g.append_tokens(ids)
            while not g.is_done():
                g.generate_next_token()
            genai_out = [int(t) for t in g.get_sequence(0)][len(ids):]
            del g

            b.reset()
            ours, logits = [], b.forward(ids)
            while len(ours) < n_new:
                t = int(np.argmax(logits))
                ours.append(t)
                if t in tok.eos_ids:
                    break
                logits = b.forward([t])
            # genai may end the sequence with the eos it stopped at or without it: compare what precedes it
            strip = lambda seq: seq[:-1] if seq and seq[-1] in tok.eos_ids else seq  # noqa: E731
            assert strip(genai_out) == strip(ours)
            assert len(ours) >= 5 and tok.decode(ours).strip()


def test_genai_tokenizer_reads_the_copied_files(demo_int4, chat_ids, tmp_path_factory, tiny_dir):
    import onnxruntime_genai as og

    from edgepack.model.tokenizer import load_tokenizer

    tok, prompts = chat_ids
    gtok = og.Tokenizer(og.Model(str(demo_int4[0])))
    text = gtok.apply_chat_template(json.dumps([{"role": "user", "content": PROMPTS[0]}]), add_generation_prompt=True)
    assert [int(t) for t in gtok.encode(text)] == prompts[0]
    # sentencepiece model: converted to tokenizer.json (genai reads no tokenizer.model)
    out, _ = _export(tmp_path_factory, tiny_dir, "tiny-int4", dtype="int4")
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer.model").is_file()
    gtok = og.Tokenizer(og.Model(str(out)))
    s = "Hello world, 今天天气很好 and more text"
    assert [int(t) for t in gtok.encode(s)] == load_tokenizer(tiny_dir).encode(s, add_bos=False)


def test_close_releases_the_session(tiny_fp32):
    _, out = tiny_fp32
    b = OnnxBackend(out, threads=1, n_ctx=32)
    b.forward([1, 2, 3])
    b.close()
    assert not hasattr(b, "session") and not hasattr(b, "_cache")
    with pytest.raises(AttributeError):
        b.forward([4])


def test_huge_page_collapse_waits_for_an_idle_model_and_stops_on_close(tiny_fp32, monkeypatch):
    import edgepack.runtime.onnx_backend as ob

    _, out = tiny_fp32
    b = OnnxBackend(out, threads=1, n_ctx=32)
    b.forward([1, 2, 3])
    assert not b.idle()  # a step just ran: the next one of a generation comes within milliseconds
    monkeypatch.setattr(ob, "IDLE_S", 0.0)
    assert b.idle()
    assert b.huge_pages.wait(timeout=60).seconds is not None  # it ran once idle (a hang fails here)
    b.close()
    assert b.huge_pages._thread is None or not b.huge_pages._thread.is_alive()
    assert OnnxBackend(out, threads=1, huge_pages=False).huge_pages is None
    with pytest.raises(BadInput, match="huge_pages"):
        OnnxBackend(out, huge_pages="always")


def test_bad_folder_is_a_clear_error(tmp_path):
    from edgepack.errors import BadInput

    with pytest.raises(BadInput, match="genai_config.json"):
        OnnxBackend(tmp_path)
    with pytest.raises(BadInput, match="dtype"):
        write_onnx(checkpoint.load(make_tiny(tmp_path / "m")), tmp_path, dtype="int8")


# -- the KV cache's element type, end to end ---------------------------------------------------------

def _kv_types(folder):
    g = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    io = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.output)}
    inits = {t.name: t.data_type for t in g.initializer}
    return ({io[n] for n in io if n.startswith(("past_key_values.", "present."))},
            {inits["cos_cache"], inits["sin_cache"]}, io["logits"])


def test_int4_kv_cache_is_float16_in_graph_manifest_buffers_and_inspect(tmp_path, tiny_gqa_dir):
    """The default int4 export keeps K and V in float16 (onnx_writer.KV_DTYPE): the graph's I/O and
    GQA's rotary caches, the manifest entry, OnnxBackend's shared buffers, and inspect's arithmetic."""
    from edgepack.export import export
    from edgepack.formats.manifest import inspect_artifact
    from edgepack.formats.onnx_writer import KV_DTYPE

    assert KV_DTYPE == "float16"
    art = export(model=tiny_gqa_dir, out=tmp_path / "a", formats=("onnx", "gguf"), method="rtn", fidelity_tokens=0, threads=1)
    folder = art / "onnx"
    kv, rope, logits = _kv_types(folder)
    assert kv == rope == {onnx.TensorProto.FLOAT16} and logits == onnx.TensorProto.FLOAT
    m = json.loads((art / "edgepack.json").read_text())
    m["model"]["config"]["max_position_embeddings"] = m["model"]["config"]["context_length"] = 4096  # the tiny
    # model's context has no row of inspect's table
    (art / "edgepack.json").write_text(json.dumps(m))
    info = inspect_artifact(art)
    entry = next(a for a in info["artifacts"] if a["format"] == "onnx")
    assert entry["kv_cache"]["dtype"] == "float16" and entry["kv_cache"]["bytes_per_element"] == 2
    c = checkpoint.load(tiny_gqa_dir).config
    per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim  # K and V, every layer
    rows = {(r["format"], r["context"]): r for r in info["memory_by_context"]}
    ctx = 4096
    assert rows[("onnx", ctx)]["kv_cache_bytes"] == per_token * ctx * 2 == rows[("gguf", ctx)]["kv_cache_bytes"]
    assert rows[("onnx", ctx)]["kv_cache_dtype"] == "float16"
    with OnnxBackend(folder, threads=1, n_ctx=64) as b:
        b.forward(list(range(3, 13)))
        assert b.kv_dtype == np.float16 and {buf.dtype for buf, _ in b._cache} == {np.dtype(np.float16)}
        assert b.kv_bytes() == sum(buf.nbytes for buf, _ in b._cache) == per_token * b.capacity * 2
    # an artifact written before the record (no kv_cache entry) was float32: inspect counts 4 bytes
    m = json.loads((art / "edgepack.json").read_text())
    next(a for a in m["artifacts"] if a["format"] == "onnx").pop("kv_cache")
    from edgepack.formats.manifest import kv_cache_dtype

    assert kv_cache_dtype(next(a for a in m["artifacts"] if a["format"] == "onnx")) == ("float32", 4)


def test_float16_kv_cache_logits_match_float32_kv_cache(tmp_path, tiny_dir):
    """Same int4 weights, KV in float16 vs float32: prefill and step-by-step decode logits agree to float16
    rounding of K, V and the attention inputs (measured on the tiny model: ~1e-3 relative)."""
    src = checkpoint.load(tiny_dir)
    half, e16 = tmp_path / "kv16", None
    half.mkdir()
    full = tmp_path / "kv32"
    full.mkdir()
    e16 = write_onnx(src, half, threads=1)
    e32 = write_onnx(src, full, threads=1, kv_dtype="float32")
    assert (e16["kv_cache"]["dtype"], e32["kv_cache"]["dtype"]) == ("float16", "float32")
    assert _kv_types(full)[0] == {onnx.TensorProto.FLOAT}
    weights = [{t.name: onnx.numpy_helper.to_array(t, str(d)).tobytes() for t in onnx.load(str(d / "model.onnx"),
                load_external_data=False).graph.initializer if not t.name.endswith("_cache")} for d in (half, full)]
    assert weights[0] == weights[1]  # the same int4 weights: only the cache's type differs
    ids = list(range(3, 43))
    got = {}
    for name, folder in (("16", half), ("32", full)):
        with OnnxBackend(folder, threads=1, n_ctx=64) as b:
            pre = b.forward(ids, all_logits=True)
            b.reset()
            steps = np.concatenate([b.forward(ids[:5], all_logits=True)] + [b.forward([t])[None] for t in ids[5:]])
            got[name] = pre, steps
    for a, b in zip(got["16"], got["32"]):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-2
        assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95
    with pytest.raises(BadInput, match="KV cache dtype"):
        write_onnx(src, tmp_path, kv_dtype="int8")


def test_fp32_anchor_keeps_a_float32_kv_cache(tiny_fp32):
    _, out = tiny_fp32
    kv, rope, _ = _kv_types(out)
    assert kv == rope == {onnx.TensorProto.FLOAT}
    with OnnxBackend(out, threads=1, n_ctx=32) as b:
        b.forward([1, 2, 3])
        assert b.kv_dtype == np.float32 and b._cache[0][0].dtype == np.float32


def test_fused_gate_up_gives_the_same_logits(tmp_path, tiny_dir, monkeypatch):
    """FUSE_GATE_UP (off by default, see onnx_writer) writes one MatMulNBits of (2F, H) + Split: the same
    int4 blocks row for row, so the same logits."""
    import edgepack.formats.onnx_writer as ow

    src, out = checkpoint.load(tiny_dir), {}
    for fuse in (False, True):
        monkeypatch.setattr(ow, "FUSE_GATE_UP", fuse)
        d = tmp_path / f"fuse{fuse}"
        d.mkdir()
        write_onnx(src, d, threads=1)
        ops = [n.op_type for n in onnx.load(str(d / "model.onnx"), load_external_data=False).graph.node]
        assert ops.count("MatMulNBits") == src.config.num_hidden_layers * (5 - fuse) + 1
        with OnnxBackend(d, threads=1, n_ctx=64) as b:
            out[fuse] = b.forward(list(range(3, 40)), all_logits=True)
    assert np.abs(out[True] - out[False]).max() <= 1e-5
