"""Token ids → text pieces as they come, never half a UTF-8 character; stop strings cut exactly.

A byte-fallback tokenizer spells a rare Chinese character as three byte tokens (<0xE4> <0xBD> <0xA0>),
and a byte-level BPE can split one between two tokens. Decoding each token alone would print
U+FFFD; re-decoding the whole text every step costs O(n) per token. Instead each token's raw bytes
(tokenizer.token_bytes, cached) go through Python's incremental UTF-8 decoder, which holds back an
unfinished character until its last byte arrives: O(1) per token, and the pieces join to
tokenizer.decode(ids).
"""
import codecs


class Detokenizer:
    def __init__(self, tokenizer):
        self.token_bytes, self.piece = tokenizer.token_bytes, tokenizer.piece
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # bad bytes: U+FFFD, as decode()
        # sentencepiece's decode drops the dummy-prefix space ("▁") of the first non-control piece,
        # unless that piece is a byte token (<0x20> is a real space)
        self.strip_space = bool(getattr(tokenizer, "strips_leading_space", False))

    def add(self, token_id) -> str:
        """Text completed by this token ("" while a character is unfinished, or for control tokens)."""
        b = self.token_bytes(token_id)
        if not b:
            return ""
        if self.strip_space:
            self.strip_space = False
            if b[:1] == b" " and not _is_byte_piece(self.piece(token_id)):
                b = b[1:]
        return self.decoder.decode(b)

    def pending(self) -> bool:
        """True while the bytes of an unfinished character are held back."""
        return bool(self.decoder.getstate()[0])

    def finish(self) -> str:
        """End of stream: an unfinished character at the very end is dropped, never printed as U+FFFD."""
        self.decoder.reset()
        return ""


def _is_byte_piece(p):
    return len(p) == 6 and p.startswith("<0x") and p.endswith(">")


class StopStrings:
    """Cuts the stream at the first occurrence of any stop string, even one spanning several tokens.

    Text that could still become the start of a stop string is held back until the next piece
    decides it; the stop string itself is never emitted.
    """

    def __init__(self, stops):
        self.stops = [s for s in (stops or ()) if s]
        self.held = ""
        self.stopped = False

    def add(self, piece: str) -> str:
        """Text safe to emit now. Sets .stopped once a stop string is seen (the cut is exact)."""
        if not self.stops:
            return piece
        text = self.held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held, self.stopped = "", True
            return text[:cut]
        keep = self._partial(text)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def _partial(self, text):
        """Length of the longest suffix of text that is a proper prefix of some stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def finish(self) -> str:
        """End of stream without a stop: what was held back is ordinary text after all."""
        out, self.held = self.held, ""
        return out
