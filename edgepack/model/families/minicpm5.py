"""MiniCPM5-1B / MiniCPM5-2B: a plain Llama (model_type `llama`, LlamaForCausalLM).

No μP scalars, explicit head_dim (128, not hidden/heads: q_proj is 2048×1536 for the 1B), an untied
head, rope_theta 5e6 without scaling, bos 0 and eos [1, 130073] with add_bos false, a byte-level BPE
tokenizer.json and the chat template in chat_template.jinja (ChatML with <think>). llama.cpp runs it
as arch `llama` (pre-tokenizer `minicpm5`, chosen from tokenizer.json by edgepack.formats.gguf_writer).
Any dense Llama checkpoint of this shape parses here, e.g. the demo model in its original form, and
MiniCPM-2B's "llama-format" release (μP folded into the weights, untied, vocab 122753, 2048 positions,
MiniCPM-2B's sentencepiece tokenizer.model and <用户>/<AI> chat format: edgepack.model.tokenizer).
"""
from ..config import common_fields, get, validate
from ...errors import NotSupported

NAME = "minicpm5"
CONFIG = "model_type llama"
MODELS = ("MiniCPM5-1B, MiniCPM5-2B, MiniCPM-2B llama-format (μP folded into the weights, sentencepiece) "
          "and Llama-layout checkpoints such as the demo's original SmolLM2")


def recognises(raw):
    return raw.get("model_type") == "llama"


def parse(raw, path):
    f = common_fields(raw, path, default_bos=1, default_eos=2)
    s = raw.get("rope_scaling")
    kind = s.get("rope_type", s.get("type")) if isinstance(s, dict) else s
    if kind not in (None, "default"):
        raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported for the Llama layout (plain RoPE only)")
    for k in ("attention_bias", "mlp_bias"):
        if raw.get(k):
            raise NotSupported(f"{path}: {k} is true; edgepack's Llama layout has no biases")
    f["head_dim"] = get(raw, path, "head_dim", int, 0)
    f["tie_word_embeddings"] = get(raw, path, "tie_word_embeddings", bool, False)  # LlamaConfig's default
    f["use_mup"] = False
    return validate({**f, "family": NAME, "gguf_arch": "llama"}, path)
