"""The process `edgepack check-arm` runs on each CPU: edgepack's OnnxBackend over token ids, in whichever
Python runs it (the arm64 root under qemu, or the host with the same onnxruntime release). It imports
numpy, onnxruntime (or llama_cpp for a GGUF job) and edgepack.runtime's backend only: the host tokenizes and scores.

    python -m edgepack.check_arm_worker JOB.json OUT_DIR

JOB: {"onnx": folder (or "gguf": file), "threads": n, "n_ctx": n, "windows": [[ids]], "prompts": [[ids]], "n_new": n,
      "eos": [ids], "forced": [[tokens]] or null}
OUT_DIR receives window<k>.npy (every logit of evaluation window k), prompt<k>.npy (the logits each
answer token is chosen from: teacher-forced on forced[k] when given, else the worker's own greedy
answer) and result.json (versions, machine, the CPU features in the auxiliary vector, each prompt's
free-running greedy answer, which stops at eos or after n_new tokens).
"""
import json
import platform
import sys
from pathlib import Path

import numpy as np

from .arm64root import hwcap_features


def answer(backend, ids, n_new, eos, forced=None):
    """(tokens, logits) of one chat answer: greedy, or teacher-forced on `forced`."""
    backend.reset()
    tokens, logits, step = [], [], backend.forward(ids)
    while len(tokens) < (n_new if forced is None else len(forced)):
        logits.append(np.array(step, np.float32))
        tokens.append(int(np.argmax(step)) if forced is None else int(forced[len(tokens)]))
        if forced is None and tokens[-1] in eos:
            break
        step = backend.forward([tokens[-1]])
    return tokens, np.stack(logits)


def open_backend(job):
    """(backend, {"engine": name and version, "onnxruntime": version for ONNX}): OnnxBackend for job["onnx"], or GGUFBackend (llama.cpp) for job["gguf"]."""
    if job.get("gguf"):
        import llama_cpp

        from .runtime.gguf_backend import GGUFBackend

        return GGUFBackend(job["gguf"], threads=job["threads"], n_ctx=job["n_ctx"]), {
            "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"}
    import onnxruntime

    from .runtime.onnx_backend import OnnxBackend

    return OnnxBackend(job["onnx"], threads=job["threads"], n_ctx=job["n_ctx"], huge_pages=False), {
        "engine": f"onnxruntime {onnxruntime.__version__}", "onnxruntime": onnxruntime.__version__}


def main(job_file, out_dir):
    job, out = json.loads(Path(job_file).read_text(encoding="utf-8")), Path(out_dir)
    eos, forced = set(job["eos"]), job.get("forced") or [None] * len(job["prompts"])
    backend, engine = open_backend(job)
    free = []
    try:
        for k, ids in enumerate(job["windows"]):
            backend.reset()
            np.save(out / f"window{k}.npy", np.asarray(backend.forward(ids, all_logits=True), np.float32))
        for k, ids in enumerate(job["prompts"]):
            tokens, logits = answer(backend, ids, job["n_new"], eos, forced[k])
            np.save(out / f"prompt{k}.npy", logits)
            if forced[k] is not None:
                tokens, _ = answer(backend, ids, len(forced[k]), eos)
            free.append(tokens)
    finally:
        backend.close()
    try:
        features = hwcap_features(Path("/proc/self/auxv").read_bytes()) if platform.machine() == "aarch64" else []
    except OSError:
        features = []
    result = {**engine, "numpy": np.__version__, "machine": platform.machine(),
              "python": platform.python_version(), "features": features, "free_running": free}
    (out / "result.json").write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
