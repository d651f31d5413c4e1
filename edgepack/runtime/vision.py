"""Image prompts for MiniCPM-V artifacts, without torch: images in, one list of ids out.

    image file ─ edgepack.model.image.read_image (checked, rotated, RGB) ─ backend.image_encoder.encode
               ─> (n_slices, query_num, D) embeddings + the slice grid
    chat messages with MARK where each image goes ─ chat template ─ text pieces tokenized, each image's
               placeholder (MiniCPM-V's own: <image_id>k</image_id><image>…</image>, rows of <slice>…</slice>)
               in between ─> ids, the image rows written as negative ids (-1 - r: row r of all images' rows)

One list keeps the loop, the cache bookkeeping and speculation as they are; WithImages turns runs of
negative ids into backend.forward_embeds calls. Both backends get the same sequence: llama.cpp's mtmd
contributes only embeddings and the grid (its own template drops <image_id>).
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInput
from ..model.image import placeholder_parts, read_image

MARK = "\x00image\x00"  # where an image goes in a message's content


@dataclass
class EncodedImage:
    embeds: np.ndarray  # (n_slices, query_num, D) float32, overview first
    grid: tuple  # (cols, rows) or None
    encode_ms: float
    notes: list = field(default_factory=list)  # what was done to the file (converted, rotated, first frame)

    @property
    def slices(self):
        return len(self.embeds)

    @property
    def tokens(self):
        return int(self.embeds.shape[0] * self.embeds.shape[1])


def encode_image(backend, path):
    """Read and encode one image file with the backend's image encoder."""
    enc = getattr(backend, "image_encoder", None)
    if enc is None:
        raise BadInput(f"{path}: this artifact has no vision half (a text model, or exported without it); "
                       "--image needs a MiniCPM-V artifact")
    im, notes = read_image(path)
    t0 = time.perf_counter()
    embeds, grid = enc.encode(np.asarray(im, dtype=np.uint8))
    return EncodedImage(np.asarray(embeds, np.float32), grid, (time.perf_counter() - t0) * 1000.0, notes)


def marker_ids(tokenizer, text):
    """Ids of one placeholder piece: a marker token's own id; other text (the image index, the row newline)
    tokenized, without the leading-space piece a sentencepiece tokenizer puts first."""
    tid = tokenizer.token_id(text)
    if tid is not None:
        return [tid]
    ids = tokenizer.encode(text, add_bos=False)
    if len(ids) > 1 and tokenizer.piece(ids[0]) == "\u2581":
        ids = ids[1:]
    return ids


def image_ids(tokenizer, v, grid, first_row=0, index=0):
    """One image's placeholder ids; its rows are -1 - (first_row + r)."""
    out, q = [], v.query_num
    for part in placeholder_parts(v, grid, index):
        if isinstance(part, str):
            out += marker_ids(tokenizer, part)
        else:
            out += [-1 - (first_row + part * q + r) for r in range(q)]
    return out


def prompt_with_images(tokenizer, v, messages, images):
    """(ids, rows): chat messages whose contents hold MARK once per image (in order) -> prompt ids and the
    (n_rows, D) rows the negative ids point at."""
    text = tokenizer.render_chat(messages)
    pieces = text.split(MARK)
    if len(pieces) - 1 != len(images):
        raise BadInput(f"{len(pieces) - 1} image places in the messages but {len(images)} images")
    bos = tokenizer.special_text(tokenizer.bos_id)
    ids = tokenizer.encode(pieces[0], add_bos=tokenizer.add_bos and not (bos and pieces[0].startswith(bos)))
    rows, n = [], 0
    for k, (img, after) in enumerate(zip(images, pieces[1:])):
        ids += image_ids(tokenizer, v, img.grid, first_row=n, index=k)
        rows.append(img.embeds.reshape(-1, img.embeds.shape[-1]))
        n += len(rows[-1])
        if after:
            ids += tokenizer.encode(after, add_bos=False)
    return ids, (np.concatenate(rows) if rows else None)


def user_content(question, n_images=1):
    """A user message's content with images first, as MiniCPM-V's chat does: `(<image>./</image>)\\n` + question."""
    return MARK * n_images + "\n" + question


class WithImages:
    """A backend whose forward() also takes image rows written as negative ids (-1 - r -> rows[r])."""

    has_rows = True

    def __init__(self, backend, rows):
        self.inner, self.rows = backend, rows

    def __getattr__(self, name):  # n_past, n_ctx, vocab_size, name, reserve, reset, close: the backend's
        return getattr(self.inner, name)

    def truncate(self, n):
        return self.inner.truncate(n)

    def forward(self, tokens, all_logits=False):
        outs, last, run = [], None, []
        for k, t in enumerate(list(tokens) + [None]):
            if run and (t is None or (t < 0) != (run[-1] < 0)):
                if run[0] < 0:
                    last = self.inner.forward_embeds(self.rows[[-1 - r for r in run]], all_logits=all_logits)
                else:
                    last = self.inner.forward(run, all_logits=all_logits)
                if all_logits:
                    outs.append(last)
                run = []
            if t is not None:
                run.append(int(t))
        return np.concatenate(outs) if all_logits else last
