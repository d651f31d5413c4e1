"""Fidelity of an artifact against the float reference on the fixed held-out text.

Perplexity of both, top-1 agreement (argmax equal) and mean KL(float ‖ quantized) per position.
The reference logits are computed layer by layer straight from the checkpoint, so a 2B model never
needs its whole float32 copy in memory (one layer at a time: ~250 MB for MiniCPM-2B).
"""
import numpy as np

from .texts import EVAL_SOURCE, eval_text

DEFAULT_TOKENS = 2048


def eval_ids(tokenizer, n_tokens=DEFAULT_TOKENS, text=None):
    """The first n_tokens of the evaluation text (bos first when the tokenizer adds one)."""
    ids = tokenizer.encode(text if text is not None else eval_text())
    return ids[:n_tokens]


def reference_logits(ckpt, ids, weights=None):
    """(T, vocab) float32 logits of the float reference, streaming one layer at a time."""
    import torch

    from .reference import Block, RMSNorm

    c = ckpt.config
    get = weights or ckpt.torch
    x = torch.tensor(ids)[None]
    pos = torch.arange(len(ids))
    with torch.no_grad():
        emb = get("model.embed_tokens.weight")
        h = emb[x] * c.scale_emb
        for i in range(c.num_hidden_layers):
            with torch.device("meta"):
                block = Block(c)
            p = f"model.layers.{i}."
            for name, _ in block.named_parameters():
                *path, leaf = name.split(".")
                mod = block
                for q in path:
                    mod = getattr(mod, q)
                setattr(mod, leaf, torch.nn.Parameter(get(p + name), requires_grad=False))
            h = block(h, pos, None)
            del block
        norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        norm.weight = torch.nn.Parameter(get("model.norm.weight"), requires_grad=False)
        h = norm(h)[0] / c.logit_scale
        head = emb if c.tie_word_embeddings else get("lm_head.weight")
        return (h @ head.T).numpy()


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def compare(ref_logits, logits, ids, chunk=256):
    """Fidelity figures of `logits` against `ref_logits` (both (T, V)) for next-token prediction of ids."""
    T = len(ids) - 1
    if T < 1:
        raise ValueError("need at least two tokens")
    nll_ref = nll = kl = 0.0
    agree = 0
    targets = np.asarray(ids[1:])
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        lp_ref = _log_softmax(ref_logits[s:e].astype(np.float64))
        lp = _log_softmax(logits[s:e].astype(np.float64))
        rows = np.arange(e - s)
        nll_ref -= lp_ref[rows, targets[s:e]].sum()
        nll -= lp[rows, targets[s:e]].sum()
        kl += (np.exp(lp_ref) * (lp_ref - lp)).sum()
        agree += int((lp_ref.argmax(-1) == lp.argmax(-1)).sum())
    float_ppl, ppl = float(np.exp(nll_ref / T)), float(np.exp(nll / T))
    return {
        "eval_text": EVAL_SOURCE.split(" (")[0], "tokens": len(ids), "float_ppl": round(float_ppl, 4),
        "ppl": round(ppl, 4), "ppl_increase_pct": round(100 * (ppl / float_ppl - 1), 3),
        "top1_agreement": round(agree / T, 4), "mean_kl": round(kl / T, 6),
    }


def backend_logits(backend, ids):
    backend.reset()
    out = backend.forward(list(ids), all_logits=True)
    backend.reset()
    return out
