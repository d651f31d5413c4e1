"""Fidelity of each int4 method on the demo model, with fake quantization through the float reference.

    python benchmarks/quant_methods.py [METHOD ...]      (default: every method in edgepack.quant)

Each method quantizes the demo checkpoint (calibrated ones on texts.calibration_text()), the float
reference runs on the dequantized weights (edgepack.fidelity.reference_logits(weights=...)) over the
first 2048 tokens of texts.eval_text(), and fidelity.compare scores it against the float logits.
Size is the bytes of quantized weights (codes + fp32 scales + packed zero points; norms fp32) as
MatMulNBits stores them, relative to plain symmetric RTN. Results merge into
benchmarks/results/quant_methods.json (one record per method, rerunnable one method at a time).
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "quant_methods.json"
REF_CACHE = Path(os.environ.get("EDGEPACK_REF_CACHE", "/tmp/edgepack-demo-ref-2048.npy"))


def machine():
    import torch

    from edgepack.bench.machine import machine_info

    return dict(machine_info(), torch_threads=torch.get_num_threads())


def main(names):
    import torch

    from edgepack import fidelity
    from edgepack.quant import methods
    from edgepack.model.checkpoint import load
    from edgepack.model.tokenizer import load_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("EDGEPACK_THREADS", "1")))  # small ops dominate; the 2 cores are shared
    ckpt = load("demo")
    c = ckpt.config
    tok = load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)
    ids = fidelity.eval_ids(tok, 2048)
    if REF_CACHE.is_file():
        ref = np.load(REF_CACHE)
    else:
        ref = fidelity.reference_logits(ckpt, ids)
        np.save(REF_CACHE, ref)
    results = json.loads(OUT.read_text())["results"] if OUT.is_file() else {}
    rtn_bytes = methods.size_bytes(methods.quantize_model(ckpt, "rtn"))
    n_weights = sum(int(np.prod(ckpt.shape(n))) for n in ckpt.names)
    for name in names:
        t0 = time.time()
        q = methods.quantize_model(ckpt, name, tokenizer=tok)
        calib_s = time.time() - t0
        logits = fidelity.reference_logits(ckpt, ids, weights=q.weight)
        fid = fidelity.compare(ref, logits, ids)
        size = methods.size_bytes(q)
        r = {"method": name, "description": q.method.describe, "ppl": fid["ppl"], "float_ppl": fid["float_ppl"],
             "ppl_increase_pct": fid["ppl_increase_pct"], "top1_agreement": fid["top1_agreement"],
             "mean_kl": round(float(fid["mean_kl"]), 6), "bits_per_weight": round(8 * size / n_weights, 3),
             "size_vs_rtn": round(size / rtn_bytes, 4), "quantize_s": round(calib_s, 1), "calibration": q.info["calibration"]}
        results[name] = r
        print(json.dumps(r), flush=True)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps({"machine": machine(), "eval": {"text": fid["eval_text"], "tokens": fid["tokens"]},
                                   "results": results}, indent=2) + "\n")


LONG_EVAL = 8192  # tokens for the second, finer figure: 4 windows of 2048 (the demo's eval text has 10,553)


def record_exports(default_dir, rtn_dir, out=ROOT / "results" / "quant_export_demo.json"):
    """Real artifacts: `edgepack export` with the default methods vs `--method rtn`, fidelity measured by
    the runtimes themselves (onnxruntime, llama.cpp), sizes from the manifests' file lists. The export
    prints its figure on 2048 tokens; `edgepack verify --tokens 8192` adds one on four times as many."""
    from edgepack.verify import verify

    def load(d):
        return json.loads((Path(d) / "edgepack.json").read_text())

    rtn = {a["format"]: a for a in load(rtn_dir)["artifacts"]}
    long = {r["format"]: r["fidelity"] for r in verify(default_dir, tokens=LONG_EVAL, threads=2)["artifacts"]}
    rows = []
    for a in load(default_dir)["artifacts"]:
        size, base = (sum(f["bytes"] for f in x["files"]) for x in (a, rtn[a["format"]]))
        f = a["fidelity"]
        rows.append({"format": a["format"], "path": a["path"], "method": a["quantization"]["method"],
                     "quantization": a["quantization"], "fidelity": f, f"fidelity_{LONG_EVAL}": long[a["format"]],
                     "bytes": size, "rtn_bytes": base,
                     "size_vs_rtn": round(size / base, 4),
                     "acceptance": {"ppl_increase_pct<=10": f["ppl_increase_pct"] <= 10, "top1>=0.80": f["top1_agreement"] >= 0.8,
                                    "size_vs_rtn<=1.15": size / base <= 1.15}})
    out.write_text(json.dumps({"machine": machine(), "commands": [
        f"edgepack export --model demo --out {default_dir} --threads 2",
        f"edgepack export --model demo --out {rtn_dir} --method rtn --fidelity-tokens 0 --threads 2",
        f"python benchmarks/quant_methods.py --exports {default_dir} {rtn_dir}  (verify --tokens {LONG_EVAL})"],
        "results": rows}, indent=2) + "\n")
    return rows


def table(path=OUT):
    """The results as the Markdown table quoted in edgepack/quant/'s docstring."""
    rs = json.loads(Path(path).read_text())["results"].values()
    lines = ["| method | ppl | Δ ppl | top-1 | KL | bits/weight | size vs rtn |", "|---|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['method']} | {r['ppl']:.2f} | {r['ppl_increase_pct']:+.1f}% | {100 * r['top1_agreement']:.1f}% | "
                     f"{r['mean_kl']:.3f} | {r['bits_per_weight']:.2f} | {r['size_vs_rtn']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(table())
    elif sys.argv[1:2] == ["--exports"]:  # --exports DEFAULT_ARTIFACT RTN_ARTIFACT
        for r in record_exports(*sys.argv[2:4]):
            print(json.dumps({k: r[k] for k in ("format", "method", "fidelity", f"fidelity_{LONG_EVAL}", "size_vs_rtn", "acceptance")}))
    else:
        from edgepack.quant.methods import METHODS

        main(sys.argv[1:] or list(METHODS))
