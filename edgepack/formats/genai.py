"""The rest of an onnxruntime-genai folder beside the graph: genai_config.json and the tokenizer files."""
import json
import shutil
from pathlib import Path

from .onnx_graph import MODEL_FILE, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE


def genai_config(cfg, threads, eos_ids, bos_id, head_size=None):
    """onnxruntime-genai's genai_config.json (the builder's fields, plus intra_op_num_threads).
    head_size: the width of the graph's cache heads (default head_dim; MLA's are padded, manifest.onnx_head_size).

    The KV cache's type is not written here: genai (0.15.2 and 0.18, tested) rejects any key it does not
    know, in every section ("Unknown value"), and allocates its cache in the type of the graph's
    past_key_values inputs, so the graph is where genai reads it; the manifest's kv_cache entry says it
    for everyone else."""
    return {
        "model": {
            "bos_token_id": bos_id,
            "context_length": cfg.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "intra_op_num_threads": threads, "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": head_size or cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": PAST_KEY, "past_value_names": PAST_VALUE},
                "outputs": {"logits": "logits", "present_key_names": PRESENT_KEY, "present_value_names": PRESENT_VALUE},
                "num_attention_heads": cfg.num_attention_heads,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_key_value_heads": cfg.num_key_value_heads,
            },
            "eos_token_id": list(eos_ids),
            "pad_token_id": eos_ids[0],
            "type": "llama",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": cfg.context_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        },
    }


def copy_tokenizer(src, out_dir, context_length):
    """Tokenizer files + tokenizer_config.json carrying the chat template (where genai reads it)."""
    from ..model.tokenizer import load_tokenizer

    src, out_dir = Path(src), Path(out_dir)
    tok = load_tokenizer(src)
    files = []
    for name in ("tokenizer.json", "tokenizer.model", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, out_dir / name)
            files.append(name)
    tcfg = {}
    if (src / "tokenizer_config.json").is_file():
        tcfg = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    tcfg["chat_template"] = tok.chat_template
    tcfg["model_max_length"] = context_length  # transformers writes 1e30 here, which some readers reject
    if tok.kind == "sentencepiece":
        tcfg.setdefault("tokenizer_class", "LlamaTokenizer")
        _write_tokenizer_json(src, out_dir / "tokenizer.json")
        files.append("tokenizer.json")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, ensure_ascii=False), encoding="utf-8")
    files.append("tokenizer_config.json")
    return tok, files


def _write_tokenizer_json(src, out):
    """onnxruntime-genai's tokenizer reads only tokenizer.json ("Invalid file: .../tokenizer.json" for a
    folder with just tokenizer.model), so convert the sentencepiece model with transformers' Llama
    converter (Metaspace, byte fallback, bos template: right for Llama-style identity-normalized models
    such as MiniCPM's). Only the tokenizer files are read, from a scratch copy: no code from the model dir.
    A model trained with sentencepiece's default nmt_nfkc normalizer (the tiny test model) still gets
    whitespace runs tokenized differently by genai; edgepack's own runtime uses sentencepiece itself.
    """
    import logging
    import tempfile

    from transformers import LlamaTokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, Path(tmp) / name)
        tok = LlamaTokenizer.from_pretrained(tmp)
        tok.backend_tokenizer.save(str(out))
