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

# What transformers' LlamaConfig uses for a key config.json leaves out (tests compare with LlamaConfig()).
# transformers 5 writes RoPE as rope_parameters {rope_type, rope_theta}, older versions as rope_theta and
# rope_scaling; LlamaConfig reads rope_scaling first, then rope_parameters, then rope_theta.
DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 1,
            "eos_token_id": 2, "tie_word_embeddings": False}
CONFIG = "model_type llama"
MODELS = ("MiniCPM5-1B, MiniCPM5-2B, MiniCPM-2B llama-format (μP folded into the weights, sentencepiece) "
          "and Llama-layout checkpoints such as the demo's original SmolLM2")


def recognises(raw):
    return raw.get("model_type") == "llama"


def parse(raw, path):
    f = common_fields(raw, path, DEFAULTS)
    s = raw.get("rope_scaling") or raw.get("rope_parameters")
    kind = s.get("rope_type", s.get("type")) if isinstance(s, dict) else s
    if isinstance(s, dict) and "rope_theta" in s:  # transformers 5's place for it wins, as in LlamaConfig
        f["rope_theta"] = get(s, path, "rope_theta", float)
    if kind not in (None, "default"):
        raise NotSupported(f"{path}: rope_scaling type {kind!r} is not supported for the Llama layout (plain RoPE only)")
    for k in ("attention_bias", "mlp_bias"):
        if raw.get(k):
            raise NotSupported(f"{path}: {k} is true; edgepack's Llama layout has no biases")
    f["head_dim"] = get(raw, path, "head_dim", int, 0)
    f["tie_word_embeddings"] = get(raw, path, "tie_word_embeddings", bool, DEFAULTS["tie_word_embeddings"])
    f["use_mup"] = False
    return validate({**f, "family": NAME, "gguf_arch": "llama"}, path)
