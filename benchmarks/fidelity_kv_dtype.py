"""Demo-model fidelity of ONNX artifacts that differ only in their KV cache type, at the export's window
(2048 tokens) and at a long context (one window of `--long` tokens, past edgepack.fidelity's 2048 cap).

    python benchmarks/fidelity_kv_dtype.py --artifact float32=DIR --artifact float16=DIR [--long 8192]
    python benchmarks/fidelity_kv_dtype.py --export-demo DIR     # first export the demo model (default
                                                                 # method) with each KV type into DIR

Each artifact is scored against the same float reference logits (edgepack.fidelity: the reference
forward streamed layer by layer, the held-out pydoc text) with edgepack's OnnxBackend, and against the
other artifact directly (teacher-forced agreement, fidelity.agreement). Writes
benchmarks/results/fidelity_kv_dtype.json.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _agreement(agreement, ref, got, rows=512):
    """fidelity.agreement over lists of (T, V) windows, in blocks of rows: one 8192-token window's
    float64 temporaries of the whole (T, V) would need ~20 GB."""
    import numpy as np

    n = clear = bad = 0
    top1 = kl = num = den = 0.0
    max_err = 0.0
    for r, g in zip(ref, got):
        for lo in range(0, len(r), rows):
            a = agreement(r[lo:lo + rows], g[lo:lo + rows])
            k = a["positions"]
            n, clear, bad = n + k, clear + a["clear"], bad + a["clear_disagreements"]
            top1, kl = top1 + a["top1"] * k, kl + a["mean_kl"] * k
            num += float(np.square(r[lo:lo + rows].astype(np.float64) - g[lo:lo + rows]).sum())
            den += float(np.square(r[lo:lo + rows].astype(np.float64)).sum())
            max_err = max(max_err, a["max_abs_err"])
    return {"positions": n, "rel_err": (num / den) ** 0.5, "max_abs_err": max_err, "top1": top1 / n, "margin": a["margin"],
            "clear": clear, "clear_disagreements": bad, "mean_kl": kl / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", action="append", default=[], help="LABEL=DIR")
    ap.add_argument("--export-demo", type=Path, help="export the demo with --kv-dtype float32 and float16 into this folder "
                    "(one calibration for both: quant.shared_calibration) and compare those")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--long", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity_kv_dtype.json")
    a = ap.parse_args()

    from edgepack.bench import machine_info
    from edgepack.checkpoint import load
    from edgepack.fidelity import agreement, backend_logits, compare, eval_ids, eval_windows, reference_logits
    from edgepack.manifest import find_artifact, kv_cache_dtype, read_manifest
    from edgepack.runtime.onnx_backend import OnnxBackend
    from edgepack.tokenizer import load_tokenizer

    arts = dict(x.split("=", 1) for x in a.artifact)
    if a.export_demo:
        from edgepack import quant
        from edgepack.export import export

        with quant.shared_calibration():
            for kv in ("float32", "float16"):
                out = a.export_demo / f"demo-int4-kv-{kv}"
                if not (out / "edgepack.json").is_file():
                    t = time.perf_counter()
                    export(model="demo", out=out, formats=("onnx",), kv_dtype=kv, threads=a.threads, fidelity_tokens=a.tokens)
                    print(f"[fidelity_kv_dtype] exported {out} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
                arts[kv] = str(out)
    m0 = read_manifest(next(iter(arts.values())))
    ckpt = load(m0["model"]["source_path"])
    tok = load_tokenizer(ckpt.path, bos_id=ckpt.config.bos_token_id, eos_ids=ckpt.config.eos_token_ids)
    sets = {f"windows of {min(a.tokens, 2048)} ({a.tokens} tokens)": eval_windows(tok, a.tokens, ckpt.config.max_position_embeddings),
            f"one window of {a.long}": [eval_ids(tok, a.long)]}
    report = {"benchmark": "fidelity_kv_dtype", "command": " ".join(["python", *sys.argv]), "machine": machine_info(),
              "model": m0["model"]["name"], "artifacts": {}, "results": {}}
    for label, root in arts.items():
        onnx = find_artifact(read_manifest(root), "onnx")
        report["artifacts"][label] = {"path": str(root), "kv_dtype": kv_cache_dtype(onnx)[0],
                                      "quantization": onnx.get("quantization"), "export_fidelity": onnx.get("fidelity")}
    for name, ids in sets.items():
        t = time.perf_counter()
        ref = reference_logits(ckpt, ids)
        print(f"[fidelity_kv_dtype] reference for {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        logits, row = {}, {}
        for label, root in arts.items():
            onnx = find_artifact(read_manifest(root), "onnx")
            with OnnxBackend(Path(root) / onnx["path"], threads=a.threads, n_ctx=max(map(len, ids)), huge_pages=False) as b:
                logits[label] = backend_logits(b, ids)
            row[label] = compare(ref, logits[label], ids)
            print(f"[fidelity_kv_dtype] {name} {label}: {row[label]}", file=sys.stderr, flush=True)
        labels = list(arts)
        for x, y in zip(labels, labels[1:]):
            row[f"{y} vs {x}"] = _agreement(agreement, logits[x], logits[y])
        report["results"][name] = row
        del ref, logits
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in report["results"].items():
        for label, r in row.items():
            if "ppl" in r:
                print(f"{name:36s} {label:10s} ppl {r['ppl']:.3f} (float {r['float_ppl']:.3f}, {r['ppl_increase_pct']:+.2f}%) "
                      f"top-1 {100 * r['top1_agreement']:.2f}% KL {r['mean_kl']:.5f}")
            else:
                print(f"{name:36s} {label}: top-1 {100 * r['top1']:.2f}%, rel err {r['rel_err']:.2e}, "
                      f"clear disagreements {r['clear_disagreements']}/{r['clear']}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
