"""Where a decode step's time goes: onnxruntime's own profiler on edgepack's OnnxBackend and on
onnxruntime-genai's loop, same ONNX folder, each in its own process (no load-order bias).

    python benchmarks/profile_decode.py ONNX_DIR [--tokens 32] [--threads 2]

For each engine: the median over decode steps of the session's model_run time, of the sum of its
kernels' times, and of the gap between consecutive runs (everything the loop does outside
onnxruntime: sampling, detokenizing, binding inputs). Writes benchmarks/results/profile_decode.json.
"""
import argparse
import collections
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
PROMPT = list(range(300, 364))


def run_ours(folder, prefix, tokens, threads):
    import numpy as np
    import onnxruntime as ort

    import edgepack.runtime.onnx_backend as ob

    make = ort.SessionOptions

    def profiled():
        so = make()
        so.enable_profiling, so.profile_file_prefix = True, prefix
        return so

    ort.SessionOptions = profiled  # the backend's own options, plus the profiler
    b = ob.OnnxBackend(folder, threads=threads)
    b.reserve(len(PROMPT) + tokens + 1)
    t = int(np.argmax(b.forward(PROMPT)))
    for _ in range(tokens):
        t = int(np.argmax(b.forward([t])))
    print(b.session.end_profiling())


def run_genai(folder, prefix, tokens, threads):
    import onnxruntime_genai as og

    cfg = og.Config(folder)
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"enable_profiling": prefix,
                                                                      "intra_op_num_threads": threads}}}}))
    m = og.Model(cfg)
    p = og.GeneratorParams(m)
    total = len(PROMPT) + tokens + 1
    p.set_search_options(do_sample=False, max_length=total, min_length=total)
    g = og.Generator(m, p)
    g.append_tokens([PROMPT])
    for _ in range(tokens + 1):
        g.generate_next_token()
    del g, m  # the profile file is written when the session closes


def summarize(path, tokens):
    ev = json.loads(Path(path).read_text())
    runs = [e for e in ev if e.get("name") == "model_run"][-tokens:]  # the decode steps
    nodes = [e for e in ev if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernel, per_op = [], collections.Counter()
    for r in runs:
        inside = [n for n in nodes if r["ts"] <= n["ts"] <= r["ts"] + r["dur"]]
        kernel.append(sum(n["dur"] for n in inside))
        for n in inside:
            per_op[n["args"].get("op_name", "?")] += n["dur"]
    gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(runs, runs[1:])]
    return {"decode_steps": len(runs), "model_run_ms": statistics.median(r["dur"] for r in runs) / 1e3,
            "kernels_ms": statistics.median(kernel) / 1e3, "gap_between_runs_ms": statistics.median(gaps) / 1e3,
            "per_op_ms_per_step": {k: round(v / len(runs) / 1e3, 3) for k, v in per_op.most_common()}}


def main():
    if sys.argv[1:2] == ["_run"]:
        engine, folder, prefix, tokens, threads = sys.argv[2:7]
        return (run_ours if engine == "onnx_backend" else run_genai)(folder, prefix, int(tokens), int(threads))
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx_dir")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from edgepack.bench import machine_info

    res = {"benchmark": "profile_decode", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
           "onnx_dir": a.onnx_dir, "threads": a.threads, "prompt_tokens": len(PROMPT), "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("onnx_backend", "ortgenai"):
            prefix = str(Path(tmp) / engine)
            subprocess.run([sys.executable, __file__, "_run", engine, a.onnx_dir, prefix, str(a.tokens), str(a.threads)],
                           check=True, capture_output=True)
            (path,) = Path(tmp).glob(engine + "*.json")
            res["engines"][engine] = summarize(path, a.tokens)
    out = ROOT / "results" / "profile_decode.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("model_run_ms", "kernels_ms", "gap_between_runs_ms")}
                      for k, v in res["engines"].items()}, indent=2))


if __name__ == "__main__":
    main()
