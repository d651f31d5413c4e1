"""What every backend answers: "logits for these tokens, given the cache". Nothing else.

Backends must not import torch. The generation loop, sampler, stop checks and detokenizer live
in the runtime and are shared by every backend.
"""
import numpy as np

PIECE = 128  # tokens per native call in a long prefill: Ctrl-C is honoured between calls, never inside one


def chunks(tokens, most):
    """Consecutive (start, piece) of `tokens`, PIECE (at most `most`) tokens each, one engine call per piece.
    A native call cannot be interrupted: 512 demo tokens were ~6 s on a loaded 2-core machine, 128 are a
    quarter of that (issue 24). Fixed, not timed, so the same prompt always meets the same pieces."""
    n = min(PIECE, most)
    for lo in range(0, len(tokens), n):
        yield lo, tokens[lo:lo + n]


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
