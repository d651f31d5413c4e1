"""Pick the next token from logits: greedy, temperature, top-k, top-p, repetition penalty. Numpy only.

The order is Hugging Face's: repetition penalty → temperature → top-k → top-p → draw. temperature 0
means greedy (argmax, first index on ties, as onnxruntime-genai and llama.cpp do). A seed makes the
draws reproducible; each Sampler owns its generator, so two generations never share a stream.
"""
import math
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0  # 1 = no limit
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens already seen (prompt included)
    seed: int | None = None

    def __post_init__(self):
        t, k, p, r, s = self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.seed
        if not _real(t) or t < 0:
            raise BadInput(f"temperature must be a number >= 0 (0 = greedy), got {t!r}")
        if not _int(k) or k < 0:
            raise BadInput(f"top_k must be an integer >= 0 (0 = no limit), got {k!r}")
        if not _real(p) or not 0 < p <= 1:
            raise BadInput(f"top_p must be in (0, 1], got {p!r}")
        if not _real(r) or r <= 0:
            raise BadInput(f"repetition_penalty must be a number > 0 (1 = off), got {r!r}")
        if s is not None and (not _int(s) or s < 0):
            raise BadInput(f"seed must be an integer >= 0, got {s!r}")

    @property
    def greedy(self):
        return self.temperature == 0


def _real(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class Sampler:
    def __init__(self, params: SamplingParams, vocab_size: int, history=()):
        self.p = params
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(params.seed)
        # tokens the repetition penalty applies to (prompt + generated), kept as an index array
        self._seen = np.zeros(vocab_size, dtype=bool)
        self._seen_ids = np.empty(0, dtype=np.int64)
        self.observe(history)

    def observe(self, ids):
        """Record tokens for the repetition penalty (cheap no-op when it is off)."""
        if self.p.repetition_penalty == 1.0:
            return
        ids = np.asarray(list(ids), dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < self.vocab_size)]
        new = np.unique(ids[~self._seen[ids]])
        if new.size:
            self._seen[new] = True
            self._seen_ids = np.concatenate([self._seen_ids, new])

    def __call__(self, logits: np.ndarray) -> int:
        p = self.p
        logits = logits[: self.vocab_size]  # some graphs pad the vocabulary
        if p.repetition_penalty != 1.0 and self._seen_ids.size:
            logits = logits.copy()
            seen = logits[self._seen_ids]
            logits[self._seen_ids] = np.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        if p.greedy:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / p.temperature
        idx = None  # None: the whole vocabulary, in id order
        if p.top_k and p.top_k < x.size:
            idx = np.sort(np.argpartition(-x, p.top_k - 1)[: p.top_k])  # sorted: same order every run
            x = x[idx]
        if p.top_p < 1.0:
            order = np.argsort(-x, kind="stable")  # descending, ties by id
            idx = order if idx is None else idx[order]
            x = x[order]
        probs = np.exp(x - x.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            # the smallest prefix whose mass reaches top_p (at least one token)
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            probs, idx = probs[:keep] / probs[:keep].sum(), idx[:keep]
        k = min(int(np.searchsorted(np.cumsum(probs), self.rng.random(), side="right")), probs.size - 1)
        return int(k if idx is None else idx[k])
