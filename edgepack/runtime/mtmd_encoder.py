"""Image embeddings from llama.cpp's mtmd (through llama-cpp-python's bindings), for the GGUF backend.

mtmd does its own slicing (llava-uhd, Pillow-compatible bicubic; the same grid and pixels as MiniCPM-V's
processor for images larger than one slice whose size divides evenly, see edgepack.image) and encodes each
slice with the mmproj. Only the embeddings and the grid are taken from it: the prompt around them is
edgepack's (MiniCPM-V's own layout, with <image_id>, which mtmd's template leaves out), so both backends
feed the decoder the same sequence.
"""
import ctypes
import os

import numpy as np

from ..errors import BadInput, InternalError


class MtmdEncoder:
    def __init__(self, mmproj_path, llama, model, threads):
        import llama_cpp.mtmd_cpp as mtmd

        from ..formats import llamacpp

        self._m = mtmd
        if not os.environ.get("EDGEPACK_DEBUG"):  # the quiet llama.cpp logger, for mtmd and clip too
            mtmd.mtmd_log_set(llamacpp._LOG_CB, ctypes.c_void_p(0))
            mtmd.mtmd_helper_log_set(llamacpp._LOG_CB, ctypes.c_void_p(0))
        p = mtmd.mtmd_context_params_default()
        p.use_gpu, p.print_timings, p.n_threads, p.warmup = False, False, int(threads), False
        self.ctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), model, p)
        if not self.ctx:
            raise BadInput(f"{mmproj_path}: llama.cpp's mtmd cannot load this mmproj (set EDGEPACK_DEBUG=1 to see its log)")
        self.marker = mtmd.mtmd_default_marker()
        self.n_embd = llama.llama_model_n_embd(model)
        self.newline_id = _newline_id(llama, model)

    def encode(self, rgb):
        """rgb: (H, W, 3) uint8 -> ((n_slices, n_tokens, D) float32 embeddings (overview first), (cols, rows) or None)."""
        m = self._m
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w, _ = rgb.shape
        bmp = m.mtmd_bitmap_init(w, h, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
        chunks = m.mtmd_input_chunks_init()
        try:
            text = m.mtmd_input_text()
            text.text, text.text_len, text.add_special, text.parse_special = self.marker, len(self.marker), False, True
            arr = (m.mtmd_bitmap_p_ctypes * 1)(bmp)
            rc = m.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), arr, 1)
            if rc != 0:
                raise InternalError(f"mtmd_tokenize failed (returned {rc})")
            embeds, rows, between = [], 1, []
            for i in range(m.mtmd_input_chunks_size(chunks)):
                ch = m.mtmd_input_chunks_get(chunks, i)
                kind = m.mtmd_input_chunk_get_type(ch)
                if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    ptr = m.mtmd_input_chunk_get_tokens_text(ch, ctypes.byref(n))
                    between.append([ptr[j] for j in range(n.value)])
                    continue
                n_tok = m.mtmd_input_chunk_get_n_tokens(ch)
                if m.mtmd_encode_chunk(self.ctx, ch) != 0:
                    raise InternalError("mtmd_encode_chunk failed")
                out = m.mtmd_get_output_embd(self.ctx)
                embeds.append(np.ctypeslib.as_array(out, shape=(n_tok * self.n_embd,)).reshape(n_tok, self.n_embd).copy())
                between.append(None)
            # rows of slices: a text chunk holding the row newline sits between two slice rows
            n_slices = len(embeds) - 1
            if n_slices:
                seps = [t for t in between[between.index(None) + 1:] if t is not None]
                rows = 1 + sum(1 for t in seps[1:-1] if self.newline_id in t) if len(seps) > 2 else 1
            grid = (n_slices // rows, rows) if n_slices else None
            return np.stack(embeds), grid
        finally:
            m.mtmd_input_chunks_free(chunks)
            m.mtmd_bitmap_free(bmp)

    def close(self):
        if getattr(self, "ctx", None):
            self._m.mtmd_free(self.ctx)
        self.ctx = None


def _newline_id(llama, model):
    """The first token whose text is "\\n", as mtmd looks up its row separator."""
    vocab = llama.llama_model_get_vocab(model)
    buf = ctypes.create_string_buffer(32)
    for t in range(llama.llama_vocab_n_tokens(vocab)):
        n = llama.llama_token_to_piece(vocab, t, buf, len(buf), 0, True)
        if n == 1 and buf.raw[:1] == b"\n":
            return t
    return None
