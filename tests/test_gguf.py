"""GGUF export: llama.cpp (through llama-cpp-python) runs edgepack's file unmodified and agrees
with the float reference (f32), edgepack's tokenizer (tokenization) and the fake-quant reference
(Q4_0, teacher-forced: the same on every CPU)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

from edgepack.model.checkpoint import load
from edgepack.errors import BadInput
from edgepack.formats.gguf_writer import permute_qk, write_gguf
from edgepack.model.reference import MiniCPM, greedy
from edgepack.runtime.gguf_backend import GGUFBackend, llama_tokenize
from edgepack.model.testmodels import CHINESE, make_tiny
from edgepack.model.tokenizer import load_tokenizer

MIXED = ("Hello world! In 2024 the model ran offline,  with two spaces.\n"
         + CHINESE + " Mixed 中文 and English: 手机 runs MiniCPM. Rare: 𠀀 龘.")
PROMPT = "The quick brown fox jumps over the lazy dog. 今天天气很好。"


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=[(False, True), (True, True), (False, False), (True, False)],
                ids=["mha-tied", "gqa-tied", "mha-untied", "gqa-untied"])
def tiny_f32(request, tmp_path_factory):
    gqa, tied = request.param
    d = make_tiny(tmp_path_factory.mktemp("tiny"), gqa=gqa, tied=tied)
    out = tmp_path_factory.mktemp("gguf")
    info = write_gguf(load(d), out, gguf_type="f32")
    return d, out / info["file"], info


@pytest.fixture(scope="module")
def demo():
    return load("demo")


@pytest.fixture(scope="module")
def demo_q4_0(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-q4_0")
    info = write_gguf(demo, out, gguf_type="q4_0")
    return out / info["file"], info


# -- f32 conformance ------------------------------------------------------------------------------
def test_f32_logits_match_reference(tiny_f32):
    d, path, _ = tiny_f32
    ckpt = load(d)
    ids = load_tokenizer(d).encode(PROMPT)
    ref = MiniCPM.from_checkpoint(ckpt)(torch.tensor([ids]))[0].numpy()
    with GGUFBackend(path) as be:
        got = be.forward(ids, all_logits=True)
    err = rel_err(got, ref)
    print(f"{path.parent.name}: rel err {err:.2e}, max abs {np.abs(got - ref).max():.2e}")
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert err < 1e-3


def test_incremental_and_chunked_prefill_match_reference(tiny_f32):
    """Cache continuation (prefix, then one token at a time) and a prefill longer than one
    llama_decode batch (chunked) give the reference logits; reset() starts over."""
    d, path, _ = tiny_f32
    ids = load_tokenizer(d).encode(CHINESE * 12)[:700]
    ref = MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()
    with GGUFBackend(path, n_ctx=1024) as be:
        full = be.forward(ids, all_logits=True)
        assert be.n_past == len(ids)
        be.reset()
        assert be.n_past == 0
        be.forward(ids[:5])
        steps = np.stack([be.forward([t]) for t in ids[5:12]])
    assert rel_err(full, ref) < 1e-3
    assert rel_err(steps, ref[5:12]) < 1e-3


def test_file_layout(tiny_f32):
    d, path, info = tiny_f32
    cfg = load(d).config
    r = gguf.GGUFReader(path)
    big = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    f = {k: v.contents() for k, v in r.fields.items() if k not in big}
    names = {t.name for t in r.tensors}
    assert f["general.architecture"] == "minicpm"
    assert f["minicpm.embedding_scale"] == pytest.approx(cfg.scale_emb)
    assert f["minicpm.residual_scale"] == pytest.approx(cfg.residual_scale)
    assert f["minicpm.logit_scale"] == pytest.approx(cfg.logit_scale)
    assert f["minicpm.attention.head_count_kv"] == cfg.num_key_value_heads
    assert f["minicpm.rope.dimension_count"] == cfg.head_dim
    assert f["minicpm.context_length"] == cfg.max_position_embeddings
    assert ("output.weight" in names) == (not cfg.tie_word_embeddings)
    assert {"token_embd.weight", "output_norm.weight", "blk.1.ffn_down.weight", "blk.0.attn_q.weight"} <= names
    assert f["tokenizer.ggml.model"] == "llama"
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert types.count(gguf.TokenType.BYTE) == 256
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert types[tokens.index("<用户>")] == gguf.TokenType.USER_DEFINED
    assert f["tokenizer.ggml.add_bos_token"] is True
    assert "<用户>" in f["tokenizer.chat_template"]
    assert info["quantization"]["scheme"] == "F32" and info["file"] == path.name


def test_qk_permutation_is_llama_cpp_pair_order():
    """Row 2i / 2i+1 of a permuted head are HF's row i / i + head_dim/2 (pairs llama.cpp rotates)."""
    n_head, hd = 3, 8
    w = np.arange(n_head * hd * 2, dtype=np.float32).reshape(n_head * hd, 2)
    p = permute_qk(w, n_head)
    for h in range(n_head):
        for i in range(hd // 2):
            assert (p[h * hd + 2 * i] == w[h * hd + i]).all()
            assert (p[h * hd + 2 * i + 1] == w[h * hd + hd // 2 + i]).all()


# -- tokenization ---------------------------------------------------------------------------------
def test_tokenization_matches_sentencepiece(tiny_f32):
    d, path, _ = tiny_f32
    ours = load_tokenizer(d).encode(MIXED)
    assert ours[0] == 1  # bos, as llama.cpp adds it
    assert llama_tokenize(path, MIXED) == ours


def test_tokenization_matches_bpe(demo, demo_q4_0):
    tok = load_tokenizer(demo.path)
    ours = tok.encode(MIXED)
    assert llama_tokenize(demo_q4_0[0], MIXED) == ours
    chat = tok.render_chat([{"role": "user", "content": "你好, what is 2+2?"}])
    assert llama_tokenize(demo_q4_0[0], chat, parse_special=True) == tok.encode_chat(
        [{"role": "user", "content": "你好, what is 2+2?"}])


# -- Q4_0 -----------------------------------------------------------------------------------------
def test_q4_0_blocks_dequantize_within_bound(demo, demo_q4_0):
    """Each weight is within half a quantization step of its Q4_0 value (one step at the clipped
    end of a block's range), reading the blocks back from the written file."""
    r = gguf.GGUFReader(demo_q4_0[0])
    by_name = {t.name: t for t in r.tensors}
    cfg = demo.config
    for name, hf, permute in [("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", cfg.num_key_value_heads),
                              ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", None),
                              ("token_embd.weight", "model.embed_tokens.weight", None)]:
        t = by_name[name]
        assert t.tensor_type == T.Q4_0
        w = demo.numpy(hf)
        w = permute_qk(w, permute) if permute else w
        raw = np.asarray(t.data).reshape(-1, 18)
        d = raw[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1) signed scale
        w = w.reshape(-1, 32)
        err = np.abs(quants.dequantize(np.asarray(t.data), T.Q4_0).reshape(-1, 32) - w)
        slack = 1e-3 * np.abs(w).max(-1, keepdims=True)  # the scale is stored in fp16
        with np.errstate(divide="ignore", invalid="ignore"):
            clipped = np.broadcast_to(np.nan_to_num(w / d) > 7.5 - 1e-3, w.shape)  # level 16 does not exist
        bound = np.broadcast_to(np.abs(d) / 2 + slack, w.shape)
        assert (err[~clipped] <= bound[~clipped]).all(), name
        assert (err[clipped] <= 2 * bound[clipped]).all(), name
    for name in ("blk.0.attn_norm.weight", "output_norm.weight"):
        assert by_name[name].tensor_type == T.F32


@pytest.fixture(scope="module")
def fake_q4_0_reference(demo):
    """The float reference on Q4_0-dequantized weights (norms stay f32, as in the file)."""
    def weights(name):
        w = demo.torch(name)
        if w.ndim == 1:
            return w
        # Q4_0 blocks run along rows, so the q/k row permutation commutes with quantization
        return torch.from_numpy(quants.dequantize(quants.quantize(w.numpy(), T.Q4_0), T.Q4_0))
    return MiniCPM.from_checkpoint(demo, weights=weights)


# llama.cpp rounds activations to Q8_0 inside its Q4_0 matmuls and picks its kernels by CPU (AVX2,
# AVX-512, AMX), so its logits sit ~2-4% (relative) from the fake-quant reference and free-running
# greedy text forks at the first near-tie, at a different token on another CPU (an AMD EPYC forked at
# token 11 where this Intel Xeon did not). What holds on every CPU is checked instead, teacher-forced
# on fixed sequences: the logit error, the KL, and the argmax wherever the reference's top-1 beats its
# top-2 by Q4_0_MARGIN logits. Measured here (Xeon, demo, 379 positions): the top-1/top-2 gap moved by
# 0.09 (median) and 1.11 at most; rel. error 0.018-0.035, mean KL 0.004-0.006, top-1 92-96%.
Q4_0_MARGIN = 2.0
Q4_0_BOUNDS = {"rel_err": 0.05, "mean_kl": 0.012, "top1": 0.85, "clear_share": 0.2}
QUESTIONS = [("What is the capital of France?", "Paris"), ("Tell me a fun fact about cats.", "cats")]


@pytest.fixture(scope="module")
def q4_0_sequences(demo, fake_q4_0_reference):
    """Two chat prompts with the fake-quant reference's own greedy answers, and 256 eval-text tokens,
    each with the reference's logits."""
    from edgepack.fidelity import eval_ids

    tok = load_tokenizer(demo.path)
    seqs = []
    for q, _ in QUESTIONS:
        ids = tok.encode_chat([{"role": "user", "content": q}])
        seqs.append(ids + greedy(fake_q4_0_reference, ids, 24, eos_ids=tok.eos_ids))
    seqs.append(eval_ids(tok, 256))
    return [(s, fake_q4_0_reference(torch.tensor([s]))[0].numpy()) for s in seqs]


def q4_0_violations(path, sequences, shift=0):
    """The Q4_0 conformance bounds the file at `path` breaks (empty: it conforms). shift moves
    llama.cpp's logits by that many positions (a deliberately misaligned comparison)."""
    from edgepack.fidelity import agreement

    stats = []
    with GGUFBackend(path, threads=2) as be:
        for ids, ref in sequences:
            be.reset()
            got = be.forward(ids, all_logits=True)
            stats.append(agreement(ref, np.roll(got, -shift, 0) if shift else got, Q4_0_MARGIN))
    n = sum(s["positions"] for s in stats)
    clear = sum(s["clear"] for s in stats)
    worst = {"rel_err": max(s["rel_err"] for s in stats), "mean_kl": max(s["mean_kl"] for s in stats),
             "top1": sum(s["top1"] * s["positions"] for s in stats) / n, "clear_share": clear / n,
             "clear_disagreements": sum(s["clear_disagreements"] for s in stats)}
    print(path.name, {k: round(v, 4) for k, v in worst.items()})
    bad = [f"{k} {worst[k]:.4f} > {b}" for k, b in Q4_0_BOUNDS.items() if k in ("rel_err", "mean_kl") and worst[k] > b]
    bad += [f"{k} {worst[k]:.4f} < {b}" for k, b in Q4_0_BOUNDS.items() if k in ("top1", "clear_share") and worst[k] < b]
    if worst["clear_disagreements"]:
        bad.append(f"argmax differs at {worst['clear_disagreements']} of {clear} positions with margin >= {Q4_0_MARGIN}")
    return bad


def test_q4_0_teacher_forced_matches_fake_quant_reference(demo, demo_q4_0, q4_0_sequences):
    assert q4_0_violations(demo_q4_0[0], q4_0_sequences) == []
    tok = load_tokenizer(demo.path)
    with GGUFBackend(demo_q4_0[0], threads=2) as be:  # and llama.cpp's own answers are coherent English
        for q, expect in QUESTIONS:
            text = tok.decode(be.generate_greedy(tok.encode_chat([{"role": "user", "content": q}]), 24))
            assert expect in text and text.isascii() and len(text.split()) >= 5, text


def _corrupt(src, dst, edit):
    import shutil

    shutil.copyfile(src, dst)
    r = gguf.GGUFReader(dst, "r+")
    edit(r)
    del r  # flushes the memory map
    return dst


def _permute_q_again(r):
    t = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    rows = np.asarray(t.data).reshape(int(t.shape[-1]), -1)  # Q4_0 block bytes, one row per output
    rows[:] = permute_qk(rows.copy(), int(r.fields["minicpm.attention.head_count"].contents()))


def _residual_scale_times(f):
    def edit(r):
        field = r.fields["minicpm.residual_scale"]
        field.parts[field.data[0]][0] *= f
    return edit


@pytest.mark.parametrize("bug", ["q-permutation-of-one-layer", "residual-scale-x1.2", "logits-off-by-one"])
def test_q4_0_conformance_check_fails_on_a_broken_file(demo_q4_0, q4_0_sequences, tmp_path, bug):
    """The teacher-forced check above is not vacuous: each of these real bugs breaks it."""
    path = demo_q4_0[0]
    if bug == "q-permutation-of-one-layer":
        path = _corrupt(path, tmp_path / "perm.gguf", _permute_q_again)
    elif bug == "residual-scale-x1.2":
        path = _corrupt(path, tmp_path / "scale.gguf", _residual_scale_times(1.2))
    assert q4_0_violations(path, q4_0_sequences, shift=1 if bug == "logits-off-by-one" else 0)


def test_q4_0_manifest_fields(demo_q4_0):
    q = demo_q4_0[1]["quantization"]
    assert demo_q4_0[1]["format"] == "gguf" and demo_q4_0[1]["file"] == "model-Q4_0.gguf"
    assert (q["scheme"], q["bits"], q["block_size"]) == ("Q4_0", 4, 32)
    assert 4.5 <= q["bits_per_weight"] < 4.6  # 18 bytes / 32 weights, plus the f32 norms


# -- Q4_K_M, options, runtime hygiene -------------------------------------------------------------
def test_q4_k_m_uses_llama_cpp_quantizer(tmp_path):
    d = make_tiny(tmp_path / "m")
    out = tmp_path / "o"
    out.mkdir()
    info = write_gguf(load(d), out, gguf_type="q4_k_m-llamacpp")
    assert [p.name for p in out.iterdir()] == ["model-Q4_K_M-llamacpp.gguf"]  # the temporary f16 file is gone
    assert info["quantization"]["scheme"] == "Q4_K_M-llamacpp"
    r = gguf.GGUFReader(out / info["file"])
    assert r.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    ids = load_tokenizer(d).encode(PROMPT)
    ref = MiniCPM.from_checkpoint(load(d))(torch.tensor([ids]))[0].numpy()
    with GGUFBackend(out / info["file"]) as be:
        assert rel_err(be.forward(ids, all_logits=True), ref) < 0.2  # 4-5 bit weights, not noise


def test_bad_type_and_missing_file(tmp_path, tiny_f32):
    with pytest.raises(BadInput, match="unknown GGUF type"):
        write_gguf(load(tiny_f32[0]), tmp_path, gguf_type="q3")
    with pytest.raises(BadInput, match="not found"):
        GGUFBackend(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BadInput, match="unsupported GGUF version 0"):
        GGUFBackend(bad)


def test_close_is_final_and_idempotent(tiny_f32):
    be = GGUFBackend(tiny_f32[1])
    be.forward([1, 5, 7])
    be.close()
    be.close()
    with pytest.raises(Exception, match="after close"):
        be.forward([1])


_LOAD_CLOSE = """
import json, sys, psutil
from edgepack.runtime.gguf_backend import GGUFBackend
proc, rss = psutil.Process(), {"loaded": [], "closed": []}
for _ in range(3):
    be = GGUFBackend(sys.argv[1], threads=1, n_ctx=1024)
    be.forward(list(range(100, 300)), all_logits=True)
    rss["loaded"].append(proc.memory_info().rss)
    be.close()
    rss["closed"].append(proc.memory_info().rss)
print(json.dumps(rss))
"""


def test_close_returns_memory(demo_q4_0):
    """The bug this project started from: an unloaded model's memory must come back. Measured in a fresh
    process with glibc's mmap threshold pinned: a long pytest process raises that threshold (up to 32 MiB)
    and keeps freed chunks below it in its heap for reuse, which RSS cannot tell from a leak."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    run = subprocess.run([sys.executable, "-c", _LOAD_CLOSE, str(demo_q4_0[0])], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rss = json.loads(run.stdout.splitlines()[-1])
    loaded, closed = rss["loaded"], rss["closed"]
    assert min(loaded) - max(closed) > demo_q4_0[0].stat().st_size  # weights, cache and logits are gone
    assert closed[-1] - closed[0] < 16 << 20  # and nothing accumulates across loads


def test_backend_import_pulls_no_torch():
    code = "import sys, edgepack.runtime.gguf_backend; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
