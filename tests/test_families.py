"""Model families: MiniCPM4 (LongRoPE) and MiniCPM5 (Llama layout) next to MiniCPM-2B, in both formats.

Each family's tiny random checkpoint is written in that family's config layout (edgepack.model.testmodels);
the reference forward is checked against an implementation edgepack did not write (transformers'
LlamaForCausalLM; for LongRoPE the published formula, computed here, and llama.cpp's f32 output),
then the fp32 ONNX and f32 GGUF against the reference, then int4 in the engines people use.
"""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.model import rope
from edgepack.model.checkpoint import load
from edgepack.model.config import DecoderConfig
from edgepack.model.families import parse_config
from edgepack.errors import ConfigError, NotSupported
from edgepack.export import export
from edgepack.model.reference import MiniCPM
from edgepack.runtime.gguf_backend import GGUFBackend, llama_tokenize
from edgepack.runtime.onnx_backend import OnnxBackend
from edgepack.model.testmodels import CHINESE, make_tiny, tiny_config
from edgepack.model.tokenizer import load_tokenizer

TEXT = "The quick brown fox jumps over the lazy dog in 2024. " + CHINESE
MIXED = ("Hello world! In 2024 the model ran offline,  with two spaces.\n" + CHINESE
         + " Mixed 中文 and English: 手机 runs MiniCPM 12345678. Rare: 𠀀 龘. <think>maybe</think> done")


@pytest.fixture(scope="module", params=["minicpm4", "minicpm5"])
def family_fp32(request, tmp_path_factory):
    d = make_tiny(tmp_path_factory.mktemp(f"src-{request.param}"), family=request.param)
    out = export(model=d, out=tmp_path_factory.mktemp("a") / "fp32", dtype="fp32", fidelity_tokens=0, threads=1)
    return request.param, d, out


def _ids(d, n=80):
    """n tokens of mixed English/Chinese text (the family's own tokenizer and bos)."""
    ck = load(d)
    return load_tokenizer(d, bos_id=ck.config.bos_token_id).encode(TEXT * 3)[:n]


def _reference(d, ids, context=None):
    ck = load(d)
    if context:
        ck.config = ck.config.with_context(context)
    return MiniCPM.from_checkpoint(ck)(torch.tensor([ids]))[0].numpy()


# -- recognition --------------------------------------------------------------------------------
@pytest.mark.parametrize("family,expect", [
    ("minicpm", dict(head_dim=16, gguf_arch="minicpm", use_mup=True, tie_word_embeddings=True)),
    ("minicpm4", dict(head_dim=16, gguf_arch="minicpm", use_mup=True, eos_token_ids=(2, 3))),
    ("minicpm5", dict(head_dim=32, gguf_arch="llama", use_mup=False, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_ids=(1, 4))),
])
def test_each_config_layout_maps_to_its_family(family, expect):
    c = parse_config(tiny_config(family=family))
    assert c.family == family
    for k, v in expect.items():
        assert getattr(c, k) == v, k
    if family == "minicpm5":  # no μP: every scalar is identity
        assert (c.embedding_scale, c.residual_scale, c.logit_scale) == (1.0, 1.0, 1.0)
    assert DecoderConfig.from_manifest(json.loads(json.dumps(c.to_dict()))) == c


def test_unknown_layouts_and_bad_longrope_are_one_clear_error():
    with pytest.raises(NotSupported, match="model_type 'qwen2' is not a MiniCPM family"):
        parse_config({**tiny_config(), "model_type": "qwen2"})
    bad = tiny_config(family="minicpm4")
    bad["rope_scaling"]["long_factor"] = bad["rope_scaling"]["long_factor"][:-1]
    with pytest.raises(ConfigError, match=r"rope_scaling.long_factor' must be a list of 8 positive numbers"):
        parse_config(bad)
    with pytest.raises(NotSupported, match="rope_scaling type 'yarn'"):
        parse_config({**tiny_config(family="minicpm5"), "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})


# -- the reference against implementations edgepack did not write ------------------------------
def test_longrope_tables_are_the_published_formula():
    """MiniCPM4's MiniCPMLongRoPE, computed here from its definition: inverse frequencies divided by
    the long factors when the cache is longer than the original context (else the short ones), and
    cos/sin times sqrt(1 + ln(max_pos/original)/ln(original))."""
    raw = tiny_config(family="minicpm4")
    s, hd, base = raw["rope_scaling"], 16, raw["rope_theta"]
    orig, max_pos = s["original_max_position_embeddings"], raw["max_position_embeddings"]
    c = parse_config(raw)
    for context, fac in ((max_pos, s["long_factor"]), (orig, s["short_factor"])):
        t = np.arange(context, dtype=np.float64)
        inv = np.array([1.0 / base ** (2 * i / hd) for i in range(hd // 2)])
        freqs = np.outer(t, 1.0 / np.array(fac)) * inv
        scale = math.sqrt(1 + math.log(max_pos / orig) / math.log(orig))
        cos, sin = rope.tables(c.with_context(context))
        np.testing.assert_allclose(cos, np.cos(freqs) * scale, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sin, np.sin(freqs) * scale, rtol=0, atol=1e-12)
        # and the reference forward rotates with exactly these (rotate-half, both halves share a frequency)
        from edgepack.model.reference import rope as rotate

        x = torch.randn(1, 1, context, hd, dtype=torch.float64)
        emb_c, emb_s = np.concatenate([cos] * 2, -1), np.concatenate([sin] * 2, -1)
        want = x.numpy() * emb_c + np.concatenate([-x.numpy()[..., hd // 2:], x.numpy()[..., :hd // 2]], -1) * emb_s
        got = rotate(x, torch.arange(context), c.with_context(context)).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("source", ["tiny", "demo-llama"])
def test_minicpm5_layout_reference_equals_transformers_llama(source, tmp_path):
    from transformers import LlamaForCausalLM

    d = make_tiny(tmp_path / "m", family="minicpm5") if source == "tiny" else load("demo-llama").path
    ids = _ids(d, 64)
    hf = LlamaForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()  # no remote code: a plain Llama
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    got = _reference(d, ids)
    assert np.abs(got - want).max() <= 1e-4 * (want.max() - want.min())


# -- fp32 ONNX and f32 GGUF against the reference -------------------------------------------------
def test_fp32_onnx_equals_reference_prefill_and_decode(family_fp32):
    family, d, out = family_fp32
    ids = _ids(d)
    ref = _reference(d, ids)
    bound = 1e-3 * (ref.max() - ref.min())
    with OnnxBackend(out / "onnx", threads=1) as b:
        err = np.abs(b.forward(ids, all_logits=True) - ref).max()
        print(f"{family} fp32 ONNX: max |error| {err / (ref.max() - ref.min()):.1e} of the logit range")
        assert err <= bound
        b.reset()
        steps = [b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]]
    assert np.abs(np.concatenate(steps) - ref).max() <= bound


def test_f32_gguf_equals_reference_prefill_and_decode(family_fp32):
    """For LongRoPE this is llama.cpp's own rope (factor tensors, attention factor) on the same file,
    at an n_ctx above the original context (long factors) and at it (short factors)."""
    family, d, out = family_fp32
    ids = _ids(d)
    gguf_file = next((out / "gguf").glob("*.gguf"))
    contexts = (1024, 256) if family == "minicpm4" else (None,)
    refs = {c: _reference(d, ids, c) for c in contexts}
    for context, ref in refs.items():
        bound = 1e-3 * (ref.max() - ref.min())
        with GGUFBackend(gguf_file, n_ctx=context or 256, threads=1) as b:
            full = b.forward(ids, all_logits=True)
            b.reset()
            steps = [b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]]
        err = np.abs(full - ref).max()
        print(f"{family} f32 GGUF (llama.cpp, n_ctx {context or 256}): max |error| {err / (ref.max() - ref.min()):.1e} of the logit range")
        assert err <= bound, context
        assert np.abs(np.concatenate(steps) - ref).max() <= bound, context
        for other, ref2 in refs.items():  # llama.cpp took this context's factor set, not the other one
            if other != context:
                assert np.abs(full - ref2).max() > 10 * err, (context, other)


def test_longrope_export_context_picks_the_factor_set(tmp_path):
    """--context at or below the original context exports the short factors into the ONNX caches,
    matching the reference (and llama.cpp at that n_ctx, above); the default takes the long ones."""
    d = make_tiny(tmp_path / "m", family="minicpm4")
    out = export(model=d, out=tmp_path / "a", formats=("onnx",), dtype="fp32", fidelity_tokens=0, threads=1, context=256)
    ids = _ids(d)
    ref = _reference(d, ids, 256)
    with OnnxBackend(out / "onnx", threads=1) as b:
        got = b.forward(ids, all_logits=True)
    assert np.abs(got - ref).max() <= 1e-3 * (ref.max() - ref.min())
    genai = json.loads((out / "onnx" / "genai_config.json").read_text())
    assert genai["model"]["context_length"] == 256
    m = json.loads((out / "edgepack.json").read_text())
    assert m["model"]["config"]["context_length"] == 256 and m["model"]["architecture"] == "minicpm4"


def test_gguf_metadata_of_each_family(family_fp32):
    import gguf

    family, d, out = family_fp32
    c = load(d).config
    r = gguf.GGUFReader(next((out / "gguf").glob("*.gguf")))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.t") and k != "tokenizer.ggml.merges"}
    names = {t.name for t in r.tensors}
    arch = f["general.architecture"]
    assert arch == c.gguf_arch
    if family == "minicpm4":
        assert f["minicpm.rope.scaling.type"] == "longrope"
        assert f["minicpm.rope.scaling.original_context_length"] == 256
        assert f["minicpm.rope.scaling.attn_factor"] == pytest.approx(math.sqrt(1 + math.log(4) / math.log(256)))
        assert {"rope_factors_long.weight", "rope_factors_short.weight"} <= names
        assert f["tokenizer.ggml.eos_token_id"] == 2 and f["tokenizer.ggml.eot_token_id"] == 3
    else:
        assert not any(k.startswith("llama.embedding_scale") for k in f)
        assert f["llama.attention.key_length"] == 32 and f["llama.attention.value_length"] == 32
        assert f["llama.rope.freq_base"] == pytest.approx(5e6)
        assert f["tokenizer.ggml.pre"] == "minicpm5" and f["tokenizer.ggml.model"] == "gpt2"
        assert f["tokenizer.ggml.bos_token_id"] == 0 and f["tokenizer.ggml.add_bos_token"] is False
        assert "output.weight" in names  # untied head
        assert "<think>" in f["tokenizer.chat_template"]


def test_minicpm5_gguf_tokenizes_like_edgepack(tmp_path):
    """llama.cpp's minicpm5 pre-tokenizer (digit runs, split regex, ignore_merges) on the GGUF gives
    edgepack's (Hugging Face tokenizers') ids on mixed English/Chinese text and on a chat."""
    from edgepack.formats.gguf_writer import write_gguf

    d = make_tiny(tmp_path / "m", family="minicpm5")
    tok = load_tokenizer(d, bos_id=0)
    gguf_file = tmp_path / write_gguf(load(d), tmp_path, gguf_type="f32")["file"]
    assert llama_tokenize(gguf_file, MIXED) == tok.encode(MIXED)
    msgs = [{"role": "user", "content": "你好, what is 2+2?"}]
    assert llama_tokenize(gguf_file, tok.render_chat(msgs), parse_special=True) == tok.encode_chat(msgs)


def test_think_markers_stream_as_text(tmp_path):
    """MiniCPM5's <think> and </think> are added, non-special tokens: they are text in the stream."""
    d = make_tiny(tmp_path / "m", family="minicpm5")
    tok = load_tokenizer(d, bos_id=0)
    ids = tok.encode("<think>plan</think>answer")
    assert tok.encode("<think>")[0] == ids[0] and tok.token_bytes(ids[0]) == b"<think>"
    assert b"".join(tok.token_bytes(i) for i in ids).decode() == "<think>plan</think>answer"
    assert tok.token_bytes(tok.eos_ids[-1]) == b""  # <|im_end|> is special: no text


# -- int4 in the engines people use --------------------------------------------------------------
@pytest.fixture(scope="module", params=["minicpm4", "minicpm5", "demo-llama"])
def family_int4(request, tmp_path_factory):
    """int4 artifacts as `edgepack export --int4` writes them (the demo in Llama form with plain RTN,
    to keep CI short; the calibrated default runs on the tiny families)."""
    src = request.param if request.param == "demo-llama" else make_tiny(tmp_path_factory.mktemp("src"), family=request.param)
    out = tmp_path_factory.mktemp("int4") / "art"
    args = ["export", "--int4", "--model", src, "--out", out, "--threads", "2", "--fidelity-tokens", "512"]
    if request.param == "demo-llama":
        args += ["--method", "rtn"]
    r = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return request.param, out


def test_int4_loads_unmodified_in_onnxruntime_genai_and_llama_cpp(family_int4):
    import onnxruntime_genai as og

    family, art = family_int4
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
    gguf_file = next((art / "gguf").glob("*.gguf"))
    with GGUFBackend(gguf_file, n_ctx=256, threads=2) as b:
        logits = b.forward(ids)
    assert logits.shape == (m["model"]["config"]["vocab_size"],) and np.isfinite(logits).all()
    for a in m["artifacts"]:  # fidelity measured at export, against the family's float reference
        assert a["fidelity"]["tokens"] == 512 and np.isfinite(a["fidelity"]["ppl"])
    if family == "minicpm5":  # the thinking template travels with the artifact, as the model ships it
        assert (art / "tokenizer" / "chat_template.jinja").is_file() and "<think>" in m["tokenizer"]["chat_template"]
        genai_tcfg = json.loads((art / "onnx" / "tokenizer_config.json").read_text())
        assert "<think>" in genai_tcfg["chat_template"]
    if family == "demo-llama":  # a real trained model: int4 RTN stays close to its float self
        assert all(a["fidelity"]["top1_agreement"] > 0.6 for a in m["artifacts"])


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_edgepack_run_streams_from_both_backends(family_int4, backend):
    family, art = family_int4
    r = subprocess.run([sys.executable, "-m", "edgepack", "run", str(art), "--prompt", "Hello 你好", "--max-tokens", "8",
                        "--backend", backend, "--threads", "1", "--json", "--no-speculate"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["tokens"] >= 1 and out["backend"] == backend and r.stdout.strip()


@pytest.mark.parametrize("mode,want", [
    ("show", "<think>plan it</think>The answer."),
    ("hide", "The answer."),
    ("dim", "\033[2m<think>plan it</think>\033[0mThe answer."),
])
def test_thinking_block_is_shown_dimmed_or_hidden_across_piece_boundaries(mode, want):
    from edgepack.runtime.thinking import ThinkingView

    text = "<think>plan it</think>The answer."
    for cut in range(1, len(text)):  # every split of the stream into two pieces, markers cut anywhere
        v = ThinkingView(mode)
        assert v.feed(text[:cut]) + v.feed(text[cut:]) + v.flush() == want, cut
    v = ThinkingView(mode)  # one character at a time
    assert "".join(v.feed(ch) for ch in text) + v.flush() == want
    v = ThinkingView(mode)  # a reply cut off while thinking still closes the dimming
    assert v.feed("<think>unfinished <") + v.flush() == {"show": "<think>unfinished <", "hide": "",
                                                         "dim": "\033[2m<think>unfinished <\033[0m"}[mode]


def test_fidelity_of_a_longrope_gguf_uses_the_exported_factor_set():
    """Windows shorter than the original context would make llama.cpp take the short factors while the
    export (context above the original) uses the long ones: fidelity asks for an n_ctx past the original."""
    from edgepack.model.rope import llama_cpp_n_ctx

    c = parse_config(tiny_config(family="minicpm4"))  # context 1024, original 256
    assert llama_cpp_n_ctx(c, 128) == 257 and llama_cpp_n_ctx(c, 1024) == 1024
    assert llama_cpp_n_ctx(c.with_context(256), 128) == 128
    assert llama_cpp_n_ctx(parse_config(tiny_config()), 128) == 128


@pytest.mark.parametrize("family", ["minicpm4", "minicpm5"])
def test_inspect_names_the_family_it_recognised(tmp_path, family):
    d = make_tiny(tmp_path / "m", family=family)
    r = subprocess.run([sys.executable, "-m", "edgepack", "inspect", str(d), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["family"]["name"] == family and info["architecture"] == family
    assert info["family"]["gguf_arch"] == {"minicpm4": "minicpm", "minicpm5": "llama"}[family]
    text = subprocess.run([sys.executable, "-m", "edgepack", "inspect", str(d)], capture_output=True, text=True).stdout
    assert f"family            {family}" in text
