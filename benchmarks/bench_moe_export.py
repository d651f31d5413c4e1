"""MiniCPM-MoE-8x2B-shaped export: peak RSS at 4 and 8 layers (one pytorch_model.bin each), and decode speed.

    python benchmarks/bench_moe_export.py [--layers 4,8] [--work DIR] [--method M] [--out JSON] -> results/moe_export.json

--method is passed to the export: without it the export's default, which calibrates every expert from its
routed tokens (GPTQ per expert, quant/moe.py; at this shape about 100 s per layer on 2 cores);
`--method rtn` is the calibration-free export the committed moe_export.json figures were measured with.

For each layer count a random checkpoint of MiniCPM-MoE-8x2B's shape (hidden 2304, 36 heads, 8 experts of
5760, 2 per token, vocab 122753, bf16, tied) is written as ONE pytorch_model.bin, as the real 27.7 GB
release ships, then exported with `edgepack export --int4 --format onnx,gguf --fidelity-tokens 0` under
/usr/bin/time -v (its own process). The export streams from the memory-mapped .bin and holds one layer's
experts at a time, so peak RSS should not grow with the layer count: the bar is 4 and 8 layers within
10% of each other and at most 4 GB. Then decode tok/s of the 8-layer artifact: edgepack's runtime over
the ONNX (onnxruntime's QMoE) and over the GGUF (llama.cpp), greedy, 32 tokens after a short prompt,
alternating order, median of --runs. Random weights: the text is meaningless, the cost is the real one
per layer (a 40-layer model decodes about 5x slower than the 8-layer figure).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_2b import timed_export as timed  # noqa: E402

from edgepack.bench.machine import machine_info  # noqa: E402

SHAPE = dict(hidden_size=2304, num_attention_heads=36, num_key_value_heads=36, intermediate_size=5760,
             vocab_size=122753, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, scale_emb=12.0,
             dim_model_base=256, scale_depth=1.4, tie_word_embeddings=True, num_experts=8, num_experts_per_tok=2)
BAR_BYTES = 4 * 10**9


def make_checkpoint(out, layers):
    """The random MoE-8x2B-shaped checkpoint as one pytorch_model.bin (bf16) with a small local tokenizer."""
    import torch

    from edgepack.model.checkpoint import expected_shapes
    from edgepack.model.families import parse_config
    from edgepack.model.testmodels import tiny_config, train_sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    raw = tiny_config(**SHAPE, num_hidden_layers=layers, torch_dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, shape in expected_shapes(parse_config(raw)).items():
        if len(shape) == 1:
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            std = 0.1 if "embed" in name else 0.5 / shape[1] ** 0.5
            tensors[name] = (torch.randn(shape, generator=g, dtype=torch.float32) * std).to(torch.bfloat16)
    torch.save(tensors, out / "pytorch_model.bin")
    del tensors
    train_sentencepiece(out, 800)
    return out


def decode_speed(art, runs, tokens=32):
    from edgepack.runtime.gguf_backend import GGUFBackend
    from edgepack.runtime.onnx_backend import OnnxBackend

    prompt = list(range(1, 17))
    engines = {"edgepack-onnx (onnxruntime QMoE)": (OnnxBackend, art / "onnx"),
               "llama.cpp (GGUF Q4_0)": (GGUFBackend, next((art / "gguf").glob("*.gguf")))}
    speeds = {k: [] for k in engines}
    for r in range(runs):
        for name in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            B, path = engines[name]
            with B(path, threads=2, n_ctx=256) as b:
                logits = b.forward(prompt)
                t0 = time.perf_counter()
                for _ in range(tokens):
                    logits = b.forward([int(logits.argmax())])
                speeds[name].append(tokens / (time.perf_counter() - t0))
    return {k: {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2),
                "samples": [round(x, 2) for x in v]} for k, v in speeds.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="4,8")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgepack-bench-moe"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--method", default=None, help="the export's --method (default: the export's own default, calibrated)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "moe_export.json")
    a = ap.parse_args()
    layers = [int(x) for x in a.layers.split(",")]
    res = {"benchmark": "moe_export", "command": "python benchmarks/bench_moe_export.py " + " ".join(sys.argv[1:]),
           "machine": machine_info(), "load_average_before": os.getloadavg(), "method": a.method or "(export default)",
           "exports": {}}
    for n in layers:
        ck = a.work / f"moe-{n}"
        shutil.rmtree(a.work / f"art-{n}", ignore_errors=True)
        if not (ck / "pytorch_model.bin").is_file():
            t = time.time()
            make_checkpoint(ck, n)
            print(f"wrote {ck} ({(ck / 'pytorch_model.bin').stat().st_size / 1e9:.2f} GB) in {time.time() - t:.0f} s", flush=True)
        cmd = [sys.executable, "-m", "edgepack", "export", "--int4", "--format", "onnx,gguf", "--fidelity-tokens", "0",
               "--threads", "2", "--model", ck, "--out", a.work / f"art-{n}", *(["--method", a.method] if a.method else [])]
        r = timed(cmd, a.work / f"export-{n}.log")
        r["checkpoint_bytes"] = (ck / "pytorch_model.bin").stat().st_size
        r["load_average_after"] = os.getloadavg()
        man = json.loads((a.work / f"art-{n}" / "edgepack.json").read_text())
        r["experts"] = {x["format"]: {k: v for k, v in x["quantization"].get("experts", {}).items()
                                      if k in ("method", "calibrated_experts", "rtn_experts")} for x in man["artifacts"]}
        res["exports"][str(n)] = r
        print(n, "layers:", r, flush=True)
    rss = [r["peak_rss_bytes"] for r in res["exports"].values()]
    res["peak_rss_ratio_max_over_min"] = round(max(rss) / min(rss), 3)
    res["bar"] = {"ratio": 1.10, "peak_rss_bytes": BAR_BYTES}
    res["meets_bar"] = res["peak_rss_ratio_max_over_min"] <= 1.10 and max(rss) <= BAR_BYTES
    res["decode_tok_s"] = {"layers": layers[-1], "threads": 2, "tokens": 32,
                           **decode_speed(a.work / f"art-{layers[-1]}", a.runs)}
    out = a.out
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["decode_tok_s"], indent=1))
    print(f"wrote {out}; meets bar: {res['meets_bar']}")


if __name__ == "__main__":
    main()
