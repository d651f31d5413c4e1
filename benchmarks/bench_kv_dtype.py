"""The ONNX KV cache's element type on the MiniCPM-2B shape: decode and prefill speed at a short and a long
context, edgepack's runtime and onnxruntime-genai, each artifact and engine in its own process.

    python benchmarks/bench_kv_dtype.py --artifact float32=DIR --artifact float16=DIR [--contexts 256,4096]
        [--runs 3] [--tokens 32] [--threads 2] [--out benchmarks/results/kv_dtype_2b.json]

The artifacts are the same export with different --kv-dtype (same int4 weights: the RTN packer is
deterministic). Every (artifact, engine) pair is an `edgepack bench` worker process (edgepack.bench._Worker:
the same engines, clocks and huge-page settling as `edgepack bench`), all loaded before anything is timed;
for each context, `--runs` rounds in which every worker runs once, the order reversed every other round.
A context C means a prompt of C - tokens synthetic ids (300, 301, ...) then `--tokens` new tokens, so the
decode steps read a cache of about C tokens. The first round of the first context is a warm-up, not
recorded (the workers are warm after it: a long context's prefill costs minutes per round).

The read bandwidth is probed (edgepack/bench/bandwidth.py) before the first and after the last round, while the
workers sit idle, and each decode figure is also given as a fraction of the bound it sets: bandwidth ÷
(weight bytes + KV bytes per token × cached tokens at mid-decode), with the best of the two probes.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = ("edgepack", "onnxruntime-genai")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", required=True, help="LABEL=DIR (an edgepack artifact with onnx)")
    ap.add_argument("--contexts", default="256,4096")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--long-runs", type=int, default=None, help="runs at contexts after the first (default: --runs)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kv_dtype_2b.json")
    a = ap.parse_args()

    from edgepack.bench.bandwidth import decode_bound_tok_s, read_bandwidth
    from edgepack.bench.worker import _Worker
    from edgepack.bench.machine import machine_info
    from edgepack.formats.manifest import find_artifact, kv_cache_bytes, kv_cache_dtype, read_manifest

    contexts = [int(c) for c in a.contexts.split(",")]
    arts = dict(x.split("=", 1) for x in a.artifact)
    log = lambda msg: print(f"[bench_kv_dtype] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    info, workers = {}, []
    for label, root in arts.items():
        m = read_manifest(root)
        onnx = find_artifact(m, "onnx")
        kv_dtype, per = kv_cache_dtype(onnx)
        data = sum(f["bytes"] for f in onnx["files"] if f["path"].endswith(".onnx.data"))
        info[label] = {"artifact": str(root), "kv_dtype": kv_dtype, "weight_bytes": data,
                       "kv_bytes_per_token": kv_cache_bytes(m["model"]["config"], 1, per),
                       "kv_bytes_at_4096": kv_cache_bytes(m["model"]["config"], 4096, per)}
        for engine in a.engines.split(","):
            spec = {"engine": engine, "backend": "onnx", "path": str(Path(root) / onnx["path"]), "root": str(root),
                    "threads": a.threads, "n_ctx": max(contexts), "artifact_bytes": data}
            log(f"loading {label} {engine}")
            w = _Worker(spec)
            w.loaded, w.key, w.runs = w.recv(log)["loaded"], f"{label}/{engine}", {}
            workers.append(w)
    machine = machine_info()
    probes = [read_bandwidth(a.threads)]
    log(f"read bandwidth {probes[0]['read_bytes_per_s'] / 1e9:.1f} GB/s")
    r = 0
    for ctx in contexts:
        ids = list(range(300, 300 + ctx - a.tokens))
        warmup = int(ctx == contexts[0])
        for k in range(warmup + (a.runs if warmup or a.long_runs is None else a.long_runs)):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                w.send({"ids": ids, "n": a.tokens})
                out = w.recv(log)["run"]
                fig = {"decode_tok_s": out["decode_steps"] / out["decode_s"], "prefill_tok_s": len(ids) / out["prefill_s"],
                       "ttft_s": out["ttft_s"]}
                log(f"ctx {ctx} run {k} {w.key}: decode {fig['decode_tok_s']:.2f} tok/s, prefill {fig['prefill_tok_s']:.1f} tok/s")
                if k >= warmup:
                    w.runs.setdefault(ctx, []).append(fig)
                time.sleep(0.2)
            r += 1
    for w in workers:
        w.done = w.quit(log)
    probes.append(read_bandwidth(a.threads))
    bw = max(p["read_bytes_per_s"] for p in probes)

    results = []
    for w in workers:
        label, engine = w.key.split("/", 1)
        for ctx, runs in w.runs.items():
            d = [x["decode_tok_s"] for x in runs]
            bound = decode_bound_tok_s(bw, info[label]["weight_bytes"], info[label]["kv_bytes_per_token"], ctx - a.tokens // 2)
            results.append({"artifact": label, "engine": engine, "context": ctx, "prompt_tokens": ctx - a.tokens,
                            "decode_tokens": a.tokens - 1, "decode_tok_s": statistics.median(d), "decode_samples": d,
                            "prefill_tok_s": statistics.median(x["prefill_tok_s"] for x in runs),
                            "prefill_samples": [x["prefill_tok_s"] for x in runs],
                            "ttft_s": statistics.median(x["ttft_s"] for x in runs),
                            "bound_tok_s": bound, "fraction_of_bound": statistics.median(d) / bound,
                            "peak_rss_bytes": w.done["peak_rss_bytes"]})
    by = {(x["artifact"], x["engine"], x["context"]): x for x in results}
    ratios = {}
    for (label, engine, ctx), x in by.items():  # every row against every other artifact's same engine, and genai
        for (l2, e2, c2), y in by.items():
            if c2 == ctx and (l2, e2) != (label, engine) and (e2 == engine or l2 == label or engine == "edgepack"):
                per_run = [p / q for p, q in zip(x["decode_samples"], y["decode_samples"])]
                ratios[f"ctx {ctx}: {label}/{engine} / {l2}/{e2}"] = {
                    "decode_median_of_runs": statistics.median(per_run),
                    "prefill_of_medians": x["prefill_tok_s"] / y["prefill_tok_s"]}
    report = {"benchmark": "kv_dtype", "command": " ".join(["python", *sys.argv]),
              "machine": dict(machine, load_average_at_end=list(os.getloadavg())),
              "settings": {"threads": a.threads, "runs": a.runs, "warmup_rounds": 1, "tokens": a.tokens,
                           "contexts": contexts, "synthetic_prompt": "ids 300..", "greedy": True,
                           "warmup": "one round before the first context's runs, not recorded",
                           "order": "all workers loaded first; each round every worker once, reversed every other round"},
              "read_bandwidth": {"bytes_per_s": bw, "probes": probes}, "artifacts": info,
              "results": results, "decode_ratios": ratios}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"read bandwidth {bw / 1e9:.1f} GB/s ({a.threads} threads)")
    for x in results:
        print(f"ctx {x['context']:5d} {x['artifact']:8s} {x['engine']:18s} decode {x['decode_tok_s']:6.2f} tok/s "
              f"({x['fraction_of_bound']:.2f} of {x['bound_tok_s']:.1f}), prefill {x['prefill_tok_s']:7.1f} tok/s")
    for k, v in ratios.items():
        print(f"{k}: decode {v['decode_median_of_runs']:.3f}x, prefill {v['prefill_of_medians']:.3f}x")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
