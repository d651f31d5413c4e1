"""Fidelity of an artifact against the float reference on the fixed held-out text.

Perplexity of both, top-1 agreement (argmax equal) and mean KL(float ‖ quantized) per position.
The reference logits are computed layer by layer straight from the checkpoint, so a 2B model never
needs its whole float32 copy in memory (one layer at a time: ~250 MB for MiniCPM-2B).

The evaluation runs in windows of at most the model's context (and at most MAX_WINDOW tokens), the
way llama.cpp's perplexity tool chunks its text: each window starts over with an empty cache (and
bos, when the tokenizer adds one) and scores every next-token prediction inside it. A model whose
context is shorter than the evaluation gets more windows, not an error; the window size is part of
the report, because perplexity over short windows is higher (less context per prediction).
"""
import numpy as np

from .errors import BadInput
from .model.texts import EVAL_SOURCE, eval_text

DEFAULT_TOKENS = 2048
MAX_WINDOW = 2048  # a window's logits are (window, vocab) float32: 1 GB for MiniCPM-2B at 2048


def eval_ids(tokenizer, n_tokens=DEFAULT_TOKENS, text=None):
    """The first n_tokens of the evaluation text as one sequence (bos first when the tokenizer adds one)."""
    ids = tokenizer.encode(text if text is not None else eval_text())
    if n_tokens > len(ids):
        raise BadInput(f"{n_tokens} evaluation tokens asked for, but the evaluation text has {len(ids)}")
    return ids[:n_tokens]


def eval_windows(tokenizer, n_tokens=DEFAULT_TOKENS, context=None, text=None):
    """n_tokens of the evaluation text as consecutive windows of at most min(context, MAX_WINDOW)
    tokens, each starting with bos when the tokenizer adds one. Window lengths differ by one at most
    (2049 tokens in windows of 2048 are 1025 + 1024, so no window is too short to score)."""
    window = min(int(context or MAX_WINDOW), MAX_WINDOW)
    if n_tokens < 2 or window < 2:
        raise BadInput(f"the fidelity evaluation needs at least 2 tokens (got {n_tokens}, window {window})")
    head = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    body = tokenizer.encode(text if text is not None else eval_text(), add_bos=False)
    n_windows = -(-n_tokens // window)
    sizes = [n_tokens // n_windows + (i < n_tokens % n_windows) for i in range(n_windows)]
    if sum(sizes) - n_windows * len(head) > len(body):
        raise BadInput(f"--fidelity-tokens {n_tokens} is more than the evaluation text holds: it has "
                       f"{len(body)} tokens, and each of {n_windows} windows of {window} adds bos; ask for fewer")
    out, lo = [], 0
    for n in sizes:
        out.append(head + body[lo:lo + n - len(head)])
        lo += n - len(head)
    return out


def reference_logits(ckpt, ids, weights=None):
    """Float reference logits streaming one layer at a time: ids (T,) -> (T, vocab) float32, or a
    list of windows -> a list of (len, vocab) arrays (windows of one length share one pass)."""
    if ids and isinstance(ids[0], (list, tuple)):
        out = [None] * len(ids)
        for n in sorted({len(w) for w in ids}):
            idx = [i for i, w in enumerate(ids) if len(w) == n]
            batch = _reference(ckpt, [ids[i] for i in idx], weights)
            for i, z in zip(idx, batch):
                out[i] = z
        return out
    return _reference(ckpt, [list(ids)], weights)[0]


def _reference(ckpt, windows, weights):
    """(B, T, vocab) float32 for B windows of equal length T."""
    import torch

    from .model.reference import Block, RMSNorm

    c = ckpt.config
    get = weights or ckpt.torch
    x = torch.tensor(windows)  # (B, T)
    pos = torch.arange(x.shape[1])
    with torch.no_grad():
        emb = get("model.embed_tokens.weight")
        h = emb[x] * c.embedding_scale
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
        h = norm(h) / c.logit_scale
        head = emb if c.tie_word_embeddings else get("lm_head.weight")
        return (h @ head.T).numpy()


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


class Tally:
    """Sums of the fidelity figures over windows (float64, in a fixed order)."""

    def __init__(self):
        self.nll_ref = self.nll = self.kl = 0.0
        self.agree = self.predictions = self.tokens = 0
        self.window = 0

    def add(self, ref_logits, logits, ids, chunk=256):
        T = len(ids) - 1
        if T < 1:
            raise ValueError("need at least two tokens")
        targets = np.asarray(ids[1:])
        for s in range(0, T, chunk):
            e = min(T, s + chunk)
            lp_ref = _log_softmax(ref_logits[s:e].astype(np.float64))
            lp = _log_softmax(logits[s:e].astype(np.float64))
            rows = np.arange(e - s)
            self.nll_ref -= lp_ref[rows, targets[s:e]].sum()
            self.nll -= lp[rows, targets[s:e]].sum()
            self.kl += (np.exp(lp_ref) * (lp_ref - lp)).sum()
            self.agree += int((lp_ref.argmax(-1) == lp.argmax(-1)).sum())
        self.predictions += T
        self.tokens += len(ids)
        self.window = max(self.window, len(ids))
        return self

    def result(self):
        T = self.predictions
        float_ppl, ppl = float(np.exp(self.nll_ref / T)), float(np.exp(self.nll / T))
        return {
            "eval_text": EVAL_SOURCE.split(" (")[0], "tokens": self.tokens, "window": self.window,
            "float_ppl": round(float_ppl, 4), "ppl": round(ppl, 4),
            "ppl_increase_pct": round(100 * (ppl / float_ppl - 1), 3),
            "top1_agreement": round(self.agree / T, 4), "mean_kl": round(self.kl / T, 6),
        }


def compare(ref_logits, logits, ids, chunk=256):
    """Fidelity figures of `logits` against `ref_logits` (both (T, V)) for next-token prediction of
    ids; with lists of windows (as eval_windows gives), the figures over all of them."""
    if ids and isinstance(ids[0], (list, tuple)):
        t = Tally()
        for r, z, w in zip(ref_logits, logits, ids, strict=True):
            t.add(r, z, w, chunk)
        return t.result()
    return Tally().add(ref_logits, logits, ids, chunk).result()


def agreement(ref_logits, logits, margin=1.0):
    """Teacher-forced agreement of two (T, V) logit arrays for the same positions: what stays
    invariant when two engines' arithmetic differs (llama.cpp and onnxruntime round activations to
    int8 and pick kernels by CPU), unlike free-running greedy text, which forks at the first near-tie.

    clear: positions where the reference's top-1 beats its top-2 by at least `margin` logits;
    clear_disagreements: those among them where the argmax differs (0 unless something is wrong)."""
    r, g = np.asarray(ref_logits, np.float64), np.asarray(logits, np.float64)
    if r.shape != g.shape:
        raise ValueError(f"logits of shape {g.shape} against a reference of shape {r.shape}")
    top2 = np.sort(r, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= margin
    same = r.argmax(-1) == g.argmax(-1)
    lr, lg = _log_softmax(r), _log_softmax(g)
    return {"positions": len(r), "rel_err": float(np.linalg.norm(r - g) / np.linalg.norm(r)),
            "max_abs_err": float(np.abs(r - g).max()), "top1": float(same.mean()), "margin": margin,
            "clear": int(clear.sum()), "clear_disagreements": int((clear & ~same).sum()),
            "mean_kl": float((np.exp(lr) * (lr - lg)).sum(-1).mean())}


def backend_logits(backend, ids):
    """(T, vocab) logits of one window from a runtime backend (a list of windows: a list of them),
    each window from an empty cache."""
    if ids and isinstance(ids[0], (list, tuple)):
        return [backend_logits(backend, w) for w in ids]
    backend.reset()
    out = backend.forward(list(ids), all_logits=True)
    backend.reset()
    return out
