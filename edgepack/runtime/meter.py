"""Speech meter: how fast the streamed text comes, against how fast people speak.

Counts what was actually streamed (words and CJK characters, not tokens). Human rates: about
150 words/min of conversational English (2.5 words/s) and about 5.2 syllables = characters/s of
read Mandarin. speech_ratio uses the text's dominant script (more CJK characters than
Latin-script letters and digits → CJK).

A rate is units per decode second: units/token × decode tokens/s, i.e. how fast the text streams once
it has started (the wait for the first token is TTFT, reported apart).
"""
import os
import time

WORDS_PER_S = 2.5  # conversational English
CJK_CHARS_PER_S = 5.2  # read Mandarin

# Han (with extensions and compatibility), kana, Hangul syllables, fullwidth forms excluded
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF),
               (0xF900, 0xFAFF), (0x20000, 0x2FA1F))


def is_cjk(ch):
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _CJK_RANGES)


class SpeechMeter:
    """Feed it streamed pieces; a word split across pieces is counted once."""

    def __init__(self):
        self.words = 0  # runs of non-CJK letters/digits (apostrophes and hyphens inside a word keep it whole)
        self.letters = 0  # non-CJK letters and digits, to find the dominant script
        self.cjk_chars = 0
        self._in_word = False

    def feed(self, piece: str):
        in_word = self._in_word
        for ch in piece:
            if ch.isalnum():
                if ord(ch) >= 0x3040 and is_cjk(ch):
                    self.cjk_chars += 1
                    in_word = False
                    continue
                self.letters += 1
                if not in_word:
                    self.words += 1
                    in_word = True
            elif ch not in "'’-" or not in_word:
                in_word = False
        self._in_word = in_word

    @property
    def cjk_dominant(self):
        return self.cjk_chars > self.letters

    def rates(self, tokens, decode_tok_s):
        """(words_per_s, cjk_chars_per_s, speech_ratio) for text of `tokens` tokens streamed at decode_tok_s."""
        if tokens <= 0 or not decode_tok_s:
            return 0.0, 0.0, 0.0
        words_per_s = self.words / tokens * decode_tok_s
        cjk_per_s = self.cjk_chars / tokens * decode_tok_s
        ratio = cjk_per_s / CJK_CHARS_PER_S if self.cjk_dominant else words_per_s / WORDS_PER_S
        return words_per_s, cjk_per_s, ratio


class LiveMeter:
    """A one-line meter on a terminal (stderr), redrawn at most `every` seconds while text streams.

    Only when stderr is a terminal other than stdout's: on a shared terminal the streamed text and a
    redrawn status line would garble each other, so the closing summary says it all instead.
    """

    def __init__(self, stream, every=0.25):
        self.stream, self.every, self._clock = stream, every, time.perf_counter
        self.last, self.shown = 0.0, False
        self.enabled = _own_terminal(stream)

    def update(self, stats):
        now = self._clock()
        if not self.enabled or now - self.last < self.every:
            return
        self.last, self.shown = now, True
        self.stream.write("\r\x1b[K" + stats.format())
        self.stream.flush()

    def clear(self):
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _own_terminal(stream):
    try:
        err = stream.fileno()
        if not os.isatty(err):
            return False
        return not os.isatty(1) or os.ttyname(1) != os.ttyname(err)
    except (AttributeError, OSError, ValueError):
        return False
