"""What every backend answers: "logits for these tokens, given the cache". Nothing else.

Backends must not import torch. The generation loop, sampler, stop checks and detokenizer live
in the runtime and are shared by every backend.
"""
import threading
from contextlib import contextmanager

import numpy as np

PIECE = 128  # tokens per native call in a long prefill: Ctrl-C is honoured between calls, never inside one


def chunks(tokens, most):
    """Consecutive (start, piece) of `tokens`, PIECE (at most `most`) tokens each, one engine call per piece.
    A native call cannot be interrupted: 512 demo tokens were ~6 s on a loaded 2-core machine, 128 are a
    quarter of that (issue 24). Fixed, not timed, so the same prompt always meets the same pieces.
    Listeners (prefill_progress) are told (start, total) before each piece of a forward that takes several."""
    n = min(PIECE, most)
    many = len(tokens) > n
    for lo in range(0, len(tokens), n):
        if many:
            for f in tuple(_listeners):
                f(lo, len(tokens))
        yield lo, tokens[lo:lo + n]


_listeners = []

# Stopping a native call mid-way (issue 24): edgepack.interrupt calls abort_native() the moment SIGINT or
# SIGTERM arrives, from a thread, while the main thread may be inside llama_decode or an onnxruntime run.
# llama.cpp polls ABORT between graph nodes during a multi-piece forward (its abort callback); onnxruntime
# stops at its next node through the terminate flag of each live session's RunOptions. The interrupted
# forward then raises, and the signal's KeyboardInterrupt follows; the cache it was filling is untrusted
# (generate.CacheState) and the next forward starts from an empty one. clear_abort() lets native calls run again.
ABORT = threading.Event()
_run_options = set()  # onnxruntime RunOptions of the live sessions


def abort_native():
    ABORT.set()
    for ro in tuple(_run_options):
        ro.terminate = True


def clear_abort():
    ABORT.clear()
    for ro in tuple(_run_options):
        ro.terminate = False


@contextmanager
def prefill_progress(f):
    """While the block runs, f(start, total) before each piece of a forward cut in pieces (a long prefill):
    `EDGEPACK_PROGRESS=lines` prints them, and tests interrupt a prefill at a piece they name."""
    _listeners.append(f)
    try:
        yield
    finally:
        _listeners.remove(f)


class Backend:
    name = "?"  # "onnx" | "gguf"
    n_ctx: int  # the most tokens the cache can hold
    vocab_size: int
    n_past: int = 0  # tokens already in the cache

    def forward(self, tokens, all_logits=False) -> np.ndarray:
        """Append `tokens` to the cache. Returns float32 logits: (vocab,) for the last token,
        or (len(tokens), vocab) when all_logits."""
        raise NotImplementedError

    def reserve(self, n):
        """Hint: the cache is about to hold n tokens (a backend that sizes its cache lazily allocates now)."""

    def truncate(self, n):
        """Drop the cached tokens from position n on (0 <= n <= n_past): a rejected draft's keys and
        values. A backend without it gets no speculation (the loop falls back to one token per forward)."""
        raise NotImplementedError

    def reset(self):
        """Empty the cache (keep the weights)."""
        raise NotImplementedError

    def close(self):
        """Release every buffer and session; the object is unusable afterwards."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
