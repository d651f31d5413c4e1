"""Calibration cost on the MiniCPM-2B shape: wall time and peak RSS of edgepack.quant.quantize_model.

    python benchmarks/_minicpm_2b.py /tmp/minicpm2b          (once, ~5 GB of random bf16 weights)
    python benchmarks/bench_calibration_2b.py [/tmp/minicpm2b] [--method NAME] [--tokens N]

The weights are random, so only cost is measured (the same cost as the real model: same shapes,
same number of calibration tokens). Peak RSS is the kernel's ru_maxrss of this process (the whole
run, including reading the bf16 shards); per-layer times show the stream never holds more than a
layer. The acceptance bar is ≤ 30 min and ≤ 6 GB on this (2-core, shared) machine.
Writes benchmarks/results/quant_calibration_2b.json.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="/tmp/minicpm2b")
    ap.add_argument("--method", default=None, help="default: edgepack.quant.DEFAULT_METHOD")
    ap.add_argument("--tokens", type=int, default=None, help="default: edgepack.quant.calibrate.default_tokens")
    ap.add_argument("--layers", type=int, default=None,
                    help="calibrate only the first N layers and extrapolate the layer time to all of them")
    ap.add_argument("--out", default=str(ROOT / "results" / "quant_calibration_2b.json"))
    a = ap.parse_args()

    import torch

    from edgepack.quant import calibrate, methods
    from edgepack.model.checkpoint import load
    from quant_methods import machine

    method = a.method or methods.DEFAULT_METHOD
    ckpt = load(a.model)
    tokens = a.tokens or calibrate.default_tokens(ckpt)  # by the whole model's size, before --layers cuts it
    n_layers = ckpt.config.num_hidden_layers
    if a.layers:  # a prefix of the model: same per-layer cost, fewer layers
        import dataclasses

        ckpt.config = dataclasses.replace(ckpt.config, num_hidden_layers=a.layers)
    layer_s, last = [], [time.time()]

    def progress(stage, done, total):
        now = time.time()
        if done:  # progress(…, 0, L) marks the start (after loading), not a layer
            layer_s.append(round(now - last[0], 1))
        last[0] = now
        print(f"{stage} {done}/{total} {(layer_s[-1] if done else 0.0):.1f}s rss_peak={_peak() / 2**30:.2f} GiB", file=sys.stderr, flush=True)

    t0 = time.time()
    q = methods.quantize_model(ckpt, method, n_tokens=tokens, progress=progress)
    calib_s = time.time() - t0
    # the quantized tensors the writers will ask for that calibration did not touch (the embedding)
    t1 = time.time()
    for n in ckpt.names:
        if len(ckpt.shape(n)) == 2:
            q.qtensor(n)
    rest_s = time.time() - t1
    layers_done = ckpt.config.num_hidden_layers
    layer_bytes = sum(t.data.nbytes + t.scales.nbytes + t.zeros.nbytes for n, t in q.tensors.items() if n.startswith("model.layers."))
    per_layer = sum(layer_s) / len(layer_s)
    est_total = calib_s + rest_s + per_layer * (n_layers - layers_done)
    r = {"model": str(ckpt.path), "layers_calibrated": layers_done, "layers": n_layers,
         "estimated_total_s_all_layers": round(est_total, 1), "process_cpu_s": round(time.process_time(), 1), "shape": {k: getattr(ckpt.config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")},
         "method": method, "calibration": q.info["calibration"], "torch_threads": torch.get_num_threads(),
         "calibrate_s": round(calib_s, 1), "remaining_tensors_s": round(rest_s, 1), "total_s": round(calib_s + rest_s, 1),
         "peak_rss_bytes": _peak(), "per_layer_s": layer_s, "quantized_bytes": methods.size_bytes(q),
         "bar": {"max_s": 1800, "max_rss_bytes": 6 * 2**30},
         # quantized layers stay in memory until the writers take them: add the layers not run
         "estimated_peak_rss_bytes_all_layers": _peak() + int(layer_bytes * (n_layers - layers_done) / layers_done),
         "passes": est_total <= 1800 and _peak() + layer_bytes * (n_layers - layers_done) / layers_done <= 6 * 2**30}
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps({"machine": machine(), "result": r}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in r.items() if k != "per_layer_s"}, indent=2))


def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


if __name__ == "__main__":
    main()
