"""MiniCPM-2B "llama-format": a tiny μP MiniCPM folded into LlamaForCausalLM the way OpenBMB released it
(embeddings x scale_emb, o/down x scale_depth/sqrt(L), lm_head = embedding / (hidden/dim_model_base)), with
MiniCPM-2B's sentencepiece tokenizer and <用户>/<AI> chat format, exported through the Llama layout.

Which tokenization of "<用户>Hello" MiniCPM-2B was trained with: its fine-tuning code (OpenBMB/MiniCPM
finetune/finetune.py) encodes the marker and each message's content separately, so the content keeps its
dummy-prefix "▁" and the marker is one piece: [<用户>, ▁Hello, ...]. llama.cpp's SPM tokenizer (space prefix
after a special piece, the GGUF marks user-defined pieces USER_DEFINED, as convert_hf_to_gguf does) and
onnxruntime-genai on the artifact's tokenizer.json give the same. sentencepiece on the whole string gives
[▁, <用户>, Hello] and transformers 5's LlamaTokenizer [<用户>, Hello]: edgepack encodes as the training did.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgepack.export import export
from edgepack.model.checkpoint import load
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import CHINESE, make_llama_format, make_tiny
from edgepack.model.tokenizer import load_tokenizer
from edgepack.runtime.gguf_backend import GGUFBackend, llama_tokenize
from edgepack.runtime.onnx_backend import OnnxBackend

TEXT = ("The quick brown fox jumps over the lazy dog. " + CHINESE) * 3
MARKED = ["<用户>Hello world<AI>", "<用户>你好，今天天气很好<AI>我们去散步", "<AI> two  spaces", "plain 文本<用户>x"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    mu = make_tiny(tmp_path_factory.mktemp("mu"))  # MiniCPM-2B's layout: tied, μP
    return mu, make_llama_format(mu, tmp_path_factory.mktemp("llama"))


def _logits(d, ids):
    return MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()


def test_llama_format_gives_the_mup_originals_logits(pair):
    from transformers import LlamaForCausalLM

    mu, lf = pair
    assert load(lf).config.family == "minicpm5" and not load(lf).config.use_mup
    ids = load_tokenizer(mu).encode(TEXT)[:96]
    want = _logits(mu, ids)
    rng = want.max() - want.min()
    got = _logits(lf, ids)
    hf = LlamaForCausalLM.from_pretrained(str(lf), dtype=torch.float32).eval()  # not edgepack's code
    with torch.no_grad():
        hf_logits = hf(torch.tensor([ids])).logits[0].numpy()
    print(f"llama-format vs μP: {np.abs(got - want).max() / rng:.1e} (edgepack), {np.abs(hf_logits - want).max() / rng:.1e} (transformers)")
    assert np.abs(got - want).max() <= 1e-4 * rng
    assert np.abs(hf_logits - want).max() <= 1e-4 * rng


@pytest.fixture(scope="module")
def fp32_lf(pair, tmp_path_factory):
    _, lf = pair
    return lf, export(model=lf, out=tmp_path_factory.mktemp("a") / "fp32", dtype="fp32", fidelity_tokens=0, threads=1)


def test_fp32_onnx_and_f32_gguf_equal_the_reference_prefill_and_decode(fp32_lf):
    lf, out = fp32_lf
    ids = load_tokenizer(lf).encode(TEXT)[:80]
    ref = _logits(lf, ids)
    bound = 1e-3 * (ref.max() - ref.min())
    for B, path in ((OnnxBackend, out / "onnx"), (GGUFBackend, next((out / "gguf").glob("*.gguf")))):
        with B(path, threads=1, n_ctx=256) as b:
            full = b.forward(ids, all_logits=True)
            b.reset()
            steps = np.concatenate([b.forward(ids[:20], all_logits=True)] + [b.forward([t])[None] for t in ids[20:]])
        err = max(np.abs(full - ref).max(), np.abs(steps - ref).max())
        print(f"{B.__name__}: max |error| {err / (ref.max() - ref.min()):.1e} of the logit range")
        assert err <= bound


def test_gguf_is_a_llama_with_the_sentencepiece_vocab_and_minicpm_chat(fp32_lf):
    import gguf

    _, out = fp32_lf
    r = gguf.GGUFReader(next((out / "gguf").glob("*.gguf")))
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.t") and k != "tokenizer.ggml.scores"}
    assert f["general.architecture"] == "llama" and f["tokenizer.ggml.model"] == "llama"
    assert not any(k.startswith("llama.embedding_scale") for k in f)
    assert "output.weight" in {t.name for t in r.tensors}  # untied head
    assert "<用户>" in f["tokenizer.chat_template"] and "<AI>" in f["tokenizer.chat_template"]
    m = json.loads((out / "edgepack.json").read_text())
    assert m["tokenizer"]["kind"] == "sentencepiece" and "<用户>" in m["tokenizer"]["chat_template"]


def test_marker_tokenization_is_the_trained_one_in_edgepack_and_both_artifacts(fp32_lf):
    import onnxruntime_genai as og
    import sentencepiece as spm

    lf, out = fp32_lf
    tok = load_tokenizer(out / "tokenizer")
    sp = spm.SentencePieceProcessor(model_file=str(lf / "tokenizer.model"))
    user, ai = sp.PieceToId("<用户>"), sp.PieceToId("<AI>")
    # the trained form: marker, then the content encoded on its own (dummy prefix kept)
    assert tok.encode("<用户>Hello world<AI>", add_bos=False) == [user] + sp.EncodeAsIds("Hello world") + [ai]
    assert sp.EncodeAsIds("<用户>Hello world<AI>") != [user] + sp.EncodeAsIds("Hello world") + [ai]  # whole-string SP
    gguf_file = next((out / "gguf").glob("*.gguf"))
    genai = og.Tokenizer(og.Model(str(out / "onnx")))
    chat = tok.render_chat([{"role": "user", "content": "你好, what is the fox?"}])
    for text in MARKED + [chat]:
        ours = tok.encode(text)
        assert llama_tokenize(gguf_file, text, parse_special=True) == ours, text
        assert [tok.bos_id] + [int(i) for i in genai.encode(text)] == ours, text  # genai never adds bos
    # (genai's tokenizer.json, converted from the sentencepiece BPE, merges some pieces differently,
    # e.g. "2+2": [▁2, +, 2] in sentencepiece and llama.cpp, [▁, 2, +, 2] in genai; that is not the markers)


@pytest.fixture(scope="module")
def int4_lf(pair, tmp_path_factory):
    _, lf = pair
    out = tmp_path_factory.mktemp("int4") / "art"
    r = subprocess.run([sys.executable, "-m", "edgepack", "export", "--int4", "--model", str(lf), "--out", str(out),
                        "--threads", "2", "--fidelity-tokens", "256"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_int4_loads_unmodified_in_onnxruntime_genai_and_llama_cpp(int4_lf):
    import onnxruntime_genai as og

    art = int4_lf
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
def test_edgepack_run_streams_from_both_backends(int4_lf, backend):
    r = subprocess.run([sys.executable, "-m", "edgepack", "run", str(int4_lf), "--prompt", "Hello 你好", "--max-tokens", "8",
                        "--backend", backend, "--threads", "1", "--json", "--no-speculate"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["tokens"] >= 1
