"""Is onnxruntime's int4 kernel held by memory or by compute here? MatMulNBits alone, against the read probe.

    python benchmarks/matmulnbits_roofline.py [--layers 24] [--runs 15] [--out FILE]

Decode is one MatMulNBits per weight matrix with M = 1 row (benchmarks/profile_decode.py: 87% of a 2B
decode step). This builds a chain of MatMulNBits nodes in the MiniCPM-2B shapes (2304 -> 5760 -> 2304 ...,
int4 codes from onnxruntime's own packer, symmetric, no zero points, as the writer makes them; about 200 MB
of weights at block 32, well past the last-level cache) and times one run of the chain (median of --runs)
for each accuracy level (0 = float32 compute, 4 = int8 activations, the writer's), block size (32/64/128)
and thread count (1, 2). Bytes read per second = the chain's initializer bytes / median time, set beside
edgepack.bandwidth's probe at the same thread count in the same run.

How to read it: a memory-bound kernel reads near the probe at any thread count, and adding a thread helps
only as much as the probe grows; a compute-bound one scales with the threads and stays below the probe.
Writes benchmarks/results/matmulnbits_roofline.json.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K, N = 2304, 5760  # MiniCPM-2B hidden and intermediate sizes


def chain(layers, block, accuracy):
    """A MatMulNBits chain (alternately K->N and N->K) and its initializer bytes."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(layers):
        k, n = (K, N) if i % 2 == 0 else (N, K)
        w = rng.standard_normal((k, n)).astype(np.float32)
        kb = (k + block - 1) // block
        q = np.zeros((n, kb, block // 2), np.uint8)
        s = np.zeros(n * kb, np.float32)
        zp = np.zeros(n * ((kb + 1) // 2), np.uint8)
        quantize_matmul_4bits(q, w, s, zp, block, n, k, True)
        inits += [numpy_helper.from_array(q, f"w{i}"), numpy_helper.from_array(s.reshape(n, kb), f"s{i}")]
        nodes.append(helper.make_node("MatMulNBits", [cur, f"w{i}", f"s{i}"], [f"y{i}"], domain="com.microsoft",
                                      K=k, N=n, bits=4, block_size=block, accuracy_level=accuracy))
        cur = f"y{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    return model.SerializeToString(), sum(numpy_helper.to_array(t).nbytes for t in inits)


def time_chain(model, threads, runs):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, K)).astype(np.float32)
    for _ in range(3):
        s.run(None, {"x": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {"x": x})
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "matmulnbits_roofline.json")
    a = ap.parse_args()

    from edgepack.bandwidth import read_bandwidth
    from edgepack.bench import machine_info

    machine = machine_info()
    probe = {t: read_bandwidth(t)["read_bytes_per_s"] for t in (1, 2)}
    rows = []
    for accuracy, block in [(4, 32), (4, 64), (4, 128), (0, 32)]:
        model, nbytes = chain(a.layers, block, accuracy)
        for threads in (1, 2):
            t = time_chain(model, threads, a.runs)
            row = {"accuracy_level": accuracy, "block_size": block, "threads": threads, "weight_bytes": nbytes,
                   "median_s": round(t, 5), "read_bytes_per_s": round(nbytes / t),
                   "fraction_of_probe": round(nbytes / t / probe[threads], 3),
                   "weights_per_s": round(a.layers * K * N / t)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    probe_after = {t: read_bandwidth(t)["read_bytes_per_s"] for t in (1, 2)}
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    rate = {(r["accuracy_level"], r["block_size"], r["threads"]): r["read_bytes_per_s"] for r in rows}
    scaling = {f"acc{acc}_b{b}": round(rate[acc, b, 2] / rate[acc, b, 1], 3) for acc, b, t in rate if t == 2}
    out = {"benchmark": "matmulnbits_roofline",
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
           "machine": machine, "shape": {"K": K, "N": N, "layers": a.layers, "M": 1},
           "read_probe_bytes_per_s": {"before": probe, "after": probe_after},
           "two_thread_speedup": scaling, "results": rows}
    a.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"probe": probe, "two_thread_speedup": scaling}))
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
