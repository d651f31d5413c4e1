"""How the KV buffer's capacity changes decode speed: OnnxBackend with a cache sized for the whole
context vs one sized for the generation (what `reserve(prompt + max_new_tokens)` does), against
onnxruntime-genai's own loop (which sizes its shared buffer from max_length), same graph, same run.

    python benchmarks/bench_kv_capacity.py ONNX_DIR [--rounds 4] [--tokens 32] [--threads 2]

Greedy argmax over synthetic prompt ids (64), `--tokens` decode steps timed after the first new token;
the engines take turns, the order reversed every other round. Writes benchmarks/results/kv_capacity.json.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
PROMPT = list(range(300, 364))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx_dir")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from bench_runtime import OrtGenai  # the same genai loop and clock as the runtime benchmark

    from edgepack.bench import machine_info
    from edgepack.runtime.onnx_backend import OnnxBackend

    n, total = a.tokens, len(PROMPT) + a.tokens + 1

    def ours(b, capacity):
        b.reset()
        b.reserve(capacity)
        t = int(np.argmax(b.forward(PROMPT)))
        t0 = time.perf_counter()
        for _ in range(n):
            t = int(np.argmax(b.forward([t])))
        return n / (time.perf_counter() - t0)

    genai = OrtGenai(a.onnx_dir, a.threads)
    full = OnnxBackend(a.onnx_dir, threads=a.threads)  # n_ctx = the graph's context length
    sized = OnnxBackend(a.onnx_dir, threads=a.threads, n_ctx=full.n_ctx)
    engines = {"ortgenai_max_length": lambda: genai.run(PROMPT, n)["decode_tok_s"],
               f"onnx_backend_capacity_{full.n_ctx}": lambda: ours(full, full.n_ctx),
               f"onnx_backend_capacity_{total}": lambda: ours(sized, total)}
    for f in engines.values():
        f()  # warm-up, not recorded
    raw = {k: [] for k in engines}
    for r in range(a.rounds):
        for k in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            raw[k].append(round(engines[k](), 3))
            print(r, k, raw[k][-1], file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in raw.items()}
    res = {"benchmark": "kv_capacity", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
           "onnx_dir": a.onnx_dir, "threads": a.threads, "prompt_tokens": len(PROMPT), "decode_tokens": n,
           "decode_tok_s_median": med, "samples": raw}
    out = ROOT / "results" / "kv_capacity.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(med, indent=2))


if __name__ == "__main__":
    main()
