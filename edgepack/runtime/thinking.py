"""Thinking blocks in a streamed reply: MiniCPM5 writes <think>…</think> before its answer.

The markers are ordinary text tokens, so the stream carries them; `edgepack chat` shows the block
dimmed on a terminal (or as plain text, or hides it with --thinking hide). Pieces may cut a marker
in two, so a possible partial marker at the end of a piece waits for the next one.
"""
OPEN, CLOSE = "<think>", "</think>"
DIM, RESET = "\033[2m", "\033[0m"
MODES = ("dim", "show", "hide")


class ThinkingView:
    def __init__(self, mode="show"):
        if mode not in MODES:
            raise ValueError(mode)
        self.mode, self.inside, self._held = mode, False, ""

    def feed(self, piece):
        """The text to print for this piece (thinking dimmed or dropped per mode)."""
        text, out = self._held + piece, []
        self._held = ""
        while text:
            tag = CLOSE if self.inside else OPEN
            i = text.find(tag)
            if i < 0:
                keep = _partial(text, tag)
                body, self._held = (text[:-keep], text[-keep:]) if keep else (text, "")
                out.append(self._show(body))
                break
            out.append(self._show(text[:i]))
            out.append(self._marker(tag))
            self.inside = not self.inside
            text = text[i + len(tag):]
        return "".join(out)

    def flush(self):
        """What is still held at the end of the reply (a dangling partial marker), and a reset."""
        text, self._held = self._held, ""
        out = self._show(text)
        if self.inside and self.mode == "dim":
            out += RESET
        self.inside = False
        return out

    def _show(self, s):
        if not s or not self.inside or self.mode == "show":
            return s
        return "" if self.mode == "hide" else s

    def _marker(self, tag):
        if self.mode == "show":
            return tag
        if self.mode == "hide":
            return ""
        return DIM + tag if tag == OPEN else tag + RESET


def _partial(text, tag):
    """Length of the longest proper prefix of tag that text ends with."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
