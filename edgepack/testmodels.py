"""Small stand-in checkpoints: a tiny random MiniCPM for tests, and its sentencepiece tokenizer.

The tokenizer is trained here in about a second (byte fallback on, some Chinese in the training
text, MiniCPM's chat markers as user symbols), so rare Chinese characters fall back to bytes and
every streaming path runs in CI. benchmarks/make_minicpm_2b.py reuses it for the 2B shape.
"""
import json
from pathlib import Path

from .texts import calibration_text

CHINESE = (
    "今天天气很好，我们一起去公园散步吧。人工智能正在改变我们的生活方式。"
    "手机上的大语言模型可以离线回答问题，保护用户的隐私。"
    "这是一个测试句子，用来训练分词器。北京是中国的首都，上海是最大的城市。"
)


def train_sentencepiece(out_dir, vocab_size=800):
    """Train a Llama-style sentencepiece model (bos 1, eos 2, byte fallback) into out_dir/tokenizer.model."""
    import io

    import sentencepiece as spm

    text = calibration_text()[:60000].splitlines() + [CHINESE] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in text if t.strip()]), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=0.98, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, user_defined_symbols=["<用户>", "<AI>"], add_dummy_prefix=True, num_threads=1,
        # no NFKC, no whitespace collapsing: like Llama's/MiniCPM's tokenizer.model, and reproducible by llama.cpp
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        minloglevel=2, max_sentence_length=100000)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))


def tiny_config(gqa=False, tied=True, vocab_size=800, **over):
    cfg = dict(
        architectures=["MiniCPMForCausalLM"], model_type="minicpm", hidden_size=64, intermediate_size=160,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2 if gqa else 4,
        vocab_size=vocab_size, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        scale_emb=12.0, dim_model_base=16, scale_depth=1.4, tie_word_embeddings=tied, hidden_act="silu",
        bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    cfg.update(over)
    return cfg


def make_tiny(out_dir, gqa=False, tied=True, dtype="float32", fmt="safetensors", seed=0, tokenizer=True):
    """A random MiniCPM small enough to build in well under a second."""
    import torch

    from .checkpoint import expected_shapes
    from .config import MiniCPMConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = tiny_config(gqa=gqa, tied=tied, torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    cfg = MiniCPMConfig.from_dict(raw)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in expected_shapes(cfg).items():
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * (0.5 / shape[1] ** 0.5 if "embed" not in name else 0.1)
        tensors[name] = t.to(getattr(torch, dtype))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(out / "model.safetensors"))
    elif fmt == "sharded":
        from safetensors.torch import save_file

        names, wm = list(tensors), {}
        for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
            fname = f"model-{k + 1:05d}-of-00002.safetensors"
            save_file({n: tensors[n] for n in part}, str(out / fname))
            wm.update({n: fname for n in part})
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    elif fmt == "bin":
        torch.save(tensors, out / "pytorch_model.bin")
    else:
        raise ValueError(fmt)
    if tokenizer:
        train_sentencepiece(out, raw["vocab_size"])
    return out
