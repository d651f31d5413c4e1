"""Decode levers on the MiniCPM-2B shape, each variant an `edgepack bench` worker in its own process, against
onnxruntime-genai on the same graph: graph variants (gate|up fused, int4 block size: separate exports),
onnxruntime's thread spinning, the huge-page collapse.

    python benchmarks/bench_decode_levers.py --variant base=DIR --variant fused=DIR,spin=0 ... \\
        [--genai LABEL=DIR ...] [--context 256] [--runs 5] [--tokens 32] [--threads 2] [--out FILE]

A variant is LABEL=ARTIFACT_DIR[,spin=0|1][,huge_pages=0|1]: edgepack's runtime (the same engine class,
clock and huge-page settling as `edgepack bench`) over that artifact's ONNX folder, with
session.intra_op.allow_spinning set as given (onnxruntime's default is 1) and OnnxBackend's huge-page
collapse on or off. The settings reach the worker through this script's own sitecustomize (a temporary
directory put first on PYTHONPATH for that worker): nothing in edgepack reads them. `--genai DIR` adds
onnxruntime-genai on that artifact's ONNX folder (its default spinning; repeatable, the first is the
peer of the vs_genai ratios). All workers are loaded first; then
`--runs` rounds (after one warm-up round) in which every worker runs once, in reverse order every other
round; ratios are medians of per-round ratios against the first variant and against genai. The read
bandwidth is probed before and after (edgepack/bench/bandwidth.py) and decode is given as a fraction of its bound.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SITE = '''
import os
spin, huge = os.environ.get("LEVER_SPIN"), os.environ.get("LEVER_HUGE_PAGES")
if spin is not None:
    import onnxruntime as ort
    _SO = ort.SessionOptions
    class SessionOptions(_SO):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_session_config_entry("session.intra_op.allow_spinning", spin)
    ort.SessionOptions = SessionOptions
if huge is not None:
    import edgepack.runtime.onnx_backend as ob
    _init = ob.OnnxBackend.__init__
    def __init__(self, folder, threads=None, n_ctx=None, huge_pages=True, _h=huge == "1"):
        _init(self, folder, threads=threads, n_ctx=n_ctx, huge_pages=_h)
    ob.OnnxBackend.__init__ = __init__
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--genai", action="append", default=[], help="LABEL=DIR: onnxruntime-genai on that artifact's ONNX folder")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_levers_2b.json")
    a = ap.parse_args()

    from edgepack.bench.bandwidth import decode_bound_tok_s, read_bandwidth
    from edgepack.bench.worker import _Worker
    from edgepack.bench.machine import machine_info
    from edgepack.formats.manifest import find_artifact, kv_cache_bytes, kv_cache_dtype, read_manifest

    log = lambda msg: print(f"[levers] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    site = tempfile.mkdtemp(prefix="levers-site-")
    Path(site, "sitecustomize.py").write_text(SITE)
    variants = []
    for v in a.variant:
        label, rest = v.split("=", 1)
        root, *opts = rest.split(",")
        variants.append({"label": label, "engine": "edgepack", "root": root, **dict(o.split("=") for o in opts)})
    for g in a.genai:
        label, root = g.split("=", 1)
        variants.append({"label": label, "engine": "onnxruntime-genai", "root": root})
    workers, env0 = [], dict(os.environ)
    for v in variants:
        m = read_manifest(v["root"])
        onnx = find_artifact(m, "onnx")
        v["weight_bytes"] = sum(f["bytes"] for f in onnx["files"] if f["path"].endswith(".onnx.data"))
        v["kv_bytes_per_token"] = kv_cache_bytes(m["model"]["config"], 1, kv_cache_dtype(onnx)[1])
        v["quantization"] = onnx.get("quantization")
        os.environ.clear()
        os.environ.update(env0)
        if v["engine"] == "edgepack":
            os.environ["PYTHONPATH"] = os.pathsep.join([site, str(ROOT), env0.get("PYTHONPATH", "")])
            for key, env in (("spin", "LEVER_SPIN"), ("huge_pages", "LEVER_HUGE_PAGES")):
                if key in v:
                    os.environ[env] = v[key]
        spec = {"engine": v["engine"], "backend": "onnx", "path": str(Path(v["root"]) / onnx["path"]), "root": v["root"],
                "threads": a.threads, "n_ctx": a.context, "artifact_bytes": v["weight_bytes"]}
        log(f"loading {v['label']}")
        w = _Worker(spec)
        w.v, w.loaded, w.runs = v, w.recv(log)["loaded"], []
        workers.append(w)
    os.environ.clear()
    os.environ.update(env0)
    machine = machine_info()
    probes = [read_bandwidth(a.threads)]
    ids = list(range(300, 300 + a.context - a.tokens))
    for r in range(a.runs + 1):
        for w in (workers if r % 2 == 0 else workers[::-1]):
            w.send({"ids": ids, "n": a.tokens})
            out = w.recv(log)["run"]
            fig = {"decode_tok_s": out["decode_steps"] / out["decode_s"], "prefill_tok_s": len(ids) / out["prefill_s"]}
            log(f"round {r} {w.v['label']}: decode {fig['decode_tok_s']:.2f} tok/s, prefill {fig['prefill_tok_s']:.1f}")
            if r:
                w.runs.append(fig)
            time.sleep(0.2)
    for w in workers:
        w.done = w.quit(log)
    probes.append(read_bandwidth(a.threads))
    bw = max(p["read_bytes_per_s"] for p in probes)
    base, genai = workers[0], next((w for w in workers if w.v["engine"] == "onnxruntime-genai"), None)
    results = []
    for w in workers:
        d = [x["decode_tok_s"] for x in w.runs]
        bound = decode_bound_tok_s(bw, w.v["weight_bytes"], w.v["kv_bytes_per_token"], len(ids) + a.tokens // 2)
        row = {**{k: w.v[k] for k in w.v}, "decode_tok_s": statistics.median(d), "decode_samples": d,
               "prefill_tok_s": statistics.median(x["prefill_tok_s"] for x in w.runs),
               "bound_tok_s": bound, "fraction_of_bound": statistics.median(d) / bound, "detail": w.done.get("detail")}
        for name, other in (("vs_first", base), ("vs_genai", genai)):
            if other is not None and other is not w:
                row[name] = {"decode": statistics.median(x["decode_tok_s"] / y["decode_tok_s"] for x, y in zip(w.runs, other.runs)),
                             "prefill": statistics.median(x["prefill_tok_s"] / y["prefill_tok_s"] for x, y in zip(w.runs, other.runs))}
        results.append(row)
    report = {"benchmark": "decode_levers", "command": " ".join(["python", *sys.argv]),
              "machine": dict(machine, load_average_at_end=list(os.getloadavg())),
              "settings": {"threads": a.threads, "context": a.context, "prompt_tokens": len(ids), "tokens": a.tokens,
                           "runs": a.runs, "warmup_rounds": 1, "synthetic_prompt": "ids 300.."},
              "read_bandwidth": {"bytes_per_s": bw, "probes": probes}, "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"read bandwidth {bw / 1e9:.1f} GB/s ({a.threads} threads); load average {os.getloadavg()[0]:.1f}")
    for x in results:
        rel = " ".join(f"{k} {x[k]['decode']:.3f}x (prefill {x[k]['prefill']:.3f}x)" for k in ("vs_first", "vs_genai") if k in x)
        print(f"{x['label']:22s} decode {x['decode_tok_s']:6.2f} tok/s = {x['fraction_of_bound']:.2f} of {x['bound_tok_s']:.1f}; "
              f"prefill {x['prefill_tok_s']:6.1f}  {rel}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
