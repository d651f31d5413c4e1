"""MiniCPM-2B-128k: rope_scaling dynamic (NTK x4), rope_theta 1e6, an untied head, more embedding rows than
tokenizer pieces. Dynamic NTK is plain RoPE up to max_position_embeddings, so that is what is exported (no
further), with a phone-sized default context; both formats against the reference, int4 in the engines.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.errors import ConfigError
from edgepack.export import export
from edgepack.formats.manifest import kv_cache_bytes
from edgepack.model import rope
from edgepack.model.checkpoint import load
from edgepack.model.config import DecoderConfig
from edgepack.model.families import parse_config
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import CHINESE, make_tiny, tiny_config
from edgepack.model.tokenizer import load_tokenizer
from edgepack.runtime.gguf_backend import GGUFBackend
from edgepack.runtime.onnx_backend import OnnxBackend

# MiniCPM-2B-128k's config.json fields that matter here (the rest as MiniCPM-2B)
REAL_128K = dict(hidden_size=2304, num_hidden_layers=40, num_attention_heads=36, num_key_value_heads=36,
                 intermediate_size=5760, vocab_size=122760, max_position_embeddings=65536, rope_theta=1e6,
                 rope_scaling={"type": "dynamic", "factor": 4.0}, tie_word_embeddings=False, scale_emb=12,
                 dim_model_base=256, scale_depth=1.4)


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_the_128k_config_is_plain_rope_exported_at_a_phone_sized_context():
    c = parse_config(tiny_config(**REAL_128K))
    assert (c.rope.kind, c.rope.factor, c.rope.theta) == ("dynamic", 4.0, 1e6)
    assert c.context_length == 4096 and c.max_position_embeddings == 65536 and not c.tie_word_embeddings
    # why 4096: the float16 KV cache (the int4 default) at 4096 is MiniCPM-2B's 1.41 GiB; 65536 would be 22.5 GiB
    assert kv_cache_bytes(c.to_dict(), 4096, 2) / 2**30 == pytest.approx(1.406, abs=1e-3)
    assert kv_cache_bytes(c.to_dict(), 65536, 2) / 2**30 == pytest.approx(22.5, abs=1e-3)
    plain = parse_config(tiny_config(**{**REAL_128K, "rope_scaling": None}))
    for a, b in zip(rope.tables(c.with_context(8192)), rope.tables(plain.with_context(8192))):
        np.testing.assert_array_equal(a, b)  # below max_position_embeddings dynamic NTK is plain RoPE
    with pytest.raises(ValueError, match="plain only up to 65536"):
        rope.tables(c, 65537)
    assert DecoderConfig.from_manifest(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize("scaling,msg", [
    ({"type": "dynamic"}, "field 'rope_scaling.factor' is missing"),
    ({"type": "dynamic", "factor": -1}, "field 'rope_scaling.factor' must be positive"),
    ("dynamic", "field 'rope_scaling' must be an object"),
])
def test_a_bad_dynamic_scaling_is_one_config_error(scaling, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(tiny_config(rope_scaling=scaling))


def test_transformers_dynamic_rope_is_plain_below_the_trained_context(tmp_path):
    """An implementation edgepack did not write: transformers' Llama with rope_scaling dynamic, on the
    128k-shaped model folded into Llama form, gives the reference's logits below max_position_embeddings."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from edgepack.model.fold import folded, llama_config

    d = make_tiny(tmp_path / "m", shape="128k")
    ck = load(d)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    cfg = {**llama_config(ck.config), "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    save_file({n: t.contiguous() for n, t in folded(ck)}, str(hf_dir / "model.safetensors"))
    ids = load_tokenizer(d).encode(("The quick brown fox. " + CHINESE) * 3)[:96]
    hf = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    got = MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()
    assert np.abs(got - want).max() <= 1e-4 * (want.max() - want.min())


@pytest.fixture(scope="module")
def fp32_128k(tmp_path_factory):
    d = make_tiny(tmp_path_factory.mktemp("src"), shape="128k")
    out = export(model=d, out=tmp_path_factory.mktemp("a") / "fp32", dtype="fp32", fidelity_tokens=0, threads=1)
    return d, out


def _ids(d, n=80):
    return load_tokenizer(d).encode(("The quick brown fox jumps over the lazy dog. " + CHINESE) * 3)[:n]


def test_fp32_onnx_and_f32_gguf_equal_the_reference_prefill_and_decode(fp32_128k):
    d, out = fp32_128k
    ids = _ids(d)
    ref = MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()
    bound = 1e-3 * (ref.max() - ref.min())
    gguf_file = next((out / "gguf").glob("*.gguf"))
    for B, path in ((OnnxBackend, out / "onnx"), (GGUFBackend, gguf_file)):
        with B(path, threads=1, n_ctx=256) as b:
            full = b.forward(ids, all_logits=True)
            b.reset()
            steps = np.concatenate([b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]])
        assert full.shape == (len(ids), 808)  # every embedding row, past the tokenizer's 800 pieces
        err = max(np.abs(full - ref).max(), np.abs(steps - ref).max())
        print(f"{B.__name__}: max |error| {err / (ref.max() - ref.min()):.1e} of the logit range")
        assert err <= bound


def test_the_manifest_records_the_scaling_and_inspect_says_what_happens_beyond(fp32_128k):
    import gguf

    d, out = fp32_128k
    m = json.loads((out / "edgepack.json").read_text())
    r = m["model"]["config"]["rope"]
    assert (r["kind"], r["factor"], r["theta"]) == ("dynamic", 4.0, 1e6)
    assert m["model"]["config"]["context_length"] == 4096
    assert json.loads((out / "onnx" / "genai_config.json").read_text())["model"]["context_length"] == 4096
    f = {k: v.contents() for k, v in gguf.GGUFReader(next((out / "gguf").glob("*.gguf"))).fields.items()
         if k.startswith("minicpm.")}
    assert f["minicpm.rope.freq_base"] == 1e6 and f["minicpm.context_length"] == 8192
    assert not any("scaling" in k for k in f)  # llama.cpp runs it as plain RoPE, as the export does
    for target in (out, d):
        text = _run("inspect", target).stdout
        assert "dynamic NTK x4: past 8192 tokens the original raises theta" in text, text
    assert "exported by default: 4096 tokens" in _run("inspect", d).stdout
    info = json.loads(_run("inspect", d, "--json").stdout)
    assert info["default_context"] == 4096 and info["kv_cache_by_context"][-1]["context"] == 8192


def test_a_context_beyond_max_position_embeddings_is_one_error_line(fp32_128k, tmp_path):
    d, _ = fp32_128k
    r = _run("export", "--model", d, "--out", tmp_path / "x", "--dtype", "fp32", "--context", 8193, "--fidelity-tokens", 0)
    assert r.returncode == 2 and not (tmp_path / "x").exists()
    assert r.stderr.strip().splitlines() == [
        "edgepack: error: --context 8193 must lie between 16 and the model's 8192 tokens (its dynamic NTK RoPE "
        "scaling beyond that is not exported)"]


@pytest.fixture(scope="module")
def int4_128k(tmp_path_factory):
    d = make_tiny(tmp_path_factory.mktemp("src"), shape="128k")
    out = tmp_path_factory.mktemp("int4") / "art"
    r = _run("export", "--int4", "--model", d, "--out", out, "--threads", "2", "--fidelity-tokens", "256", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_int4_loads_unmodified_in_onnxruntime_genai_and_llama_cpp(int4_128k):
    import onnxruntime_genai as og

    art = int4_128k
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
    assert logits.shape == (808,) and np.isfinite(logits).all()
    assert all(np.isfinite(a["fidelity"]["ppl"]) for a in m["artifacts"])


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_edgepack_run_streams_from_both_backends(int4_128k, backend):
    r = _run("run", int4_128k, "--prompt", "Hello 你好", "--max-tokens", "8", "--backend", backend, "--threads", "1",
             "--json", "--no-speculate", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["tokens"] >= 1 and out["backend"] == backend
