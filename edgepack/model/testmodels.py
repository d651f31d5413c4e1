"""Small stand-in checkpoints: tiny random models in each family's exact config layout, and their tokenizers.

- family "minicpm": MiniCPM-2B's config.json (μP scalars, plain RoPE) with a sentencepiece tokenizer
  trained here in about a second (byte fallback on, some Chinese in the training text, MiniCPM's chat
  markers as user symbols), so rare Chinese characters fall back to bytes and every streaming path
  runs in CI. benchmarks/_minicpm_2b.py reuses it for the 2B shape.
- family "minicpm4": MiniCPM4's (GQA, rope_scaling longrope with short/long factors, eos list,
  use_mup, sparse_config). The context (1024) exceeds original_max_position_embeddings (256), so the
  long factors and an attention factor of sqrt(1 + ln 4 / ln 256) are exercised; exported for 256
  tokens it takes the short ones (llama.cpp rounds n_ctx up to a multiple of 256, hence these sizes).
- family "minicpm5": MiniCPM5's LlamaForCausalLM layout (head_dim 32 != hidden/heads, untied head,
  rope_theta 5e6, bos 0, eos [</s>, <|im_end|>], no μP) with a byte-level BPE tokenizer.json using
  MiniCPM5's pre-tokenizer (digits in runs of 1-3, then the split regex, ignore_merges), <think>
  and </think> as non-special added tokens, and the ChatML template in chat_template.jinja.
- family "minicpm3": MiniCPM3-4B's (multi-head latent attention with q_lora_rank/kv_lora_rank, heads of
  [nope 32 | rope 16] against the real [64 | 32], v heads 32 wide, LongRoPE with 8 factors of each kind,
  μP at MiniCPM3's 12 / 1.4 / 256, eos list) with the sentencepiece tokenizer; `over` changes any
  field, e.g. real head sizes (tests build one with qk_nope_head_dim 64, qk_rope_head_dim 32).
- MiniCPM-V ("minicpmv-4.0", "-4.0-mup", "-2.0"): make_tiny_minicpmv, below (its own docstring).
"""
import json
from pathlib import Path

from .texts import calibration_text

CHINESE = (
    "今天天气很好，我们一起去公园散步吧。人工智能正在改变我们的生活方式。"
    "手机上的大语言模型可以离线回答问题，保护用户的隐私。"
    "这是一个测试句子，用来训练分词器。北京是中国的首都，上海是最大的城市。"
)


def train_sentencepiece(out_dir, vocab_size=800, extra_symbols=()):
    """Train a Llama-style sentencepiece model (bos 1, eos 2, byte fallback) into out_dir/tokenizer.model."""
    import io

    import sentencepiece as spm

    text = calibration_text()[:60000].splitlines() + [CHINESE] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in text if t.strip()]), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=0.98, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, user_defined_symbols=["<用户>", "<AI>", *extra_symbols], add_dummy_prefix=True, num_threads=1,
        # no NFKC, no whitespace collapsing: like Llama's/MiniCPM's tokenizer.model, and reproducible by llama.cpp
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        minloglevel=2, max_sentence_length=100000)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))


# ChatML with a thinking block, in the file MiniCPM5 ships it in (chat_template.jinja)
CHATML_THINK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)
BPE_SPECIAL = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]


def train_bpe(out_dir, vocab_size=1000):
    """A byte-level BPE tokenizer.json with MiniCPM5's pre-tokenizer, its tokenizer_config.json and
    chat_template.jinja. Returns {"vocab_size", "bos", "eos"} (ids of <s>, </s>, <|im_end|>)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from .tokenizer import MINICPM5_DIGITS, MINICPM5_SPLIT

    tk = Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(MINICPM5_DIGITS), "isolated"),
        pre_tokenizers.Split(Regex(MINICPM5_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    text = calibration_text()[:60000].splitlines() + [CHINESE] * 20
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BPE_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([t for t in text if t.strip()], trainer)
    tk.add_tokens([AddedToken("<think>", special=False, normalized=False),
                   AddedToken("</think>", special=False, normalized=False)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tk.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<unk>"}, indent=2))
    (out / "chat_template.jinja").write_text(CHATML_THINK_TEMPLATE)
    return {"vocab_size": tk.get_vocab_size(), "bos": tk.token_to_id("<s>"),
            "eos": [tk.token_to_id("</s>"), tk.token_to_id("<|im_end|>")]}


FAMILIES = ("minicpm", "minicpm4", "minicpm5", "minicpm3")
TOKENIZER_VOCAB = 800  # pieces of the trained sentencepiece model (a config's vocab_size may be larger)
# shapes of family "minicpm" beside MiniCPM-2B's, as config.json overrides (make_tiny(shape=...)):
SHAPES = {
    # MiniCPM-2B-128k: dynamic NTK x4, theta 1e6, an untied head and more embedding rows than tokenizer pieces
    # (122760 vs 122753); 8192 positions so the default exported context (4096) is below them
    "128k": dict(rope_scaling={"type": "dynamic", "factor": 4.0}, rope_theta=1e6, max_position_embeddings=8192,
                 vocab_size=TOKENIZER_VOCAB + 8, tie_word_embeddings=False),
    # MiniCPM-MoE-8x2B: MiniCPM-2B with num_experts / num_experts_per_tok (mlp.gate, mlp.experts.N.w1/w2/w3)
    "moe": dict(architectures=["MiniCPMForCausalLM"], num_experts=4, num_experts_per_tok=2),
}


def tiny_config(gqa=False, tied=True, vocab_size=TOKENIZER_VOCAB, family="minicpm", shape=None, **over):
    if shape is not None:
        over = {**SHAPES[shape], **over}
    if family == "minicpm4":
        hd = 16
        cfg = dict(
            architectures=["MiniCPMForCausalLM"], model_type="minicpm", hidden_size=64, intermediate_size=160,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab_size,
            max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
            rope_scaling={"rope_type": "longrope",
                          "long_factor": [round(1.0 + 0.9 * i, 4) for i in range(hd // 2)],
                          "short_factor": [round(1.0 + 0.05 * i, 4) for i in range(hd // 2)],
                          "original_max_position_embeddings": 256},
            scale_emb=12.0, dim_model_base=16, scale_depth=1.4, use_mup=True, tie_word_embeddings=tied,
            bos_token_id=1, eos_token_id=[2, 3], kv_channels=None, torch_dtype="float32",
            sparse_config={"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64,
                           "window_size": 2048, "topk": 64, "use_nope": False, "dense_len": 8192})
    elif family == "minicpm3":
        rd = over.get("qk_rope_head_dim", 16)
        cfg = dict(
            architectures=["MiniCPM3ForCausalLM"], model_type="minicpm3", hidden_size=128, intermediate_size=160,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab_size,
            q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=rd,
            max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
            rope_scaling={"type": "longrope",
                          "long_factor": [round(1.0 + 0.9 * i, 4) for i in range(rd // 2)],
                          "short_factor": [round(1.0 + 0.05 * i, 4) for i in range(rd // 2)],
                          "original_max_position_embeddings": 256},
            scale_emb=12, dim_model_base=256, scale_depth=1.4, tie_word_embeddings=tied,
            bos_token_id=1, eos_token_id=[2, 3], torch_dtype="float32", use_cache=True)
    elif family == "minicpm5":
        cfg = dict(
            architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=160,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            vocab_size=vocab_size, max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=5000000.0,
            rope_scaling=None, hidden_act="silu", attention_bias=False, attention_dropout=0.0, mlp_bias=False,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=[1, 4], pretraining_tp=1,
            torch_dtype="float32", use_cache=True)
    else:
        cfg = None
    if cfg is not None:
        cfg.update(over)
        return cfg
    cfg = dict(
        architectures=["MiniCPMForCausalLM"], model_type="minicpm", hidden_size=64, intermediate_size=160,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2 if gqa else 4,
        vocab_size=vocab_size, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        scale_emb=12.0, dim_model_base=16, scale_depth=1.4, tie_word_embeddings=tied, hidden_act="silu",
        bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    cfg.update(over)
    return cfg


def make_tiny(out_dir, gqa=False, tied=True, dtype="float32", fmt="safetensors", seed=0, tokenizer=True, family="minicpm",
              shape=None, **over):
    """A random model of `family`'s layout (and, for "minicpm", one of SHAPES), built in about a second
    (`over`: config.json fields)."""
    import torch

    from .checkpoint import expected_shapes
    from .families import parse_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if family == "minicpm5":
        bpe = train_bpe(out) if tokenizer else {"vocab_size": 1000, "bos": 0, "eos": [1, 4]}
        raw = tiny_config(family=family, torch_dtype=dtype, vocab_size=1024, bos_token_id=bpe["bos"], eos_token_id=bpe["eos"])
        tokenizer = False
    else:
        raw = tiny_config(gqa=gqa, tied=tied, torch_dtype=dtype, family=family, shape=shape, **over)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    cfg = parse_config(raw)
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
    elif fmt == "sharded-bin":  # transformers' layout for large .bin checkpoints
        names, wm = list(tensors), {}
        for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
            fname = f"pytorch_model-{k + 1:05d}-of-00002.bin"
            torch.save({n: tensors[n] for n in part}, out / fname)
            wm.update({n: fname for n in part})
        (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    else:
        raise ValueError(fmt)
    if tokenizer:
        train_sentencepiece(out, min(raw["vocab_size"], TOKENIZER_VOCAB))
    return out


def make_llama_format(src_dir, out_dir):
    """MiniCPM-2B's "llama-format" release of a μP checkpoint: a LlamaForCausalLM with the scalars folded into
    the weights and an untied head, as OpenBMB published it: embed_tokens × scale_emb, o_proj and down_proj ×
    scale_depth/sqrt(L), lm_head = the (tied) embedding ÷ (hidden_size/dim_model_base); the sentencepiece
    tokenizer and MiniCPM's chat format travel along. Differs from edgepack.model.fold (which folds the
    head's factor into the final norm) only in where the 1/logit_scale goes."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from .checkpoint import load
    from .tokenizer import MINICPM_CHAT_TEMPLATE

    src, out = Path(src_dir), Path(out_dir)
    ck = load(src)
    c = ck.config
    if not c.tie_word_embeddings or not c.use_mup:
        raise ValueError("the llama-format release folds a tied μP MiniCPM")
    tensors = {}
    for name in ck.names:
        t = ck.torch(name)
        if name == "model.embed_tokens.weight":
            tensors["lm_head.weight"] = (t / c.logit_scale).contiguous()
            t = t * c.embedding_scale
        elif name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            t = t * c.residual_scale
        tensors[name] = t.to(torch.float32).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    raw = json.loads((src / "config.json").read_text())
    for k in ("scale_emb", "dim_model_base", "scale_depth", "use_mup"):
        raw.pop(k, None)
    raw.update(architectures=["LlamaForCausalLM"], model_type="llama", tie_word_embeddings=False, head_dim=c.head_dim,
               attention_bias=False, mlp_bias=False, rope_scaling=None)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    shutil.copyfile(src / "tokenizer.model", out / "tokenizer.model")
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**tcfg, "chat_template": MINICPM_CHAT_TEMPLATE}, indent=2,
                                                          ensure_ascii=False))
    return out


# -- MiniCPM-V ----------------------------------------------------------------------------------
IMAGE_SYMBOLS = ["<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def tiny_minicpmv_config(version="4.0", vocab_size=800):
    if version.startswith("4.0"):
        hd = 64
        cfg = dict(
            architectures=["MiniCPMV"], model_type="minicpmv", version=4.0, hidden_size=256, intermediate_size=512,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=hd, vocab_size=vocab_size,
            max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0, hidden_act="silu",
            rope_scaling={"rope_type": "longrope", "long_factor": [round(1.0 + 0.5 * i, 4) for i in range(hd // 2)],
                          "short_factor": [round(1.0 + 0.03 * i, 4) for i in range(hd // 2)],
                          "original_max_position_embeddings": 256},
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=[2, 4], query_num=64, image_size=448, patch_size=14,
            slice_mode=True, use_image_id=True, drop_vision_last_layer=False, batch_vision_input=True,
            slice_config={"max_slice_nums": 9, "model_type": "minicpmv", "patch_size": 14, "scale_resolution": 448},
            vision_config={"hidden_size": 64, "image_size": 980, "intermediate_size": 160, "model_type": "siglip_vision_model",
                           "num_attention_heads": 2, "num_hidden_layers": 2, "patch_size": 14},
            torch_dtype="float32")
        if version == "4.0-mup":
            cfg.update(use_mup=True, scale_emb=12.0, dim_model_base=64, scale_depth=1.4)
        return cfg
    return dict(
        architectures=["MiniCPMV"], model_type="minicpmv", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab_size, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", scale_emb=12.0, dim_model_base=64, scale_depth=1.4,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, vision_encoder="vit_so400m_patch14_siglip_384.webli",
        drop_vision_last_layer=True, query_num=64, image_size=448, patch_size=14, max_slice_nums=9, scale_resolution=448,
        slice_mode=True, vision_config={"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3,
                                        "num_attention_heads": 2, "patch_size": 14, "image_size": 378},
        torch_dtype="float32")


def make_tiny_minicpmv(out_dir, version="4.0", seed=0):
    """Write config.json, model.safetensors (llm.*, vpm.*, resampler.*) and a sentencepiece tokenizer."""
    import torch
    from safetensors.torch import save_file

    from .checkpoint import expected_shapes
    from .config import vision_shapes
    from .families import parse_config
    from .families.minicpmv import vision_sources
    from .image import sincos_2d

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chat = version.startswith("4.0")
    symbols = IMAGE_SYMBOLS + (["<|im_start|>", "<|im_end|>"] if chat else [])
    train_sentencepiece(out, 800, extra_symbols=symbols)
    raw = tiny_minicpmv_config(version)
    if chat:  # eos: </s> and <|im_end|>
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
        raw["eos_token_id"] = [2, sp.PieceToId("<|im_end|>")]
        tc = json.loads((out / "tokenizer_config.json").read_text())
        tc["chat_template"] = CHATML
        (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    cfg = parse_config(raw)
    v = cfg.vision
    g = torch.Generator().manual_seed(seed)
    tensors = {}

    def rnd(shape, name):
        if len(shape) == 1:
            return (1.0 + 0.1 * torch.randn(shape, generator=g)) if ("norm" in name or "ln_" in name) and name.endswith("weight") \
                else 0.02 * torch.randn(shape, generator=g)
        fan_in = shape[1] if len(shape) == 2 else shape[1] * shape[2] * shape[3]
        return torch.randn(shape, generator=g) * (0.1 if "embed" in name else 0.5 / fan_in ** 0.5)

    for name, shape in expected_shapes(cfg).items():
        tensors["llm." + name] = rnd(shape, name)
    src = vision_sources(v)
    for canon, shape in vision_shapes(v).items():
        if canon == "resampler.pos_embed":  # 2.0: the queries' fixed sin-cos table, as OpenBMB stores it
            q = int(v.query_num ** 0.5)
            t = torch.from_numpy(sincos_2d(v.embed_dim, q, q))
        elif canon == "resampler.query":
            t = 0.5 * torch.randn(shape, generator=g)
        elif canon == "vpm.embeddings.position_embedding.weight":
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            t = rnd(shape, canon)
        name, part = src[canon]
        if part is None:
            tensors[name] = t.reshape((1, *shape)) if name == "vpm.pos_embed" else t
        else:  # 2.0's fused qkv: written part by part
            full = tensors.setdefault(name, torch.zeros((3 * shape[0], *shape[1:])))
            full[part * shape[0]:(part + 1) * shape[0]] = t
    if version == "2.0":  # the dropped last block is still in MiniCPM-V-2's file; edgepack ignores it
        tensors[f"vpm.blocks.{v.num_hidden_layers}.norm1.weight"] = torch.ones(v.hidden_size)
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(out / "model.safetensors"))
    return out
