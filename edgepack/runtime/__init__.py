"""Stage 4, the runtime: an artifact folder (int4 ONNX or GGUF) in, streamed text and timings out.

    from edgepack.runtime import load

    with load("out") as m:
        for piece in m.generate("Why is the sky blue?", max_new_tokens=64):
            print(piece, end="", flush=True)
        print(m.stats.format())

No torch here or below (a phone-side runtime has none): numpy, the tokenizer and one backend.
Open generate.py first (the one loop every backend shares); onnx_backend.py and gguf_backend.py only
answer "logits for these tokens given the cache"; artifact.py checks the manifest's sha256s through
edgepack.formats before anything is loaded.
"""
from pathlib import Path

from ..errors import BadInput
from .backend import Backend
from .generate import SUMMARY_KEYS, CacheState, Stats, check_prompt, generate
from .sampler import SamplingParams
from .speculate import Controller

__all__ = ["load", "Model", "Backend", "Stats", "SamplingParams", "generate", "SUMMARY_KEYS"]


def load(path, backend=None, threads=None, n_ctx=None):
    """Open an artifact folder (sha256 of every file checked) on its default or the named backend."""
    from .artifact import open_artifact

    be, tok, manifest = open_artifact(path, backend=backend, threads=threads, n_ctx=n_ctx)
    return Model(be, tok, manifest=manifest, path=path)


class Model:
    """A backend plus its tokenizer. Generation state (the KV cache) carries over between calls only
    when the next prompt extends the previous one, as a chat's history does."""

    def __init__(self, backend: Backend, tokenizer, manifest=None, path=None):
        self.backend, self.tokenizer, self.manifest = backend, tokenizer, manifest or {}
        self.path = Path(path) if path else None
        self.stats = None  # Stats of the latest generate()
        self._cache = CacheState()
        self._controller = Controller()  # speculation's measured costs, kept across generations
        self._encoded = {}  # image path -> EncodedImage (a chat re-renders its history every turn)
        self._cached_images = []  # the images whose rows the cached prompt's negative ids point at
        self.image = None  # the EncodedImage of the latest image given

    @property
    def vision(self):
        """The artifact's VisionConfig (MiniCPM-V), or None."""
        from ..model.config import VisionConfig

        v = ((self.manifest.get("model") or {}).get("config") or {}).get("vision")
        return VisionConfig(**v) if v else None

    def encode_image(self, path):
        """Read and encode an image file (cached per path for this model)."""
        from .vision import encode_image

        self._check_open()
        key = str(path)
        if key not in self._encoded:
            self._encoded[key] = encode_image(self.backend, path)
        self.image = self._encoded[key]
        return self.image

    @property
    def name(self):
        return self.backend.name

    def prompt_ids(self, prompt=None, *, messages=None, ids=None, template=True, images=None):
        """Token ids for exactly one of: a user prompt (chat template applied unless template=False),
        chat messages [{"role", "content"}, ...], or raw ids. images: image files, one per
        edgepack.runtime.vision.MARK in the messages (a prompt gets them before its text); their rows
        appear as negative ids (prompt_rows() holds them)."""
        given = [x is not None for x in (prompt, messages, ids)]
        if sum(given) != 1:
            raise BadInput("give exactly one of prompt, messages or ids")
        self._check_open()
        if images:
            from .vision import prompt_with_images, user_content

            if ids is not None or not template:
                raise BadInput("images go into a chat prompt (a prompt or messages, with the template)")
            enc = [self.encode_image(p) for p in images]
            v = self.vision
            if v is None:
                raise BadInput("this artifact's model has no vision description; --image needs a MiniCPM-V artifact")
            if messages is None:
                messages = [{"role": "user", "content": user_content(prompt, len(enc))}]
            out, self._rows = prompt_with_images(self.tokenizer, v, list(messages), enc)
            return out
        self._rows = None
        if ids is not None:
            return [int(i) for i in ids]
        if messages is not None:
            return self.tokenizer.encode_chat(list(messages))
        if not isinstance(prompt, str):
            raise BadInput(f"prompt must be text, got {type(prompt).__name__}")
        if template:
            return self.tokenizer.encode_chat([{"role": "user", "content": prompt}])
        return self.tokenizer.encode(prompt)

    def generate(self, prompt=None, *, messages=None, ids=None, template=True, max_new_tokens=256,
                 temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=None, stop=(), speculate=True,
                 images=None):
        """Yield text pieces as they come; afterwards self.stats holds text, ids and timings.

        speculate: draft tokens from the prompt and verify several per forward when that measures faster
        (runtime/speculate.py); the text is the one the plain loop would produce.

        Arguments are checked here, so a bad value fails at the call rather than at the first piece."""
        sampling = SamplingParams(temperature, top_k, top_p, repetition_penalty, seed)
        if isinstance(stop, str):
            stop = [stop]
        images = [str(p) for p in images or ()]
        prompt_ids = self.prompt_ids(prompt, messages=messages, ids=ids, template=template, images=images)
        backend = self.backend
        if images:
            from .vision import WithImages

            backend = WithImages(self.backend, self._rows)
            if self._cached_images != images[:len(self._cached_images)]:
                self._cache = CacheState()  # other images behind the same negative ids: start over
        self._cached_images = images
        check_prompt(backend, prompt_ids, max_new_tokens)
        self.stats = Stats(backend=self.backend.name)
        if images:
            enc = [self._encoded[p] for p in images]
            self.stats.image_slices = sum(e.slices for e in enc)
            self.stats.image_tokens = sum(e.tokens for e in enc)
            self.stats.encode_ms = sum(e.encode_ms for e in enc)
        return generate(backend, self.tokenizer, prompt_ids, max_new_tokens=max_new_tokens,
                       sampling=sampling, stop=list(stop or ()), stats=self.stats, cache=self._cache,
                       speculate=bool(speculate), controller=self._controller)

    def complete(self, *args, **kw):
        """generate() run to the end; returns the Stats (text in .text)."""
        for _ in self.generate(*args, **kw):
            pass
        return self.stats

    def close(self):
        """Free the backend (weights, KV cache, sessions). Idempotent."""
        be, self.backend = self.backend, None
        if be is not None:
            be.close()
        self.tokenizer = None
        self._cache = CacheState()
        _give_back_freed_memory()

    def _check_open(self):
        if self.backend is None:
            raise BadInput("the model is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _give_back_freed_memory():
    """Return freed heap pages to the OS. glibc keeps what onnxruntime frees in its arenas: measured on the
    demo model, RSS after closing an int4 ONNX model stayed at 420 MB (of 470 MB loaded) without
    malloc_trim and fell to 80 MB with it. A no-op where there is no glibc."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
