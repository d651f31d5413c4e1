"""Which arm64 kernel moves the demo's fidelity: one MatMulNBits at a time, x86 against emulated arm64 cores.

    edgepack export --int4 --format onnx --method rtn+emb8 --model demo --out ART
    python benchmarks/arm_matmulnbits_kernels.py ART   -> results/arm_matmulnbits_kernels.json

`edgepack check-arm` found the demo's Δppl 0.8-1.8 points worse on arm64 (phone, a76) than on x86, close on a53.
This takes the artifact's own int4 down_proj weights (layers 0, 10, 20, 29) and the real activations that reach
them (the float reference on 256 evaluation tokens), builds one-node MatMulNBits models with accuracy_level 0
(unset: float activations), 1 (fp32), 2 (fp16) and 4 (int8 activations, what `--target desktop` exports), runs
them with the same onnxruntime release on x86 (this machine) and under qemu on each arm64 core, and compares
each product with the exact one (float64, same int4 weights). It then simulates candidate activation
quantizations in numpy to say which one each CPU's kernel does.

Each level's prefill cost (the 256-row product, best of REPEATS) is given as a ratio to level 4 on the same
CPU: under qemu that is an EMULATED ratio (every instruction translated; NEON dot products and float FMAs
emulate at different costs than they run), a hint of the order, not a phone's speed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LAYERS = (0, 10, 20, 29)
CPUS = ("phone", "a76", "a53")
LEVELS = (0, 1, 2, 4)
REPEATS = 3

WORKER = '''
import sys, os, time, numpy as np, onnxruntime as ort
c = np.load(sys.argv[1]); d = sys.argv[3]; out = {}
for f in sorted(os.listdir(d)):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(os.path.join(d, f), so, providers=["CPUExecutionProvider"])
    feed, best = {"A": c[f.rsplit(".", 2)[0] + ".A"]}, float("inf")
    for _ in range(int(sys.argv[4])):
        t0 = time.perf_counter(); y = s.run(None, feed)[0]; best = min(best, time.perf_counter() - t0)
    out[f[:-5]], out[f[:-5] + ".seconds"] = y, np.float64(best)
np.savez(sys.argv[2], **out)
'''


def capture(art, work):
    """{case: (A, B, S, K, N, block)}: the artifact's down_proj MatMulNBits inputs and the float activations."""
    import onnx
    import torch
    from onnx import numpy_helper

    from edgepack.fidelity import eval_ids
    from edgepack.model.demo import demo_checkpoint_dir
    from edgepack.model.reference import load_reference
    from edgepack.model.tokenizer import load_tokenizer

    ck = demo_checkpoint_dir()
    model, ids = load_reference(ck), eval_ids(load_tokenizer(ck), 256)
    acts = {}
    for i in LAYERS:
        model.model.layers[i].mlp.down_proj.register_forward_pre_hook(
            lambda m, a, i=i: acts.__setitem__(i, a[0][0].float().numpy()))
    with torch.no_grad():
        model(torch.tensor([ids]))
    m = onnx.load(str(art / "onnx" / "model.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    cases = {}
    for n in m.graph.node:
        i = next((i for i in LAYERS if n.op_type == "MatMulNBits" and f"/layers/{i}/mlp/down_proj/" in n.name), None)
        if i is not None:
            at = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert len(n.input) == 3, "symmetric codes expected (no zero points)"
            cases[f"{i}.down_proj"] = (acts[i], numpy_helper.to_array(inits[n.input[1]]),
                                       numpy_helper.to_array(inits[n.input[2]]), at["K"], at["N"], at["block_size"])
    return cases


def build(cases, d):
    from onnx import TensorProto, helper, numpy_helper

    d.mkdir()
    for k, (A, B, S, K, N, blk) in cases.items():
        for acc in LEVELS:
            node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=K, N=N, bits=4,
                                    block_size=blk, accuracy_level=acc)
            g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, K])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, N])],
                                  [numpy_helper.from_array(B, "B"), numpy_helper.from_array(S, "S")])
            mdl = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                                    ir_version=8)
            (d / f"{k}.acc{acc}.onnx").write_bytes(mdl.SerializeToString())


def act_quant(A, block, sym):
    """A with int8 activation quantization per `block` columns: symmetric (scale amax/127) or asymmetric (uint8)."""
    Ab = A.reshape(A.shape[0], -1, block)
    if sym:
        s = np.abs(Ab).max(-1, keepdims=True) / 127
        s[s == 0] = 1
        return (np.round(Ab / s) * s).reshape(A.shape)
    lo, hi = Ab.min(-1, keepdims=True), Ab.max(-1, keepdims=True)
    s = (hi - lo) / 255
    s[s == 0] = 1
    zp = np.round(-lo / s)
    return ((np.clip(np.round(Ab / s) + zp, 0, 255) - zp) * s).reshape(A.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "arm_matmulnbits_kernels.json")
    a = ap.parse_args()
    from edgepack.arm64root import CPUS as QEMU, WHEELS, ensure_host_site, ensure_root, python_command, site_path
    from edgepack.bench.machine import machine_info

    root, host_site = ensure_root(log=print), ensure_host_site()
    with tempfile.TemporaryDirectory(prefix="edgepack-arm-kernels-") as t:
        t = Path(t)
        cases = capture(a.artifact, t)
        np.savez(t / "cases.npz", **{f"{k}.A": v[0] for k, v in cases.items()})
        build(cases, t / "models")
        (t / "worker.py").write_text(WORKER)
        runs = {}
        for cpu in ("x86", *CPUS):
            py = [sys.executable] if cpu == "x86" else python_command(root, cpu)
            env = dict(os.environ, PYTHONPATH=str(host_site if cpu == "x86" else site_path(root)), PYTHONNOUSERSITE="1")
            subprocess.run([*py, str(t / "worker.py"), str(t / "cases.npz"), str(t / f"{cpu}.npz"), str(t / "models"),
                            str(REPEATS)],
                           check=True, env=env, capture_output=True)
            runs[cpu] = dict(np.load(t / f"{cpu}.npz"))
    rows = []
    for k, (A, B, S, K, N, blk) in cases.items():
        A = A.astype(np.float64)
        q = np.stack([B & 15, B >> 4], -1).reshape(N, -1)[:, :K].astype(np.float64) - 8
        W = q * np.repeat(S.reshape(N, -1).astype(np.float64), blk, axis=1)[:, :K]
        exact = A @ W.T

        def rel(y):
            return float(np.linalg.norm(y - exact) / np.linalg.norm(exact))

        sims = {f"{'sym' if sym else 'asym'}_per_{'row' if b == K else b}": A_q @ W.T
                for b in (32, 128, K) for sym in (True, False) for A_q in [act_quant(A, b, sym)]}
        sims["float"] = exact  # no activation quantization at all
        r = {"case": k, "K": K, "N": N, "rows": A.shape[0], "error_vs_exact": {}, "closest_simulation": {},
             "prefill_cost_vs_level4": {},
             "simulated_error_vs_exact": {s: round(rel(y), 5) for s, y in sims.items()}}
        for cpu, o in runs.items():
            for acc in LEVELS:
                y = o[f"{k}.acc{acc}"].astype(np.float64)
                r["error_vs_exact"][f"{cpu} accuracy_level {acc}"] = float(f"{rel(y):.3g}")
                ratio = float(o[f"{k}.acc{acc}.seconds"] / o[f"{k}.acc4.seconds"])
                r["prefill_cost_vs_level4"][f"{cpu} accuracy_level {acc}"] = round(ratio, 2)
                if acc == 4:
                    d = {s: float(np.linalg.norm(y - ys) / np.linalg.norm(exact)) for s, ys in sims.items()}
                    best = min(d, key=d.get)
                    r["closest_simulation"][cpu] = {"simulation": best, "distance": float(f"{d[best]:.3g}")}
        rows.append(r)
        print(k, "  ".join(f"{c}: {v} ({r['prefill_cost_vs_level4'][c]}x)" for c, v in r["error_vs_exact"].items()), "|",
              "  ".join(f"{c}~{v['simulation']}" for c, v in r["closest_simulation"].items()))
    result = {"benchmark": "arm_matmulnbits_kernels", "command": f"python benchmarks/arm_matmulnbits_kernels.py {a.artifact}",
              "artifact": str(a.artifact), "onnxruntime": next(w for w in WHEELS if w.startswith("onnxruntime==")), "machine": machine_info(),
              "qemu_cpus": {c: QEMU[c][0] for c in CPUS}, "accuracy_levels": list(LEVELS), "repeats": REPEATS,
              "prefill_cost_note": "time of each level / time of level 4 on the same CPU, best of repeats, 1 thread; "
                                   "for arm64 cores an EMULATED ratio under qemu-user, not a phone's speed",
              "cases": rows}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
