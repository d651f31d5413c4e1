"""MiniCPM3 (multi-head latent attention): the family, its reference, both formats, int4 in the engines.

The reference is checked against transformers' own MiniCPM3ForCausalLM (native since 5.13, no remote
code) on tiny random checkpoints in MiniCPM3's config layout, tied and untied, below and above the
LongRoPE switch, and at the real head sizes; then the f32 GGUF (llama.cpp's minicpm3 graph) and the fp32
ONNX (MLA decompressed into GroupQueryAttention) against the reference, prefill and step decode; then
int4 of each in onnxruntime-genai and llama.cpp as edgepack's runtime and CLI use them.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.errors import NotSupported
from edgepack.export import export
from edgepack.formats.manifest import kv_cache_bytes
from edgepack.model.checkpoint import load
from edgepack.model.config import DecoderConfig
from edgepack.model.families import parse_config
from edgepack.model.reference import KVCache, MiniCPM
from edgepack.model.testmodels import CHINESE, make_tiny, tiny_config
from edgepack.model.tokenizer import load_tokenizer
from edgepack.runtime.gguf_backend import GGUFBackend
from edgepack.runtime.onnx_backend import OnnxBackend

TEXT = "The quick brown fox jumps over the lazy dog in 2024. " + CHINESE
# MiniCPM3-4B's heads (nope 64 + rope 32, v 64) and ranks (768, 256); 8 heads of them instead of 40, 2 layers
REAL_HEADS = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=8, q_lora_rank=768, kv_lora_rank=256,
                  qk_nope_head_dim=64, qk_rope_head_dim=32, intermediate_size=256)


def _ids(d, n):
    ck = load(d)
    ids = load_tokenizer(d, bos_id=ck.config.bos_token_id).encode(TEXT * 12)
    assert len(ids) >= n
    return ids[:n]


def _reference(d, ids, context):
    ck = load(d)
    ck.config = ck.config.with_context(context)
    return MiniCPM.from_checkpoint(ck)(torch.tensor([ids]))[0].numpy()


def _rel(got, ref):
    return float(np.abs(got - ref).max() / (ref.max() - ref.min()))


# -- the description ------------------------------------------------------------------------------
def test_minicpm3_config_maps_to_the_mla_description():
    c = parse_config(tiny_config(family="minicpm3"))
    assert (c.family, c.gguf_arch, c.attention) == ("minicpm3", "minicpm3", "mla")
    assert (c.head_dim, c.rope_dim, c.nope_dim, c.v_head_dim) == (48, 16, 32, 32)
    assert (c.q_lora_rank, c.kv_lora_rank, c.latent_norm_eps) == (64, 32, 1e-6)
    assert c.rope.kind == "longrope" and len(c.rope.long_factor) == 8 and c.rope.original_max_position_embeddings == 256
    assert (c.scale_emb, c.scale_depth, c.dim_model_base, c.eos_token_ids) == (12.0, 1.4, 256, (2, 3))
    assert DecoderConfig.from_manifest(json.loads(json.dumps(c.to_dict()))) == c
    real = parse_config({"model_type": "minicpm3", "hidden_size": 2560, "num_hidden_layers": 62,
                                    "num_attention_heads": 40, "intermediate_size": 6400, "vocab_size": 73448,
                                    "eos_token_id": [2, 73440]})  # MiniCPM3Config's defaults are the 4B's
    assert (real.head_dim, real.rope_dim, real.v_head_dim, real.q_lora_rank, real.kv_lora_rank) == (96, 32, 64, 768, 256)
    assert real.tie_word_embeddings and real.embedding_scale == 12.0


def test_minicpm3_layouts_edgepack_cannot_run_are_one_clear_error():
    with pytest.raises(NotSupported, match="q_lora_rank null"):
        parse_config(tiny_config(family="minicpm3", q_lora_rank=None))
    with pytest.raises(NotSupported, match="num_key_value_heads"):
        parse_config(tiny_config(family="minicpm3", num_key_value_heads=2))
    bad = tiny_config(family="minicpm3")
    bad["rope_scaling"]["short_factor"] = bad["rope_scaling"]["short_factor"] * 2  # head_dim/2 instead of rope/2
    with pytest.raises(Exception, match="must be a list of 8 positive numbers"):
        parse_config(bad)


# -- the reference against transformers' MiniCPM3ForCausalLM ------------------------------------
def _transformers(d, ids):
    from transformers import MiniCPM3ForCausalLM

    hf = MiniCPM3ForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()  # native class, no remote code
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("tied", [True, False])
def test_reference_equals_transformers_minicpm3_below_and_above_the_longrope_switch(tmp_path, tied):
    """transformers picks LongRoPE's factor set by the sequence (long past original_max_position_embeddings
    = 256); the reference by the context it is built for: 200 tokens at context 256, 300 at 1024."""
    d = make_tiny(tmp_path / "m", family="minicpm3", tied=tied)
    for n, context in ((200, 256), (300, 1024)):
        ids = _ids(d, n)
        want = _transformers(d, ids)
        got = _reference(d, ids, context)
        print(f"tied={tied} {n} tokens: max |error| {_rel(got, want):.1e} of the logit range")
        assert _rel(got, want) <= 1e-4, (n, context)
        other = _reference(d, ids, 1024 if context == 256 else 256)  # the other factor set is measurably wrong
        assert _rel(other, want) > 1e-3, (n, context)


def test_reference_equals_transformers_at_minicpm3_4b_head_sizes(tmp_path):
    d = make_tiny(tmp_path / "m", family="minicpm3", **REAL_HEADS)
    c = load(d).config
    assert (c.head_dim, c.rope_dim, c.v_head_dim, c.q_lora_rank, c.kv_lora_rank) == (96, 32, 64, 768, 256)
    ids = _ids(d, 64)
    assert _rel(_reference(d, ids, 256), _transformers(d, ids)) <= 1e-4


def test_reference_cache_decodes_like_the_full_forward(tmp_path):
    d = make_tiny(tmp_path / "m", family="minicpm3")
    ids = _ids(d, 40)
    model = MiniCPM.from_checkpoint(load(d))
    full = model(torch.tensor([ids]))[0]
    cache = KVCache(model.config.num_hidden_layers)
    steps = [model(torch.tensor([ids[:10]]), cache)[0]] + [model(torch.tensor([[t]]), cache)[0] for t in ids[10:]]
    assert torch.allclose(torch.cat(steps), full, atol=1e-4)


# -- f32 GGUF and fp32 ONNX against the reference ------------------------------------------------
@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied-other-mup"])
def fp32_art(request, tmp_path_factory):
    """Untied with μP constants other than MiniCPM3-4B's: llama.cpp's minicpm3 graph hard-codes 12/1.4/256,
    so the GGUF must carry the ratio in its tensors."""
    over = {} if request.param else dict(scale_emb=10.0, scale_depth=2.0, dim_model_base=32)
    d = make_tiny(tmp_path_factory.mktemp("src"), family="minicpm3", tied=request.param, **over)
    out = export(model=d, out=tmp_path_factory.mktemp("a") / "fp32", dtype="fp32", fidelity_tokens=0, threads=1)
    return d, out


def test_f32_gguf_equals_reference_prefill_and_decode(fp32_art):
    """llama.cpp's own minicpm3 graph (NeoX rope on the trailing rope dims, rope_factors picked by n_ctx)."""
    d, out = fp32_art
    ids = _ids(d, 80)
    gguf_file = next((out / "gguf").glob("*.gguf"))
    refs = {n_ctx: _reference(d, ids, n_ctx) for n_ctx in (1024, 256)}
    for n_ctx, ref in refs.items():
        with GGUFBackend(gguf_file, n_ctx=n_ctx, threads=1) as b:
            full = b.forward(ids, all_logits=True)
            b.reset()
            steps = [b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]]
        print(f"f32 GGUF n_ctx {n_ctx}: max |error| {_rel(full, ref):.1e} of the logit range")
        assert _rel(full, ref) <= 1e-3 and _rel(np.concatenate(steps), ref) <= 1e-3, n_ctx
        other = refs[256 if n_ctx == 1024 else 1024]
        assert _rel(full, other) > 10 * _rel(full, ref), n_ctx  # llama.cpp took this n_ctx's factor set


def test_fp32_onnx_equals_reference_prefill_and_decode(fp32_art):
    d, out = fp32_art
    ids = _ids(d, 80)
    ref = _reference(d, ids, 1024)
    with OnnxBackend(out / "onnx", threads=1) as b:
        full = b.forward(ids, all_logits=True)
        b.reset()
        steps = [b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]]
    print(f"fp32 ONNX: max |error| {_rel(full, ref):.1e} of the logit range")
    assert _rel(full, ref) <= 1e-3 and _rel(np.concatenate(steps), ref) <= 1e-3


def test_both_formats_at_minicpm3_4b_head_sizes(tmp_path):
    """Heads of nope 64 + rope 32 and v 64, ranks 768/256: GQA's 16-wide rotary over 96-wide
    heads, llama.cpp's 32 rope dims of 96, against the reference."""
    d = make_tiny(tmp_path / "m", family="minicpm3", **REAL_HEADS)
    out = export(model=d, out=tmp_path / "a", dtype="fp32", fidelity_tokens=0, threads=2, context=256)
    ids = _ids(d, 48)
    ref = _reference(d, ids, 256)
    with OnnxBackend(out / "onnx", threads=2) as b:
        onnx_err = _rel(b.forward(ids, all_logits=True), ref)
    with GGUFBackend(next((out / "gguf").glob("*.gguf")), n_ctx=256, threads=2) as b:
        gguf_err = _rel(b.forward(ids, all_logits=True), ref)
    print(f"4B heads: fp32 ONNX {onnx_err:.1e}, f32 GGUF {gguf_err:.1e} of the logit range")
    assert onnx_err <= 1e-3 and gguf_err <= 1e-3


def _edited_onnx(src, dst, edit):
    """A copy of the fp32 ONNX folder with its graph changed by edit(model) (weights inlined)."""
    import onnx

    shutil.copytree(src, dst)
    m = onnx.load(str(src / "model.onnx"))  # loads model.onnx.data too
    edit(m)
    (dst / "model.onnx.data").unlink()
    onnx.save_model(m, str(dst / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return dst


def test_onnx_layout_is_what_makes_it_exact(fp32_art, tmp_path):
    """The same graph with each head in the checkpoint's [nope | rope] order (q_b rows and the K Concat
    swapped back) rotates the wrong dims and misses the reference; without V's zero padding GQA gets v
    narrower than k and onnxruntime refuses to run it. Both are what the writer's layout avoids."""
    import onnx
    from onnx import numpy_helper

    d, out = fp32_art
    c = load(d).config
    n, hd, r = c.num_attention_heads, c.head_dim, c.rope_dim
    ids = _ids(d, 40)
    ref = _reference(d, ids, 1024)

    def nope_first(m):
        back = np.concatenate([h * hd + np.r_[r:hd, 0:r] for h in range(n)])  # undo [rope | nope]
        for t in m.graph.initializer:
            if t.name.endswith("q_b_proj.MatMul.weight"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:, back], t.name))
        for node in m.graph.node:
            if node.op_type == "Concat" and node.name.endswith("/k/Concat"):
                node.input[0], node.input[1] = node.input[1], node.input[0]

    def no_v_padding(m):  # v goes to GQA as it comes out of kv_b: heads of v_head_dim
        m.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, n * c.v_head_dim]), "unpadded_v_shape"))
        for node in list(m.graph.node):
            if node.op_type == "Pad":
                for other in m.graph.node:  # the Reshape after the Pad reads the unpadded v instead
                    if node.output[0] in other.input:
                        other.input[:] = [node.input[0], "unpadded_v_shape"]
                m.graph.node.remove(node)

    with OnnxBackend(out / "onnx", threads=1) as b:
        exact = _rel(b.forward(ids, all_logits=True), ref)
    swapped = _edited_onnx(out / "onnx", tmp_path / "swapped", nope_first)
    with OnnxBackend(swapped, threads=1) as b:
        err = _rel(b.forward(ids, all_logits=True), ref)
    print(f"[rope | nope] heads: {exact:.1e}, [nope | rope] heads: {err:.1e} of the logit range")
    assert err > 1e-3 and err > 100 * exact  # the acceptance bound fails
    unpadded = _edited_onnx(out / "onnx", tmp_path / "unpadded", no_v_padding)
    with pytest.raises(Exception, match="'value' is expected to have same hidden size as key") as e:
        with OnnxBackend(unpadded, threads=1) as b:
            b.forward(ids, all_logits=True)
    print(f"v not padded: {str(e.value).splitlines()[0][:200]}")
    assert onnx.load(str(out / "onnx" / "model.onnx"), load_external_data=False)  # the original is untouched


def test_gguf_metadata_is_what_llama_cpp_minicpm3_reads(fp32_art):
    import gguf

    d, out = fp32_art
    c = load(d).config
    r = gguf.GGUFReader(next((out / "gguf").glob("*.gguf")))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.t")}
    names = {t.name for t in r.tensors}
    assert f["general.architecture"] == "minicpm3"
    assert f["minicpm3.attention.q_lora_rank"] == 64 and f["minicpm3.attention.kv_lora_rank"] == 32
    assert f["minicpm3.attention.key_length"] == 48 and f["minicpm3.attention.value_length"] == 32
    assert f["minicpm3.rope.dimension_count"] == 16
    assert f["minicpm3.rope.scaling.type"] == "longrope" and f["minicpm3.rope.scaling.original_context_length"] == 256
    for t in ("attn_q_a", "attn_q_a_norm", "attn_q_b", "attn_kv_a_mqa", "attn_kv_a_norm", "attn_kv_b", "attn_output"):
        assert f"blk.1.{t}.weight" in names, t
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert shapes["rope_factors_long.weight"] == (8,) and shapes["rope_factors_short.weight"] == (8,)
    assert ("output.weight" in names) == (not c.tie_word_embeddings)


def test_inspect_reports_the_decompressed_kv_cache(fp32_art):
    """ONNX holds K and V of nope + rope dims per head (V zero-padded); llama.cpp K of 48 and V of 32."""
    d, out = fp32_art
    r = subprocess.run([sys.executable, "-m", "edgepack", "inspect", str(out), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mem = {(m["format"], m["context"]): m["kv_cache_bytes"] for m in json.loads(r.stdout)["memory_by_context"]}
    L, n = 2, 4
    assert mem[("onnx", 512)] == 2 * L * n * 48 * 4 * 512  # fp32 anchor: float32 cache
    assert mem[("gguf", 512)] == L * n * (48 + 32) * 2 * 512  # llama.cpp's f16 cache, V unpadded


# -- quantization: the low-rank projections are linears like any other ---------------------------
MLA_LINEARS = ("q_a_proj", "kv_a_proj_with_mqa", "q_b_proj", "kv_b_proj", "o_proj")


def test_awq_folds_exactly_into_mla_and_calibration_sees_each_projection(tmp_path):
    """AWQ's scales fold into the input norm (q_a|kv_a), q_a_layernorm (q_b), kv_a_layernorm (kv_b) and
    kv_b's v rows (o_proj): the float model computes the same function. Calibrated GPTQ then quantizes
    every projection from its own captured input (each differs from plain RTN of the same weight)."""
    from edgepack.fidelity import reference_logits
    from edgepack.quant import blocks, calibrate, methods

    d = make_tiny(tmp_path / "m", family="minicpm3")
    ckpt = load(d)
    tok = load_tokenizer(d)
    ids = calibrate.calibration_ids(tok, 256, 128)
    q = methods.Quantized(ckpt, methods.method("awq"))
    calibrate._calibrate(q, ids, float_only=True)
    changed = {n.split(".")[-2] for n in q.floats if not torch.equal(q.floats[n], ckpt.torch(n))}
    assert {"input_layernorm", "q_a_layernorm", "kv_a_layernorm", "kv_b_proj", "post_attention_layernorm", "up_proj"} <= changed
    text = tok.encode("The quick brown fox jumps over the lazy dog. " * 4)
    ref, folded = reference_logits(ckpt, text), reference_logits(ckpt, text, weights=q.weight)
    assert np.allclose(ref, folded, atol=1e-4 * np.abs(ref).max())
    g = methods.Quantized(ckpt, methods.method("gptq_sym"))
    calibrate._calibrate(g, ids)
    for i in range(2):
        for n in MLA_LINEARS:
            name = f"model.layers.{i}.self_attn.{n}.weight"
            rtn = blocks.quantize(ckpt.torch(name), 4, True, True)
            assert g.tensors[name].shape == ckpt.shape(name) and not np.array_equal(g.tensors[name].data, rtn.data), name


# -- int4 in the engines people use --------------------------------------------------------------
@pytest.fixture(scope="module")
def int4_art(tmp_path_factory):
    """`edgepack export --int4` with the default calibrated methods (each MLA projection calibrated)."""
    src = make_tiny(tmp_path_factory.mktemp("src"), family="minicpm3")
    out = tmp_path_factory.mktemp("int4") / "art"
    args = ["export", "--int4", "--model", src, "--out", out, "--threads", "2", "--fidelity-tokens", "256"]
    r = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return src, out


def test_int4_loads_unmodified_in_onnxruntime_genai_and_llama_cpp(int4_art):
    import onnxruntime_genai as og

    _, art = int4_art
    m = json.loads((art / "edgepack.json").read_text())
    tok = load_tokenizer(art / "tokenizer", bos_id=m["tokenizer"]["bos_id"], eos_ids=m["tokenizer"]["eos_ids"])
    ids = tok.encode_chat([{"role": "user", "content": "Summarise: the fox jumps over the dog. 今天天气很好。"}])
    model = og.Model(str(art / "onnx"))  # the folder, unedited
    p = og.GeneratorParams(model)
    p.set_search_options(do_sample=False, max_length=len(ids) + 8)
    g = og.Generator(model, p)
    g.append_tokens(ids)
    while not g.is_done():
        g.generate_next_token()
    assert len(g.get_sequence(0)) > len(ids)
    del g, model
    with GGUFBackend(next((art / "gguf").glob("*.gguf")), n_ctx=256, threads=2) as b:
        logits = b.forward(ids)
    assert logits.shape == (m["model"]["config"]["vocab_size"],) and np.isfinite(logits).all()
    for a in m["artifacts"]:  # fidelity measured at export, against the float MLA reference
        assert a["fidelity"]["tokens"] == 256 and np.isfinite(a["fidelity"]["ppl"])
        assert "int4" in a["quantization"]["scheme"] or a["quantization"]["scheme"].startswith("Q4")


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_edgepack_run_streams_from_both_backends(int4_art, backend):
    _, art = int4_art
    r = subprocess.run([sys.executable, "-m", "edgepack", "run", str(art), "--prompt", "Hello 你好", "--max-tokens", "8",
                        "--backend", backend, "--threads", "1", "--json", "--no-speculate"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["tokens"] >= 1 and out["backend"] == backend


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_chat_keeps_its_cache_across_turns(int4_art, backend):
    """The second turn prefills only what is new, and replies as a fresh model given the whole history."""
    from edgepack import runtime

    _, art = int4_art
    turn1 = [{"role": "user", "content": "Hello, who are you?"}]
    with runtime.load(art, backend=backend, threads=1) as m:
        first = m.complete(messages=turn1, max_new_tokens=6)
        history = turn1 + [{"role": "assistant", "content": first.text},
                           {"role": "user", "content": "and again, 再说一遍"}]
        second = m.complete(messages=history, max_new_tokens=6)
    assert second.prefill_tokens <= second.prompt_tokens - first.prompt_tokens, (second.prefill_tokens, first.prompt_tokens)
    with runtime.load(art, backend=backend, threads=1) as fresh:
        again = fresh.complete(messages=history, max_new_tokens=6)
    assert again.prefill_tokens == again.prompt_tokens and again.ids == second.ids
    r = subprocess.run([sys.executable, "-m", "edgepack", "chat", str(art), "--backend", backend, "--max-tokens", "6",
                        "--threads", "1"], input="hello\n\nand again\n/exit\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([ln for ln in r.stderr.splitlines() if "× speech" in ln]) == 2


# -- q/k heads of any width (issue 34): ONNX pads them to GroupQueryAttention's multiple of 16 -------------------
def _genai_greedy(folder, ids, n):
    import onnxruntime_genai as og

    model = og.Model(str(folder))  # the folder, unedited
    p = og.GeneratorParams(model)
    p.set_search_options(do_sample=False, max_length=len(ids) + n)
    g = og.Generator(model, p)
    g.append_tokens(ids)
    while not g.is_done():
        g.generate_next_token()
    out = list(g.get_sequence(0))[len(ids):]
    del g, model
    return out


@pytest.mark.parametrize("nope,rope,padded", [(16, 8, 32), (32, 8, 48)], ids=["width24", "width40"])
def test_mla_heads_of_any_width_in_onnx_fp32_and_int4_against_transformers(tmp_path, nope, rope, padded):
    """q/k heads of 24 and 40 (v 32): GQA wants heads a multiple of 16 and a rotary cache a multiple of 8 wide,
    so the ONNX pads each head to `padded` with zeros and rotates 16 dims (8 of them by angle 0). fp32 ONNX and
    the f32 GGUF (unchanged) match transformers' MiniCPM3 at prefill and step decode, genai decodes greedily as
    transformers does through its own cache of genai_config's head_size, and int4 (RTN) stays close; the
    manifest's KV bytes and `inspect` count the padded cache."""
    d = make_tiny(tmp_path / "m", family="minicpm3", qk_nope_head_dim=nope, qk_rope_head_dim=rope)
    c = load(d).config
    assert (c.head_dim, c.v_head_dim) == (nope + rope, 32)
    ids = _ids(d, 48)
    want = _transformers(d, ids)
    fp32 = export(model=d, out=tmp_path / "fp32", dtype="fp32", fidelity_tokens=0, threads=1, context=256)
    with OnnxBackend(fp32 / "onnx", threads=1) as b:
        full = b.forward(ids, all_logits=True)
        b.reset()
        steps = np.concatenate([b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]])
    with GGUFBackend(next((fp32 / "gguf").glob("*.gguf")), n_ctx=256, threads=1) as b:
        gguf_err = _rel(b.forward(ids, all_logits=True), want)
    print(f"width {nope + rope} (padded {padded}): fp32 ONNX {_rel(full, want):.1e} prefill, {_rel(steps, want):.1e} "
          f"decode; f32 GGUF {gguf_err:.1e} of the logit range")
    assert _rel(full, want) <= 1e-5 and _rel(steps, want) <= 1e-5 and gguf_err <= 1e-3

    seq = list(ids[:12])  # transformers' greedy continuation
    for _ in range(6):
        seq.append(int(_transformers(d, seq)[-1].argmax()))
    assert _genai_greedy(fp32 / "onnx", ids[:12], 6) == seq[12:]
    genai = json.loads((fp32 / "onnx" / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["head_size"] == padded

    m = json.loads((fp32 / "edgepack.json").read_text())
    onnx_entry = next(a for a in m["artifacts"] if a["format"] == "onnx")
    L, n = c.num_hidden_layers, c.num_attention_heads
    assert onnx_entry["kv_cache"]["bytes_per_token"] == 2 * L * n * padded * 4 and onnx_entry["kv_cache"]["head_size"] == padded
    assert kv_cache_bytes(m["model"]["config"], 512, 4, onnx_entry) == 2 * L * n * padded * 4 * 512
    r = subprocess.run([sys.executable, "-m", "edgepack", "inspect", str(d), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # the checkpoint's estimate (float16, the int4 export's cache) is padded too
    assert json.loads(r.stdout)["kv_cache_by_context"][-1] == {"context": 1024, "kv_cache_bytes": 2 * L * n * padded * 2 * 1024}
    with OnnxBackend(fp32 / "onnx", threads=1) as b:
        b.reserve(200)
        assert b.kv_bytes() == 2 * L * n * padded * 4 * 200  # what the runtime allocates is what the manifest says

    int4 = export(model=d, out=tmp_path / "int4", formats=("onnx",), method="rtn", fidelity_tokens=0, threads=1, context=256)
    with OnnxBackend(int4 / "onnx", threads=1) as b:
        got = b.forward(ids, all_logits=True)
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"width {nope + rope}: int4 ONNX {_rel(got, want):.1e} of the logit range, top-1 {top1:.2f}")
    assert _rel(got, want) <= 5e-2 and top1 >= 0.9
    assert len(_genai_greedy(int4 / "onnx", ids[:12], 6)) == 6


def test_a_head_gqa_cannot_rotate_is_one_clear_error_before_writing(tmp_path):
    """rope 8 rotates over GQA's 16 dims with 8 nope dims in the gaps: a head of fewer nope dims is refused
    for ONNX before anything is written (GGUF alone still exports)."""
    d = make_tiny(tmp_path / "m", family="minicpm3", qk_nope_head_dim=4, qk_rope_head_dim=8)
    with pytest.raises(NotSupported, match="qk_rope_head_dim 8 need qk_nope_head_dim >= 8 in ONNX"):
        export(model=d, out=tmp_path / "a", dtype="fp32", fidelity_tokens=0, threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    export(model=d, out=tmp_path / "a", dtype="fp32", formats=("gguf",), fidelity_tokens=0, threads=1)
