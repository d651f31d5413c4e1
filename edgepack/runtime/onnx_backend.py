"""onnxruntime over an edgepack ONNX folder, with the KV cache preallocated and updated in place.

The graph's GroupQueryAttention reads past_key_values.%d.* and writes present.%d.* ; binding both
names to the same (1, kv_heads, capacity, head_dim) buffer with IOBinding makes GQA append the new
keys/values in place (onnxruntime-genai's past_present_share_buffer), so no step copies the cache.

The buffers take the element type the graph declares for past_key_values.* (float16 in edgepack's int4
exports, float32 in older ones and the fp32 anchor: onnx_writer.KV_DTYPE), read from the session, so
an artifact never gets a cache of the wrong type and `kv_dtype` / `kv_bytes()` say what it holds.

The capacity is what the generation asks for (`reserve(prompt + max_new_tokens)`, as genai sizes its
buffer from max_length), not the whole context: GQA strides every head by the capacity, and on the
MiniCPM-2B shape a 4096-row buffer decoded at 8.02 tok/s against 8.21 with 97 rows, same graph, same
run (2 threads, medians of 4 rounds, benchmarks/README.md, decision log); the virtual size of the 2B
cache also drops from 3 GB to what the generation can use. If a chat outgrows it, the buffers grow by
doubling (one copy of the filled rows, log2(n_ctx) times at most), never per token.

Levers checked and left as they are (benchmarks/bench_decode_levers.py; profile in the decision log): onnxruntime's
default thread spinning (session.intra_op.allow_spinning) stays on and intra_op_num_threads stays at the
cores the caller gives. On a quiet machine (results/decode_levers_2b_quiet.json: 2B shape, context 256,
3 alternating rounds) spinning off decoded at 0.90x, prefill 1.00x. The one earlier run, on a machine
loaded by other work (decode_levers_2b.json, load average ~9), had spinning off 2.05x faster: spinning
threads fight other processes for the cores, so a phone busy with other apps may differ.

Once the session is built, the memory it mapped for the weights is moved onto 2 MB pages by a
background thread (hugepages.py) while the model is idle: decode reads every weight per token, and on
4 KB pages the 2B shape decoded 0.90x as fast here. Collapsing competes with decoding: started at load
(huge_pages="now"), a cold run with a 64-token prompt had TTFT 3.6 s instead of 2.0 and decoded at
5.3 tok/s instead of 6.4; gated on idleness (the default) it had 1.8 s and 6.9 (medians of 3 fresh
processes each, huge_pages_2b.json). So it never runs inside a generation: a chat collapses
while its user types, a one-shot `edgepack run` mostly decodes on 4 KB pages. `huge_pages=False`
leaves the pages alone; with "now", `.huge_pages.wait()` pays for it at load, as a server might.
"""
import gc
import json
import os
import time
import weakref
from pathlib import Path

import numpy as np

from ..errors import BadInput
from . import backend, hugepages
from .backend import Backend, chunks

IDLE_S = 0.2  # no forward for this long: the model is idle (a chat waiting for its user, between turns)
KV_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}  # past_key_values input type -> buffer
PREFILL_CHUNK = 512  # tokens per run when a long prompt is fed: bounds the (chunk, vocab) logits buffer


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, folder, threads=None, n_ctx=None, huge_pages=True, vision=None):
        import onnxruntime as ort

        if huge_pages not in (True, False, "idle", "now"):
            raise BadInput(f"huge_pages must be True, False, 'idle' or 'now', not {huge_pages!r}")
        self.folder = Path(folder)
        cfg_file = self.folder / "genai_config.json"
        if not cfg_file.is_file():
            raise BadInput(f"{cfg_file}: not found (not an edgepack/onnxruntime-genai ONNX folder)")
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))["model"]
            dec = cfg["decoder"]
            self.n_layers, kv, hd = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
            self.vocab_size, ctx = cfg["vocab_size"], cfg["context_length"]
            io_names = dec["inputs"], dec["outputs"]
        except (ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{cfg_file}: not a valid genai_config.json ({e})") from None
        self.n_ctx = min(int(n_ctx or ctx), ctx)
        threads = threads or dec.get("session_options", {}).get("intra_op_num_threads") or os.cpu_count()

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        # Every step has new shapes (the mask grows), so a memory pattern is planned and never reused:
        # measured ~10% slower decode on the demo model with it on (genai_config exposes the same switch).
        so.enable_mem_pattern = False
        model = self.folder / dec.get("filename", "model.onnx")
        self.image_encoder = self._embed = None
        if vision is not None:  # MiniCPM-V: the decoder on inputs_embeds, text through embedding.onnx (vision_onnx.py)
            from .onnx_vision import EMBEDDING_FILE, DECODER_EMBEDS_FILE, OnnxImageEncoder, session

            model = self.folder / DECODER_EMBEDS_FILE
            self._embed = session(self.folder / EMBEDDING_FILE, threads)
            self.image_encoder = OnnxImageEncoder(self.folder, vision, threads)
        before = hugepages.anon_ranges() if huge_pages else None
        try:
            self.session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BadInput(f"{model}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self._run_options = ort.RunOptions()  # its terminate flag stops a run mid-way (backend.abort_native)
        self._run_options.terminate = backend.ABORT.is_set()
        backend._run_options.add(self._run_options)
        self._busy, self._last_forward = False, time.monotonic()
        # the weights the session just mapped, into 2 MB pages while the model is idle (hugepages.py)
        ref = weakref.ref(self)  # the thread must not keep a dropped backend (and its session) alive

        def gate():  # None once the backend is gone (one dereference: it may go between two)
            b = ref()
            return None if b is None else b.idle()

        # "now": start at once, even during a generation
        self.huge_pages = hugepages.Collapser(before, idle=None if huge_pages == "now" else gate) if huge_pages else None

        inp, out = io_names
        self._in_ids, self._in_mask, self._logits = inp["input_ids"], inp["attention_mask"], out["logits"]
        if self._embed is not None:
            self._in_ids = "inputs_embeds"
        self._io = self.session.io_binding()
        self._step_logits = np.zeros((1, 1, self.vocab_size), np.float32)
        self._step_logits_v = ort.OrtValue.ortvalue_from_numpy(self._step_logits)
        self._io.bind_ortvalue_output(self._logits, self._step_logits_v)  # bound first: output 0
        self._ort, self._kv_shape = ort, (kv, hd)
        types = {i.name: i.type for i in self.session.get_inputs()}
        past_type = types.get(inp["past_key_names"] % 0, "tensor(float)")
        if past_type not in KV_TYPES:
            raise BadInput(f"{model}: KV cache type {past_type} is not supported ({', '.join(KV_TYPES)})")
        self.kv_dtype = KV_TYPES[past_type]
        self._kv_names = [(names[0] % i, names[1] % i) for i in range(self.n_layers)
                          for names in ((inp["past_key_names"], out["present_key_names"]),
                                        (inp["past_value_names"], out["present_value_names"]))]
        self._cache = []  # (numpy buffer, OrtValue viewing it) per past/present pair
        self.capacity = 0  # rows each cache buffer holds; allocated on first use
        self._mask = np.ones((1, self.n_ctx), np.int64)
        self._step_id = np.zeros((1, 1), np.int64)
        self._logits_to_step = True
        self.n_past = 0

    def reserve(self, n):
        """Make the cache hold at least n tokens (capped at n_ctx) without growing mid-generation."""
        n = min(int(n), self.n_ctx)
        if n <= self.capacity:
            return
        kv, hd = self._kv_shape
        cache = []
        for j, (past, present) in enumerate(self._kv_names):
            buf = np.zeros((1, kv, n, hd), self.kv_dtype)  # calloc: pages are committed as the cache fills
            if self._cache and self.n_past:
                buf[:, :, :self.n_past] = self._cache[j][0][:, :, :self.n_past]
            v = self._ort.OrtValue.ortvalue_from_numpy(buf)
            self._io.bind_ortvalue_input(past, v)
            self._io.bind_ortvalue_output(present, v)  # same buffer: GQA appends in place
            cache.append((buf, v))
        self._cache, self.capacity = cache, n

    def kv_bytes(self, n=None):
        """Bytes of K and V for every layer at n tokens (default: the allocated capacity)."""
        kv, hd = self._kv_shape
        return 2 * self.n_layers * kv * hd * (self.capacity if n is None else n) * np.dtype(self.kv_dtype).itemsize

    def _run(self, tokens):
        """One session run over len(tokens) new tokens (or an (T, hidden) array of input rows, for the decoder on
        inputs_embeds); returns logits (T, vocab) (a view for T == 1)."""
        T = len(tokens)
        total = self.n_past + T
        if self._embed is not None:  # inputs_embeds: the rows given, or the embedding graph's for token ids
            x = tokens if isinstance(tokens, np.ndarray) else self._embed.run(
                None, {"input_ids": np.asarray(tokens, np.int64).reshape(1, T)})[0][0]
            self._io.bind_cpu_input(self._in_ids, np.ascontiguousarray(x, np.float32).reshape(1, T, -1))
            if T == 1 and not self._logits_to_step:
                self._io.bind_ortvalue_output(self._logits, self._step_logits_v)
                self._logits_to_step = True
            elif T > 1:
                self._io.bind_output(self._logits, "cpu")
                self._logits_to_step = False
        elif T == 1:  # decode: a persistent id buffer, logits straight into the step buffer
            self._step_id[0, 0] = tokens[0]
            self._io.bind_cpu_input(self._in_ids, self._step_id)
            if not self._logits_to_step:
                self._io.bind_ortvalue_output(self._logits, self._step_logits_v)
                self._logits_to_step = True
        else:
            self._io.bind_cpu_input(self._in_ids, np.asarray(tokens, np.int64).reshape(1, T))
            self._io.bind_output(self._logits, "cpu")  # (1, T, vocab), allocated by onnxruntime
            self._logits_to_step = False
        self._io.bind_cpu_input(self._in_mask, self._mask[:, :total])
        try:
            self.session.run_with_iobinding(self._io, self._run_options)  # terminate: abort_native()
        except Exception:
            if backend.ABORT.is_set():  # stopped by a signal: the interrupt, not onnxruntime's error
                raise KeyboardInterrupt from None
            raise
        self.n_past = total
        return self._step_logits[0] if T == 1 else self._io.get_outputs()[0].numpy()[0]

    def idle(self):
        """No forward for IDLE_S: a generation's steps come back to back (~1 ms apart), so the huge-page
        collapse, which competes for the cores and the address-space lock, never runs inside one."""
        return not self._busy and time.monotonic() - self._last_forward >= IDLE_S

    def forward(self, tokens, all_logits=False):
        self._busy = True
        try:
            return self._forward(tokens, all_logits)
        finally:
            self._busy, self._last_forward = False, time.monotonic()

    def forward_embeds(self, rows, all_logits=False):
        """Append input rows (T, hidden) float32 (image embeddings) to the cache, as forward() does tokens."""
        if self._embed is None:
            raise BadInput(f"{self.folder}: this ONNX folder has no decoder on inputs_embeds")
        rows = np.ascontiguousarray(rows, np.float32)
        self._busy = True
        try:
            return self._forward(rows, all_logits)
        finally:
            self._busy, self._last_forward = False, time.monotonic()

    def _forward(self, tokens, all_logits):
        tokens = tokens if isinstance(tokens, np.ndarray) else [int(t) for t in tokens]
        if not len(tokens):
            raise BadInput("forward() needs at least one token")
        if self.n_past + len(tokens) > self.n_ctx:
            raise BadInput(f"context full: {self.n_past} + {len(tokens)} tokens exceed n_ctx {self.n_ctx}")
        need = self.n_past + len(tokens)
        if need > self.capacity:
            self.reserve(max(need, 2 * self.capacity, 256))
        outs = []
        for _, piece in chunks(tokens, PREFILL_CHUNK):
            lg = self._run(piece)
            if all_logits:
                outs.append(np.array(lg, np.float32))
        if all_logits:
            return np.concatenate(outs) if len(outs) > 1 else outs[0]
        return np.array(lg[-1], np.float32)

    def truncate(self, n):
        """The shared past/present buffer keeps its rows; the attention mask (GQA's seqlens_k and total
        length) is what says how many are valid, so a shorter n_past hides the rest and the next forward
        writes over them."""
        if not 0 <= n <= self.n_past:
            raise BadInput(f"truncate({n}): the cache holds {self.n_past} tokens")
        self.n_past = int(n)

    def reset(self):
        self.n_past = 0  # seqlens_k hides the stale cache rows; no need to clear them (capacity is kept)

    def close(self):
        backend._run_options.discard(getattr(self, "_run_options", None))
        if getattr(self, "huge_pages", None) is not None:
            self.huge_pages.stop()  # before the session frees what it is collapsing
        for attr in ("_io", "session", "_cache", "_mask", "_step_logits", "_step_logits_v", "_step_id", "_embed", "image_encoder"):
            if hasattr(self, attr):
                delattr(self, attr)
        gc.collect()
