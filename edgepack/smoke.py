"""The smoke run of every export: each artifact it wrote runs a short prompt before the folder is renamed into place.

A manifest promises that its ONNX runs in onnxruntime and its GGUF in llama.cpp; a writer's bug can break that
promise without failing the export (issue 34: a 24-wide MLA head that onnxruntime refused at the first token,
exported with exit 0). So every export loads each artifact in edgepack's own runtime and runs PROMPT_TOKENS of
prefill and DECODE_TOKENS greedy steps, checking that every row of logits is finite and one per vocabulary entry,
even with --fidelity-tokens 0. A MiniCPM-V's vision.onnx also encodes one tiny slice (VISION_PATCHES² patches).

A failure is edgepack's bug, not the user's input: InternalError (exit 1), one line naming the format, the engine
and the engine's own message; the export's scratch folder goes with it, so nothing is written. The entry gets
`smoke` {prompt_tokens, decode_tokens, engine, seconds} (and `vision` for vision.onnx) when it passes.
"""
import time

import numpy as np

from .errors import InternalError

PROMPT_TOKENS, DECODE_TOKENS = 4, 3
N_CTX = 32  # the smallest cache both engines take without complaint; the prompt needs 7 rows
# one thread: a check, not a measurement, and llama.cpp's threads spin at their barriers (on a loaded 2-core
# machine 3 decode steps of a tiny GGUF took 1.6 s with 2 threads, under 1 ms with 1)
THREADS = 1
VISION_PATCHES = 2
TEXT = "The quick brown fox"


def prompt_ids(tokenizer):
    """PROMPT_TOKENS ids of TEXT (bos first where the tokenizer adds one), the last repeated if it is shorter."""
    ids = list(tokenizer.encode(TEXT))[:PROMPT_TOKENS] or [0]
    return ids + [ids[-1]] * (PROMPT_TOKENS - len(ids))


def engine(fmt):
    """The engine's name and version, as the manifest records it."""
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"llama.cpp (llama-cpp-python {version('llama_cpp_python')})"
    except PackageNotFoundError:
        return "llama.cpp"


def smoke(fmt, path, cfg, ids, root=None):
    """Run the short prompt on the artifact at `path` (the ONNX folder or the .gguf file); the manifest's entry.

    cfg: the exported model's description (its vocab_size; a MiniCPM-V's vision for vision.onnx). root: the
    scratch folder, left out of an error's paths (it is gone when the user reads them)."""
    name, t0 = engine(fmt), time.perf_counter()
    try:
        out = {"prompt_tokens": len(ids), "decode_tokens": _decode(fmt, path, cfg, ids), "engine": name}
        if fmt == "onnx" and cfg.vision is not None:
            out["vision"] = _vision(path, cfg.vision)
        return {**out, "seconds": round(time.perf_counter() - t0, 3)}  # load included: what it adds to the export
    except InternalError as e:
        raise InternalError(f"the {fmt} artifact failed its smoke run in {name}: {e}") from None
    except Exception as e:  # the engines raise their own types; KeyboardInterrupt is not an Exception and goes by
        msg = " ".join(str(e).replace(f"{root}/" if root else "\0", "").split())[:300] or type(e).__name__
        raise InternalError(f"the {fmt} artifact failed its smoke run in {name}: {msg}") from None


def _decode(fmt, path, cfg, ids):
    if fmt == "onnx":
        from .runtime.onnx_backend import OnnxBackend

        return _steps(OnnxBackend(path, threads=THREADS, n_ctx=N_CTX, huge_pages=False), cfg, ids)
    from .runtime.gguf_backend import GGUFBackend

    return _steps(GGUFBackend(path, threads=THREADS, n_ctx=N_CTX), cfg, ids)


def _steps(b, cfg, ids):
    with b:
        logits = _check(b.forward(ids, all_logits=True), len(ids), cfg.vocab_size, "prefill")
        for step in range(DECODE_TOKENS):
            logits = _check(b.forward([int(logits[-1].argmax())])[None], 1, cfg.vocab_size, f"decode step {step + 1}")
    return DECODE_TOKENS


def _check(logits, rows, vocab, what):
    logits = np.asarray(logits)
    if logits.shape != (rows, vocab):
        raise InternalError(f"{what} gave logits of shape {logits.shape}, not ({rows}, {vocab})")
    if not np.isfinite(logits).all():
        raise InternalError(f"{what} gave {int((~np.isfinite(logits)).sum())} logits that are not finite")
    return logits


def _vision(folder, v):
    """vision.onnx over one VISION_PATCHES x VISION_PATCHES slice of grey: (1, query_num, embed_dim), finite."""
    from .runtime.onnx_vision import OnnxImageEncoder

    side = VISION_PATCHES * v.patch_size
    enc = OnnxImageEncoder(folder, v, THREADS)
    try:
        y = np.asarray(enc.encode_slices([np.zeros((3, side, side), np.float32)]))
    finally:
        enc.close()
    if y.shape != (1, v.query_num, v.embed_dim):
        raise InternalError(f"vision.onnx gave embeddings of shape {y.shape}, not (1, {v.query_num}, {v.embed_dim})")
    if not np.isfinite(y).all():
        raise InternalError(f"vision.onnx gave {int((~np.isfinite(y)).sum())} embedding values that are not finite")
    return {"slices": 1, "patches": VISION_PATCHES ** 2}
