"""Where a decode step's time goes: onnxruntime's own profiler on edgepack's OnnxBackend and on
onnxruntime-genai's loop, same ONNX folder, each in its own process (no load-order bias).

    python benchmarks/profile_decode.py ONNX_DIR [--tokens 32] [--threads 2] [--engines onnx_backend,ortgenai]
        [--out benchmarks/results/profile_decode.json]

For each engine: the median over decode steps of the session's model_run time, of the sum of its
kernels' times, and of the gap between consecutive runs (everything the loop does outside
onnxruntime: sampling, detokenizing, binding inputs); per op type, and per MatMulNBits role (qkv, o,
gate, up, gate_up, down, lm_head) with the weight bytes it reads and the read rate that implies (bytes
÷ kernel time), beside the read bandwidth probed in the same run (edgepack/bandwidth.py): a role far below
the probe is compute-bound, not memory-bound. Writes benchmarks/results/profile_decode.json.
"""
import argparse
import collections
import json
import os
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


ROLES = ("qkv_proj", "o_proj", "gate_up_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def role(name):
    return next((r for r in ROLES if r in name), None)


def weight_bytes_by_role(folder):
    """Bytes of the MatMulNBits weights + scales (+ zero points) each role reads per step, all layers."""
    import onnx

    g = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False).graph
    size = {t.name: int(next((e.value for e in t.external_data if e.key == "length"), len(t.raw_data))) for t in g.initializer}
    out = collections.Counter()
    for n in g.node:
        if n.op_type == "MatMulNBits" and role(n.name):
            out[role(n.name)] += sum(size.get(i, 0) for i in n.input[1:])
    return dict(out)


def summarize(path, tokens):
    ev = json.loads(Path(path).read_text())
    runs = [e for e in ev if e.get("name") == "model_run"][-tokens:]  # the decode steps
    nodes = [e for e in ev if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernel, per_op, per_role = [], collections.Counter(), collections.Counter()
    for r in runs:
        inside = [n for n in nodes if r["ts"] <= n["ts"] <= r["ts"] + r["dur"]]
        kernel.append(sum(n["dur"] for n in inside))
        for n in inside:
            per_op[n["args"].get("op_name", "?")] += n["dur"]
            if n["args"].get("op_name") == "MatMulNBits" and role(n["name"]):
                per_role[role(n["name"])] += n["dur"]
    gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(runs, runs[1:])]
    return {"decode_steps": len(runs), "model_run_ms": statistics.median(r["dur"] for r in runs) / 1e3,
            "kernels_ms": statistics.median(kernel) / 1e3, "gap_between_runs_ms": statistics.median(gaps) / 1e3,
            "per_op_ms_per_step": {k: round(v / len(runs) / 1e3, 3) for k, v in per_op.most_common()},
            "matmulnbits_ms_per_step": {k: round(v / len(runs) / 1e3, 3) for k, v in per_role.most_common()}}


def main():
    if sys.argv[1:2] == ["_run"]:
        engine, folder, prefix, tokens, threads = sys.argv[2:7]
        return (run_ours if engine == "onnx_backend" else run_genai)(folder, prefix, int(tokens), int(threads))
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx_dir")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="onnx_backend,ortgenai")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "profile_decode.json")
    a = ap.parse_args()
    from edgepack.bandwidth import read_bandwidth
    from edgepack.bench import machine_info

    res = {"benchmark": "profile_decode", "command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": machine_info(), "onnx_dir": a.onnx_dir, "threads": a.threads, "prompt_tokens": len(PROMPT),
           "read_bandwidth": read_bandwidth(a.threads), "weight_bytes_by_role": weight_bytes_by_role(a.onnx_dir), "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in a.engines.split(","):
            prefix = str(Path(tmp) / engine)
            subprocess.run([sys.executable, __file__, "_run", engine, a.onnx_dir, prefix, str(a.tokens), str(a.threads)],
                           check=True, capture_output=True)
            (path,) = Path(tmp).glob(engine + "*.json")
            res["engines"][engine] = s = summarize(path, a.tokens)
            s["matmulnbits_read_GB_s"] = {k: round(res["weight_bytes_by_role"][k] / (v / 1e3) / 1e9, 2)
                                          for k, v in s["matmulnbits_ms_per_step"].items() if v}
    res["machine"]["load_average_at_end"] = list(os.getloadavg())
    out = a.out
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("model_run_ms", "kernels_ms", "gap_between_runs_ms", "matmulnbits_ms_per_step",
                                            "matmulnbits_read_GB_s")} for k, v in res["engines"].items()}, indent=2))
    print(f"read bandwidth probe: {res['read_bandwidth']['read_bytes_per_s'] / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
