"""One GroupQueryAttention node of the MiniCPM-2B shape (36 heads, 36 KV heads, head_dim 64, rotary) with each
KV cache type onnxruntime's CPU kernel takes: float32, float16 (the whole op in float16 between two Casts:
the kernel's cache type is its query type) and int8 with static per-channel scales (k_quant_type /
v_quant_type PER_CHANNEL, kv_cache_bit_width 8; the only int8 mode whose scales the graph can carry).

    python benchmarks/gqa_kv_types.py [--fills 256,4000] [--steps 32] [--threads 2] [--rounds 3]

Per cache type and fill: a shared max-length past/present buffer (as OnnxBackend and genai bind it), a
prefill of `fill` random tokens in chunks of 512, then `--steps` timed decode steps; the median step over
`--rounds` rounds (types interleaved), and the attention output's relative RMS error against float32.
Inputs are N(0, 1) and the int8 scale is 4/127 (|x| <= 4 kept): for a real model the scales would have
to be calibrated per channel from K and V statistics. Writes benchmarks/results/gqa_kv_types.json.
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
H, KV, HD, CTX = 36, 36, 64, 4096
INT8_SCALE = 4.0 / 127


def graph(kind):
    from onnx import TensorProto as TP, helper, numpy_helper

    half, int8 = kind == "float16", kind == "int8"
    cache = {"float32": TP.FLOAT, "float16": TP.FLOAT16, "int8": TP.INT8}[kind]
    D = (H + 2 * KV) * HD
    ins = [helper.make_tensor_value_info("qkv", TP.FLOAT, [1, "S", D]),
           helper.make_tensor_value_info("pk", cache, [1, KV, "P", HD]), helper.make_tensor_value_info("pv", cache, [1, KV, "P", HD]),
           helper.make_tensor_value_info("seqlens_k", TP.INT32, [1]), helper.make_tensor_value_info("total", TP.INT32, [])]
    outs = [helper.make_tensor_value_info("out", TP.FLOAT, [1, "S", H * HD]),
            helper.make_tensor_value_info("prk", cache, [1, KV, "T", HD]), helper.make_tensor_value_info("prv", cache, [1, KV, "T", HD])]
    ang = np.arange(CTX, dtype=np.float32)[:, None] / 10000 ** (np.arange(0, HD, 2, dtype=np.float32) / HD)[None]
    t = np.float16 if half else np.float32
    inits = [numpy_helper.from_array(np.cos(ang).astype(t), "cos"), numpy_helper.from_array(np.sin(ang).astype(t), "sin")]
    nodes, q, o = [], "qkv", "out"
    if half:
        nodes.append(helper.make_node("Cast", ["qkv"], ["qkv16"], to=TP.FLOAT16))
        q, o = "qkv16", "out16"
    attrs = dict(num_heads=H, kv_num_heads=KV, do_rotary=1, rotary_interleaved=0, local_window_size=-1, scale=float(HD ** -0.5))
    gin = [q, "", "", "pk", "pv", "seqlens_k", "total", "cos", "sin"]
    if int8:
        attrs.update(k_quant_type="PER_CHANNEL", v_quant_type="PER_CHANNEL", kv_cache_bit_width=8)
        for n in ("ks", "vs"):
            inits.append(numpy_helper.from_array(np.full((KV, 1, HD), INT8_SCALE, np.float32), n))
        gin += ["", "", "", "ks", "vs"]
    nodes.append(helper.make_node("GroupQueryAttention", gin, [o, "prk", "prv"], domain="com.microsoft", **attrs))
    if half:
        nodes.append(helper.make_node("Cast", ["out16"], ["out"], to=TP.FLOAT))
    m = helper.make_model(helper.make_graph(nodes, "gqa", ins, outs, inits), ir_version=10,
                          opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return m.SerializeToString()


class Gqa:
    def __init__(self, kind, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.enable_mem_pattern = False
        self.ort, self.s = ort, ort.InferenceSession(graph(kind), so, providers=["CPUExecutionProvider"])
        self.np_type = {"float32": np.float32, "float16": np.float16, "int8": np.int8}[kind]

    def run(self, X, fill, steps):
        ort, s = self.ort, self.s
        io = s.io_binding()
        io.bind_output("out", "cpu")  # output 0
        for past, present in (("pk", "prk"), ("pv", "prv")):
            v = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, KV, CTX, HD), self.np_type))
            io.bind_ortvalue_input(past, v)
            io.bind_ortvalue_output(present, v)

        def step(x, past):
            T = x.shape[1]
            io.bind_cpu_input("qkv", x)
            io.bind_cpu_input("seqlens_k", np.array([past + T - 1], np.int32))
            io.bind_cpu_input("total", np.array(past + T, np.int32))
            io.bind_output("out", "cpu")
            s.run_with_iobinding(io)
            return io.get_outputs()[0].numpy()

        outs, past = [], 0
        for lo in range(0, fill, 512):
            x = X[:, lo:min(fill, lo + 512)]
            step(x, past)
            past += x.shape[1]
        t = time.perf_counter()
        for i in range(steps):
            outs.append(step(X[:, fill + i:fill + i + 1], past))
            past += 1
        return (time.perf_counter() - t) / steps, np.concatenate(outs, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fills", default="256,4000")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from edgepack.bench import machine_info

    kinds = ("float32", "float16", "int8")
    ops = {k: Gqa(k, a.threads) for k in kinds}
    res = {}
    for fill in map(int, a.fills.split(",")):
        X = np.random.default_rng(0).standard_normal((1, fill + a.steps, (H + 2 * KV) * HD)).astype(np.float32)
        ms, out = {k: [] for k in kinds}, {}
        for r in range(a.rounds + 1):  # round 0: warm-up
            for k in (kinds if r % 2 else kinds[::-1]):
                dt, out[k] = ops[k].run(X, fill, a.steps)
                if r:
                    ms[k].append(dt * 1e3)
        ref = out["float32"]
        res[fill] = {k: {"decode_step_ms_median": statistics.median(ms[k]), "decode_step_ms": ms[k],
                         "rel_rms_err_vs_float32": float(np.sqrt(((out[k] - ref) ** 2).mean() / (ref ** 2).mean()))}
                     for k in kinds}
        for k in kinds:
            print(f"fill {fill:5d} {k:8s} decode step {res[fill][k]['decode_step_ms_median']:7.3f} ms "
                  f"(x{res[fill][k]['decode_step_ms_median'] / res[fill]['float32']['decode_step_ms_median']:.2f} of float32), "
                  f"rel err {res[fill][k]['rel_rms_err_vs_float32']:.1e}")
    report = {"benchmark": "gqa_kv_types", "command": " ".join(["python", *sys.argv]),
              "machine": dict(machine_info(), load_average_at_end=list(os.getloadavg())),
              "shape": {"num_heads": H, "kv_num_heads": KV, "head_dim": HD, "buffer_rows": CTX}, "int8_scale": INT8_SCALE,
              "settings": vars(a), "results": res}
    out = ROOT / "benchmarks" / "results" / "gqa_kv_types.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
