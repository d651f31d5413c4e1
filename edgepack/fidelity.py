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


# Pieces of the float reference, one torch call each (issue 24): Python sees Ctrl-C only between calls.
# Measured on MiniCPM-2B's shape on the 2 busy cores of the dev machine: the head over a 2048-token
# window in one call (2048 × 2304 @ 2304 × 122753, 1.2 TFLOP) took 38 s; one MLP matmul over the window 1.2 s.
PIECE = 256  # rows (positions × windows) per layer call: there an MLP matmul of 256 rows is ~0.14 s,
# the attention of 256 queries over 2048 keys ~0.1 s
HEAD_ROWS, HEAD_COLS = 512, 8192  # the head in (rows, vocab) tiles of ~19 GFLOP, ~0.3 s there


def reference_logits(ckpt, ids, weights=None, progress=None):
    """Float reference logits streaming one layer at a time: ids (T,) -> (T, vocab) float32, or a
    list of windows -> a list of (len, vocab) arrays (windows of one length share one pass).
    progress(stage, done, total) is told "float reference" at the start, after each layer and after the head
    of each pass."""
    progress = progress or (lambda stage, done, total: None)
    if ids and isinstance(ids[0], (list, tuple)):
        lengths = sorted({len(w) for w in ids})
        c = ckpt.config
        total, out = len(lengths) * (c.num_hidden_layers + 1), [None] * len(ids)
        for k, n in enumerate(lengths):
            idx = [i for i, w in enumerate(ids) if len(w) == n]
            tell = lambda done, k=k: progress("float reference", k * (c.num_hidden_layers + 1) + done, total)
            batch = _reference(ckpt, [ids[i] for i in idx], weights, tell)
            for i, z in zip(idx, batch):
                out[i] = z
        return out
    n = ckpt.config.num_hidden_layers + 1
    return _reference(ckpt, [list(ids)], weights, lambda done: progress("float reference", done, n))[0]


def _reference(ckpt, windows, weights, tell=lambda done: None):
    """(B, T, vocab) float32 for B windows of equal length T.

    Each layer runs over the window in pieces of about PIECE rows, its keys and values carried from
    piece to piece (the attention of a piece sees every earlier position, as in one call), and the
    head in tiles of HEAD_ROWS × HEAD_COLS (reading the head once per row piece, not once per few rows):
    Python sees a signal only between torch calls, and one call over a 2048-token window of MiniCPM-2B
    held Ctrl-C for 38 s (its head). Pieces are fixed, not timed, so the logits never depend on the
    machine's load; they equal the one-call result within float32 rounding (tests/test_interrupt_commands.py)."""
    import numpy as np
    import torch

    from .model.reference import Block, KVCache, RMSNorm

    c = ckpt.config
    get = weights or ckpt.torch
    x = torch.tensor(windows)  # (B, T)
    B, T = x.shape
    step = max(1, PIECE // B)
    with torch.no_grad():
        emb = get("model.embed_tokens.weight")
        h = emb[x] * c.embedding_scale
        tell(0)
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
            cache = KVCache(1).for_layer(0)
            h = torch.cat([block(h[:, lo:lo + step], torch.arange(lo, min(T, lo + step)), cache)
                           for lo in range(0, T, step)], 1)
            del block, cache
            tell(i + 1)
        norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        norm.weight = torch.nn.Parameter(get("model.norm.weight"), requires_grad=False)
        head = emb if c.tie_word_embeddings else get("lm_head.weight")
        rows = h.reshape(B * T, -1)
        out = np.empty((B * T, head.shape[0]), np.float32)
        for lo in range(0, B * T, HEAD_ROWS):
            z = norm(rows[lo:lo + HEAD_ROWS]) / c.logit_scale
            for v in range(0, head.shape[0], HEAD_COLS):
                out[lo:lo + HEAD_ROWS, v:v + HEAD_COLS] = (z @ head[v:v + HEAD_COLS].T).numpy()
        tell(c.num_hidden_layers + 1)
        return out.reshape(B, T, -1)


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
