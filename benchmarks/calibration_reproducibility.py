"""Is the calibration the same on every CPU? The demo's default calibration under other kernels.

    python benchmarks/calibration_reproducibility.py [MODEL] [--method M]
        -> benchmarks/results/calibration_reproducibility.json

One x86 machine stands in for others by forcing the kernels torch and MKL pick (what an AVX2-only
AMD EPYC or an AMX Intel Xeon would get): torch's ATen kernels (ATEN_CPU_CAPABILITY avx512 / avx2 /
scalar) and MKL's code branch (MKL_CBWR), with 2 or 1 threads. Each run quantizes the model in a
fresh process and hashes every code, scale, zero point and rescaled norm; the same hash everywhere
means the export's weights, and so its figures up to the engines' own kernels, are the same.
tests/test_quant.py checks the same on the tiny model.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
CHILD = """
import sys, time, torch
from edgepack import quant
from edgepack.checkpoint import load
ck = load(sys.argv[1])
t, cpu = time.time(), time.process_time()
q = quant.quantize_model(ck, sys.argv[2])
wall, cpu = time.time() - t, time.process_time() - cpu
print(quant.digest(q), round(wall, 1), round(cpu, 1), torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())
"""
RUNS = [{}, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
        {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="demo")
    ap.add_argument("--method", default=None)
    a = ap.parse_args()
    from edgepack import quant
    from machine import machine_info

    method = a.method or quant.DEFAULT_METHOD
    rows = []
    for extra in RUNS:
        env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")} | extra
        r = subprocess.run([sys.executable, "-c", CHILD, a.model, method], env=env, capture_output=True, text=True, check=True)
        digest, wall, cpu, cap, threads = r.stdout.split()[-5:]
        rows.append({"env": extra, "sha256": digest, "seconds": float(wall), "cpu_seconds": float(cpu),
                     "torch_cpu_capability": cap, "threads": int(threads)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"machine": machine_info(), "model": a.model, "method": method,
           "command": "python benchmarks/calibration_reproducibility.py " + " ".join(sys.argv[1:]),
           "identical": len({r["sha256"] for r in rows}) == 1, "runs": rows,
           "note": "the machine was shared with other work: seconds are not comparable across runs"}
    (HERE / "results" / "calibration_reproducibility.json").write_text(json.dumps(out, indent=2) + "\n")
    print("identical:", out["identical"])


if __name__ == "__main__":
    main()
