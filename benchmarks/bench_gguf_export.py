"""GGUF export benchmark: memory and time of edgepack's export, llama.cpp speed of the result.

    python benchmarks/bench_gguf_export.py 2b   [--ckpt DIR] [--work DIR] [--reps 3]
    python benchmarks/bench_gguf_export.py demo [--work DIR]

2b: on the MiniCPM-2B-shaped random checkpoint (benchmarks/make_minicpm_2b.py, built if missing):
  - edgepack's Q4_0 GGUF export in a child process under /usr/bin/time -v (peak RSS, wall time);
  - llama.cpp prefill/decode speed of that file vs a Q4_0 file of the same shape written directly
    with the gguf package (/work/shared/anchors/make_q4_0_gguf_2b.py), both measured by the same
    anchor script (anchors/decode_llamacpp.py, 2 threads), alternated, in the same run; ratios
    are what to read (the 2-core machine is shared and drifts).
demo: Q4_0 vs Q4_K_M on the demo model: fidelity against the float reference (perplexity, top-1,
  mean KL on the first 2048 tokens of edgepack.texts.eval_text()), file size, and llama.cpp decode
  speed through edgepack's GGUFBackend (the figures behind gguf_writer.DEFAULT_GGUF_TYPE).

Not timed: tokenization, sampling. Inputs of the 2b run are random weights: text is meaningless.
llama.cpp runs with extra buffer types off on this CPU (see gguf_backend.use_extra_buffer_types:
its AMX path segfaults here), for both files alike.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
ANCHORS = Path(os.environ.get("EDGEPACK_ANCHORS", "/work/shared/anchors"))
RESULTS = ROOT / "benchmarks" / "results"

# Runs the anchor script unchanged, with llama.cpp's extra buffer types off (AMX crash, see above).
_ANCHOR_RUNNER = """
import runpy, sys, llama_cpp
from edgepack.runtime.gguf_backend import use_extra_buffer_types
_default = llama_cpp.llama_model_default_params
def _params():
    p = _default(); p.use_extra_bufts = use_extra_buffer_types(); return p
llama_cpp.llama_model_default_params = _params
import llama_cpp.llama as _l; _l.llama_cpp.llama_model_default_params = _params
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def machine():
    from importlib.metadata import version

    from machine import machine_info

    m = machine_info()
    m["versions"]["gguf"] = version("gguf")
    return m


def timed(cmd, **kw):
    """Run cmd under /usr/bin/time -v: (stdout, peak RSS bytes, wall seconds)."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{r.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return r.stdout, rss, wall


def export_child(ckpt, out, gguf_type):
    """Child-process entry: one export, nothing else in memory."""
    from edgepack.checkpoint import load
    from edgepack.gguf_writer import write_gguf

    Path(out).mkdir(parents=True, exist_ok=True)
    print(json.dumps(write_gguf(load(ckpt), Path(out), gguf_type=gguf_type, threads=2)))


def anchor_speed(path, threads=2):
    r = subprocess.run([sys.executable, "-c", _ANCHOR_RUNNER, str(ANCHORS / "decode_llamacpp.py"), str(path), str(threads)],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"decode_llamacpp.py {path} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    num = lambda key: float(re.search(key + r" ([\d.]+)", r.stdout).group(1))  # noqa: E731
    return {"load_s": num("load_s"), "prefill_tok_s": num("prefill64 tok/s"), "decode_tok_s": num("decode tok/s")}


def summary(xs):
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3), "samples": xs}


def bench_2b(args):
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.ckpt or work / "minicpm-2b")
    if not (ckpt / "config.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_minicpm_2b.py"), str(ckpt)], check=True)
    anchor = work / "anchor-2b-q4_0.gguf"
    if not anchor.is_file():
        subprocess.run([sys.executable, str(ANCHORS / "make_q4_0_gguf_2b.py"), str(anchor)], check=True)

    out = work / "edgepack-2b-q4_0"
    for f in out.glob("*"):
        f.unlink()
    stdout, rss, wall = timed([sys.executable, __file__, "_export", str(ckpt), str(out), "q4_0"], cwd=ROOT)
    info = json.loads(stdout.strip().splitlines()[-1])
    ours = out / info["file"]
    print(f"export: peak RSS {rss / 2**30:.2f} GiB, {wall:.1f} s, {ours.stat().st_size / 2**30:.2f} GiB", flush=True)

    runs = {"edgepack": [], "anchor": []}
    if args.warmup:
        anchor_speed(ours, args.threads)  # not recorded (page cache, first mmap)
        anchor_speed(anchor, args.threads)
    for i in range(args.reps):  # alternate so drift hits both alike
        for name, path in (("edgepack", ours), ("anchor", anchor)):
            runs[name].append(anchor_speed(path, args.threads))
            print(name, runs[name][-1], flush=True)
    speed = {n: {k: summary([r[k] for r in rs]) for k in ("prefill_tok_s", "decode_tok_s", "load_s")} for n, rs in runs.items()}
    result = {
        "benchmark": "gguf_export_2b",
        "command": "python benchmarks/bench_gguf_export.py " + " ".join(sys.argv[1:]),
        "checkpoint": "MiniCPM-2B shape, random bf16 weights (benchmarks/make_minicpm_2b.py)",
        "export": {"gguf_type": "q4_0", "peak_rss_bytes": rss, "peak_rss_gib": round(rss / 2**30, 3),
                   "wall_s": round(wall, 1), "file_bytes": ours.stat().st_size, "quantization": info["quantization"],
                   "target_peak_rss_bytes": 4 * 10**9},
        "anchor_file_bytes": anchor.stat().st_size,
        "llama_cpp": {"threads": args.threads, "script": "anchors/decode_llamacpp.py (prefill 64, decode 64)",
                      "extra_buffer_types": False, "reps": args.reps, "warmup": args.warmup, **speed},
        "ratio_edgepack_over_anchor": {
            k: round(speed["edgepack"][k]["median"] / speed["anchor"][k]["median"], 3) for k in ("prefill_tok_s", "decode_tok_s")},
        "machine": machine(),
    }
    write(result, "gguf_export_2b.json")


def bench_demo(args):
    from edgepack import fidelity
    from edgepack.checkpoint import load
    from edgepack.gguf_writer import write_gguf
    from edgepack.runtime.gguf_backend import GGUFBackend
    from edgepack.tokenizer import load_tokenizer

    ckpt = load("demo")
    tok = load_tokenizer(ckpt.path, bos_id=ckpt.config.bos_token_id, eos_ids=list(ckpt.config.eos_token_ids))
    ids = fidelity.eval_ids(tok)
    ref = fidelity.reference_logits(ckpt, ids)
    rows, paths = [], {}
    for t in ("q4_0", "q4_k_m"):
        out = Path(args.work) / f"demo-{t}"
        out.mkdir(parents=True, exist_ok=True)
        for f in out.glob("*"):
            f.unlink()
        t0 = time.perf_counter()
        info = write_gguf(ckpt, out, gguf_type=t, threads=2)
        export_s = time.perf_counter() - t0
        paths[t] = path = out / info["file"]
        with GGUFBackend(path, threads=2) as be:
            fid = fidelity.compare(ref, fidelity.backend_logits(be, ids), ids)
        rows.append({"gguf_type": t, "file_bytes": path.stat().st_size, "export_s": round(export_s, 2),
                     "quantization": info["quantization"], "fidelity": fid})
        print(json.dumps(rows[-1]), flush=True)
    # decode: 1 thread (2 llama.cpp threads on this shared 2-core box collapse to ~1 tok/s whenever
    # another process runs: their barrier spin-waits), files alternated, 64-token prompt, 48 tokens
    speed = {t: [] for t in paths}
    for _ in range(3):
        for t, path in paths.items():
            with GGUFBackend(path, threads=1) as be:
                be.forward(ids[:64])
                t0 = time.perf_counter()
                for k in range(48):
                    be.forward([ids[64 + k]])
                speed[t].append(round(48 / (time.perf_counter() - t0), 2))
    for row in rows:
        row["decode_tok_s_1_thread"] = summary(speed[row["gguf_type"]])
    write({"benchmark": "gguf_types_demo", "command": "python benchmarks/bench_gguf_export.py " + " ".join(sys.argv[1:]),
           "model": "demo (SmolLM2-135M-Instruct in MiniCPM form)", "results": rows,
           "machine": machine()}, "gguf_types_demo.json")


def write(result, name):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_export":
        return export_child(*sys.argv[2:5])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["2b", "demo"])
    ap.add_argument("--ckpt", help="MiniCPM-2B-shaped checkpoint (default WORK/minicpm-2b, built if missing)")
    ap.add_argument("--work", default="/tmp/bench", help="scratch directory (~8 GB for 2b)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (the anchor's figure used 2)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    args = ap.parse_args()
    bench_2b(args) if args.part == "2b" else bench_demo(args)


if __name__ == "__main__":
    main()
