"""llama.cpp over the GGUF artifact, through llama-cpp-python's low-level C API.

Our loop and sampler, their kernels: this backend only answers "logits for these tokens given the
cache" (llama_decode + llama_get_logits). The high-level llama_cpp.Llama class is not used: it
keeps its own token history, scores buffer and sampler, and frees memory only when garbage
collected. close() here calls llama_free and llama_model_free, so the weights' mapping and the KV
cache are gone when it returns.
"""
import contextlib
import ctypes
import os

import numpy as np

from ..errors import BadInput, InternalError
from ..formats.llamacpp import quiet_llama
from .backend import ABORT, PIECE, Backend, chunks

N_BATCH = 512  # tokens per llama_decode call (llama.cpp's default); longer prefills are chunked
_CALLBACKS = []  # llama.cpp's abort callback polling backend.ABORT, and a NULL one (made once, kept alive)


def _abort_callbacks(llama):
    if not _CALLBACKS:
        _CALLBACKS.extend((llama.ggml_abort_callback(lambda _data: ABORT.is_set()), llama.ggml_abort_callback()))
    return _CALLBACKS


def use_extra_buffer_types():
    """Whether llama.cpp may repack weights into its "extra" CPU buffer types. On CPUs with AMX
    (Sapphire Rapids and later) ggml routes Q4_0 through its AMX buffer type, and in this VM that
    segfaults inside llama_decode (llama-cpp-python 0.3.36, also with the plain llama_cpp.Llama
    class); f16/f32 files are unaffected. So extra buffer types are off where AMX is advertised,
    unless EDGEPACK_LLAMA_EXTRA_BUFTS=1/0 says otherwise."""
    env = os.environ.get("EDGEPACK_LLAMA_EXTRA_BUFTS")
    if env in ("0", "1"):
        return env == "1"
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_int8" not in f.read()
    except OSError:
        return True


@contextlib.contextmanager
def llama_class_params():
    """While llama_cpp.Llama objects are built inside this block (bench's llama.cpp engine, the tests that
    use llama-cpp-python's own route), their model params follow use_extra_buffer_types() as this
    backend's do. Llama() takes no argument for it: it reads llama_model_default_params() when built,
    so that function is replaced for the block. Yields whether extra buffer types are on."""
    import llama_cpp.llama as high

    extra, orig = use_extra_buffer_types(), high.llama_cpp.llama_model_default_params

    def params():
        p = orig()
        p.use_extra_bufts = extra
        return p

    high.llama_cpp.llama_model_default_params = params
    try:
        yield extra
    finally:
        high.llama_cpp.llama_model_default_params = orig


def _load_model(path, vocab_only=False):
    llama = quiet_llama()
    path = str(path)
    if not os.path.isfile(path):
        raise BadInput(f"{path}: GGUF file not found")
    from ..formats.gguf_reader import read_gguf_header

    read_gguf_header(path)  # every count and offset checked before llama.cpp trusts any of them
    mp = llama.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.vocab_only = vocab_only
    mp.use_extra_bufts = use_extra_buffer_types()
    model = llama.llama_model_load_from_file(path.encode(), mp)
    if not model:
        raise BadInput(f"{path}: llama.cpp cannot load this GGUF (set EDGEPACK_DEBUG=1 to see its log)")
    return llama, model


class GGUFBackend(Backend):
    name = "gguf"

    def __init__(self, path, threads=None, n_ctx=None, mmproj=None, kv_f32=False):
        self.path = str(path)
        self._llama, self._model = _load_model(path)
        llama = self._llama
        self._ebatch = self.image_encoder = None
        try:
            self._vocab = llama.llama_model_get_vocab(self._model)
            self.vocab_size = llama.llama_vocab_n_tokens(self._vocab)
            train_ctx = llama.llama_model_n_ctx_train(self._model)
            cp = llama.llama_context_default_params()
            cp.n_ctx = n_ctx or min(train_ctx, 4096)
            cp.n_batch = cp.n_ubatch = N_BATCH
            cp.n_seq_max = 1
            threads = threads or os.cpu_count() or 1
            cp.n_threads = cp.n_threads_batch = threads
            cp.no_perf = True
            if kv_f32:  # conformance: llama.cpp's default f16 cache alone moves logits by ~5e-4 of their range
                cp.type_k = cp.type_v = 0  # GGML_TYPE_F32
                cp.flash_attn_type = 0  # disabled: the CPU flash-attention kernel rounds Q to f16
            self._ctx = llama.llama_init_from_model(self._model, cp)
            if not self._ctx:
                raise InternalError(f"{self.path}: llama.cpp could not create a context (n_ctx {cp.n_ctx})")
            self.n_ctx = llama.llama_n_ctx(self._ctx)
            self._batch = llama.llama_batch_init(N_BATCH, 0, 1)
            self.n_embd = llama.llama_model_n_embd(self._model)
            if mmproj is not None:  # MiniCPM-V: llama.cpp's mtmd encodes images with the mmproj
                from .mtmd_encoder import MtmdEncoder

                self.image_encoder = MtmdEncoder(mmproj, llama, self._model, threads)
        except BaseException:
            self.close()
            raise
        self.n_past = 0

    # -- the Backend contract -------------------------------------------------------------------
    def forward(self, tokens, all_logits=False):
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise BadInput("forward() needs at least one token")
        if self._ctx is None:
            raise InternalError("GGUFBackend used after close()")
        if self.n_past + len(tokens) > self.n_ctx:
            raise BadInput(f"{self.path}: context full ({self.n_past} + {len(tokens)} tokens > n_ctx {self.n_ctx})")
        out = np.empty((len(tokens), self.vocab_size), np.float32) if all_logits else None
        many = len(tokens) > min(PIECE, N_BATCH)  # a long prefill: llama.cpp polls ABORT (never per decode step)
        poll, null = _abort_callbacks(self._llama)
        if many:
            self._llama.llama_set_abort_callback(self._ctx, poll, None)
        try:
            for start, chunk in chunks(tokens, N_BATCH):
                last = start + len(chunk) == len(tokens)
                self._decode(chunk, all_logits)
                if all_logits:
                    out[start:start + len(chunk)] = self._logits(len(chunk))
                elif last:
                    return self._logits(1)[0]
            return out
        finally:
            if many:
                self._llama.llama_set_abort_callback(self._ctx, null, None)

    def truncate(self, n):
        """llama.cpp's memory API: remove sequence 0's cells at positions [n, end)."""
        if not 0 <= n <= self.n_past:
            raise BadInput(f"truncate({n}): the cache holds {self.n_past} tokens")
        if self._ctx is None:
            raise InternalError("GGUFBackend used after close()")
        if n < self.n_past:
            llama = self._llama
            if not llama.llama_memory_seq_rm(llama.llama_get_memory(self._ctx), 0, int(n), -1):
                raise InternalError(f"{self.path}: llama.cpp could not remove cache positions {n}..{self.n_past}")
        self.n_past = int(n)

    def reset(self):
        if self._ctx is not None:
            self._llama.llama_memory_clear(self._llama.llama_get_memory(self._ctx), True)
        self.n_past = 0

    def forward_embeds(self, rows, all_logits=False):
        """Append input embeddings (T, n_embd) float32 (image rows) to the cache, as forward() does tokens."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_embd or not len(rows):
            raise BadInput(f"forward_embeds() needs (T, {self.n_embd}) rows, got {rows.shape}")
        if self._ctx is None:
            raise InternalError("GGUFBackend used after close()")
        if self.n_past + len(rows) > self.n_ctx:
            raise BadInput(f"{self.path}: context full ({self.n_past} + {len(rows)} rows > n_ctx {self.n_ctx})")
        llama = self._llama
        if self._ebatch is None:
            self._ebatch = llama.llama_batch_init(N_BATCH, self.n_embd, 1)
        b, out = self._ebatch, []
        for start in range(0, len(rows), N_BATCH):
            chunk = rows[start:start + N_BATCH]
            n, last = len(chunk), start + N_BATCH >= len(rows)
            b.n_tokens = n
            ctypes.memmove(b.embd, chunk.ctypes.data, chunk.nbytes)
            for i in range(n):
                b.pos[i] = self.n_past + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = int(all_logits or (last and i == n - 1))
            rc = llama.llama_decode(self._ctx, b)
            if rc != 0:
                raise InternalError(f"{self.path}: llama_decode of embeddings failed (returned {rc})")
            self.n_past += n
            if all_logits:
                out.append(self._logits(n))
        return np.concatenate(out) if all_logits else self._logits(1)[0]

    def close(self):
        """Each handle is taken (set to None) before it is freed: a Ctrl-C landing right after a free, with
        __del__ calling close() again later, must not free it twice (that segfaulted, issue 24)."""
        llama = self._llama
        enc, self.image_encoder = getattr(self, "image_encoder", None), None
        if enc is not None:
            enc.close()
        ebatch, self._ebatch = getattr(self, "_ebatch", None), None
        if ebatch is not None:
            llama.llama_batch_free(ebatch)
        batch, self._batch = getattr(self, "_batch", None), None
        if batch is not None:
            llama.llama_batch_free(batch)
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx:
            llama.llama_free(ctx)
        model, self._model = getattr(self, "_model", None), None
        if model:
            llama.llama_model_free(model)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- llama.cpp calls --------------------------------------------------------------------------
    def _decode(self, chunk, want_all):
        b = self._batch
        b.n_tokens = len(chunk)
        for i, t in enumerate(chunk):
            b.token[i] = t
            b.pos[i] = self.n_past + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = int(want_all or i == len(chunk) - 1)
        rc = self._llama.llama_decode(self._ctx, b)
        # 2: aborted by the abort callback, i.e. by a signal (backend.abort_native). Not only while ABORT is up:
        # a handler may have dropped it meanwhile (a chat that lost the SIGTERM this way waited for input)
        if rc == 2 or (rc != 0 and ABORT.is_set()):
            raise KeyboardInterrupt
        if rc != 0:
            raise InternalError(f"{self.path}: llama_decode failed (returned {rc})")
        self.n_past += len(chunk)

    def _logits(self, n_out):
        """Copy the last batch's n_out output rows out of llama.cpp's buffer (it is reused)."""
        ptr = self._llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.vocab_size)).copy()

    # -- helpers for conformance tests ------------------------------------------------------------
    def generate_greedy(self, prompt, n, stop_at_eog=True):
        """llama.cpp's own greedy sampler (llama_sampler_init_greedy) over its own logits, from an
        empty cache: what `llama-cli --temp 0` would produce, independent of edgepack's sampler."""
        llama = self._llama
        self.reset()
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        try:
            out = []
            self.forward(prompt)
            for _ in range(n):
                t = llama.llama_sampler_sample(chain, self._ctx, -1)
                if stop_at_eog and llama.llama_vocab_is_eog(self._vocab, t):
                    break
                out.append(int(t))
                self.forward([t])
            return out
        finally:
            llama.llama_sampler_free(chain)

    def tokenize(self, text, add_special=True, parse_special=False):
        return _tokenize(self._llama, self._vocab, text, add_special, parse_special)


def _tokenize(llama, vocab, text, add_special, parse_special):
    data = text.encode("utf-8")
    n_max = len(data) + 8
    buf = (llama.llama_token * n_max)()
    n = llama.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, parse_special)
    if n < 0:
        raise InternalError(f"llama_tokenize needs {-n} tokens, more than {n_max}")
    return list(buf[:n])


def llama_tokenize(path, text, add_special=True, parse_special=False):
    """llama.cpp's own tokenization of text with the GGUF's vocabulary (loads the vocab only)."""
    llama, model = _load_model(path, vocab_only=True)
    try:
        return _tokenize(llama, llama.llama_model_get_vocab(model), text, add_special, parse_special)
    finally:
        llama.llama_model_free(model)
