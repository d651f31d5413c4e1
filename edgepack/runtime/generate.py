"""The generation loop, shared by every backend (llama2.c's run.c, in Python).

    prefill the prompt → for each new token: logits → sampler → stop checks → detokenizer → yield text

Timing as run.c: TTFT runs from the start of prefill to the first sampled token; decode tok/s
counts the steps after the first token (the clock starts once it exists). The per-token path is one
backend.forward, one sampler call, a dict lookup for the token's bytes and an incremental UTF-8
decode: nothing grows with the length of the text.

With speculation (speculate.py, on by default) the one-token forward becomes `spec.logits_after(tok)`,
which returns the same logits, sometimes from a verify it already ran: the loop itself does not change.
"""
import time
from dataclasses import dataclass, field

from ..errors import BadInput
from .detok import Detokenizer, StopStrings
from .meter import SpeechMeter
from .sampler import Sampler, SamplingParams
from .speculate import Speculator

# the keys of `edgepack run --json` (shared/DESIGN.md "Interfaces"); add fields, rename none
SUMMARY_KEYS = ("text", "tokens", "ttft_s", "prefill_tok_s", "decode_tok_s", "words_per_s",
                "cjk_chars_per_s", "speech_ratio", "backend", "drafted_tokens", "accepted_tokens", "verify_steps")


@dataclass
class Stats:
    """Filled in while generating (readable mid-stream, for a live meter) and complete at the end."""

    backend: str = "?"
    prompt_tokens: int = 0
    prefill_tokens: int = 0  # prompt tokens actually run (fewer when the cache already held a prefix)
    tokens: int = 0  # generated tokens, eos excluded
    ids: list = field(default_factory=list)  # generated token ids, eos excluded
    text: str = ""
    ttft_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0  # from the first sampled token to the last
    decode_steps: int = 0  # forward+sample steps inside decode_s
    finish_reason: str = ""  # eos | stop | length | context | interrupted
    drafted_tokens: int = 0  # speculation: draft tokens verified
    accepted_tokens: int = 0  # ... of which the sampler drew the drafted token (each saved one forward)
    verify_steps: int = 0  # forwards that verified a draft
    image_slices: int = 0  # image prompts: slices encoded (overview included), rows they take, encode time
    image_tokens: int = 0
    encode_ms: float = 0.0
    meter: SpeechMeter = field(default_factory=SpeechMeter)

    @property
    def prefill_tok_s(self):
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self):
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def speech(self):
        """(words_per_s, cjk_chars_per_s, speech_ratio)."""
        return self.meter.rates(self.tokens, self.decode_tok_s)

    def summary(self):
        """The `edgepack run --json` object."""
        words, cjk, ratio = self.speech
        return {"text": self.text, "tokens": self.tokens, "ttft_s": round(self.ttft_s, 4),
                "prefill_tok_s": round(self.prefill_tok_s, 2), "decode_tok_s": round(self.decode_tok_s, 2),
                "words_per_s": round(words, 3), "cjk_chars_per_s": round(cjk, 3),
                "speech_ratio": round(ratio, 3), "backend": self.backend, "drafted_tokens": self.drafted_tokens,
                "accepted_tokens": self.accepted_tokens, "verify_steps": self.verify_steps,
                **({"image_slices": self.image_slices, "image_tokens": self.image_tokens,
                    "encode_ms": round(self.encode_ms, 1)} if self.image_slices else {})}

    def format(self):
        """One human line: TTFT, prefill and decode tok/s, words/s (or chars/s), ×speech."""
        words, cjk, ratio = self.speech
        rate = f"{cjk:.1f} chars/s" if self.meter.cjk_dominant else f"{words:.1f} words/s"
        return (f"{self.tokens} tokens | TTFT {self.ttft_s:.2f} s | prefill {self.prefill_tok_s:.1f} tok/s | "
                f"decode {self.decode_tok_s:.1f} tok/s | {rate} = {ratio:.1f}× speech | {self.backend}")


class CacheState:
    """Which token ids the backend's KV cache holds, so a chat turn only prefills what is new.

    Unknown (None) while a forward runs: an interrupt mid-forward leaves the cache untrusted, and the
    next generation starts from an empty one.
    """

    def __init__(self):
        self.ids = []

    def prepare(self, backend, prompt):
        """Reset the backend unless it holds a prefix of prompt; return how many prompt tokens are cached."""
        ids = self.ids
        n = len(ids) if ids is not None else -1
        if 0 <= n < len(prompt) and backend.n_past == n and prompt[:n] == ids:
            return n
        backend.reset()
        self.ids = []
        return 0

    def forward(self, backend, tokens, all_logits=False):
        ids, self.ids = self.ids, None
        logits = backend.forward(tokens, all_logits=all_logits)
        ids.extend(tokens)
        self.ids = ids
        return logits

    def truncate(self, backend, n):
        """Keep the first n cached tokens (a rejected draft's positions go)."""
        ids, self.ids = self.ids, None
        backend.truncate(n)
        self.ids = ids[:n]


def check_prompt(backend, prompt, max_new_tokens):
    """Clear errors for what would otherwise fail deep inside a backend."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise BadInput(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not prompt:
        raise BadInput("the prompt is empty (no tokens)")
    if len(prompt) >= backend.n_ctx:
        raise BadInput(f"the prompt is {len(prompt)} tokens but the context holds {backend.n_ctx} "
                       f"(at most {backend.n_ctx - 1} leave room for an answer)")
    rows = len(backend.rows) if getattr(backend, "has_rows", False) else 0  # image rows: ids -1 .. -rows
    bad = next((t for t in prompt if not -rows <= t < backend.vocab_size), None)
    if bad is not None:
        raise BadInput(f"token id {bad} is outside the vocabulary (0..{backend.vocab_size - 1})")


def generate(backend, tokenizer, prompt_ids, *, max_new_tokens=256, sampling=None, stop=(), stats=None,
             cache=None, speculate=True, controller=None):
    """Yield text pieces generated after prompt_ids (a list of token ids, chat template applied).

    `stats` (a Stats) is filled in as the loop runs; `cache` (a CacheState) lets consecutive calls
    reuse the backend's cache when the new prompt extends what it holds. `speculate` drafts from the
    prompt (speculate.py; the text is the same either way); `controller` (a speculate.Controller) carries
    its measured costs from one call to the next.
    """
    sampling = sampling or SamplingParams()
    stats = stats if stats is not None else Stats()
    cache = cache or CacheState()
    prompt = [int(t) for t in prompt_ids]
    check_prompt(backend, prompt, max_new_tokens)
    eos = frozenset(tokenizer.eos_ids)
    detok, stops, meter = Detokenizer(tokenizer), StopStrings(stop), stats.meter
    stats.backend, stats.prompt_tokens = backend.name, len(prompt)
    stats.finish_reason = "interrupted"  # until the loop says otherwise
    pieces, spec = [], None

    def emit(piece):
        pieces.append(piece)
        meter.feed(piece)
        return piece

    try:
        t0 = time.perf_counter()
        cached = cache.prepare(backend, prompt)
        backend.reserve(len(prompt) + max_new_tokens)  # the cache is sized once, here (inside TTFT), never per token
        stats.prefill_tokens = len(prompt) - cached
        logits = cache.forward(backend, prompt[cached:])
        stats.prefill_s = time.perf_counter() - t0
        sampler = Sampler(sampling, backend.vocab_size, history=prompt)
        spec = Speculator(backend, cache, prompt, len(prompt) + max_new_tokens - 1, stats, speculate, controller)
        t_first = None
        for step in range(max_new_tokens):
            tok = sampler(logits)
            now = time.perf_counter()
            if t_first is None:
                t_first, stats.ttft_s = now, now - t0
            else:
                stats.decode_steps, stats.decode_s = step, now - t_first
            if tok in eos:
                stats.finish_reason = "eos"
                break
            stats.ids.append(tok)
            stats.tokens += 1
            sampler.observe((tok,))
            piece = stops.add(detok.add(tok))
            if piece:
                yield emit(piece)
            if stops.stopped:
                stats.finish_reason = "stop"
                return
            if step + 1 == max_new_tokens:
                stats.finish_reason = "length"
                break
            if len(prompt) + stats.tokens > backend.n_ctx:  # no room to run tok
                stats.finish_reason = "context"
                break
            logits = spec.logits_after(tok)
        tail = stops.add(detok.finish()) + stops.finish()
        if tail:
            yield emit(tail)
    finally:
        stats.text = "".join(pieces)
        if spec is not None:
            spec.close()  # drafted positions no token reached leave the cache
