"""The MiniCPM-2B-shape export through the whole pipeline: wall time and peak RSS, each in its own process.

    python benchmarks/bench_export_2b.py [--ckpt /tmp/minicpm2b] [--work DIR] -> results/export_2b.json

Three runs under /usr/bin/time -v on the same checkpoint (benchmarks/make_minicpm_2b.py):
  write_onnx   the ONNX writer alone, plain RTN (the figure quoted before the quant stage: 1.95 GB, 32 s)
  export_onnx  `edgepack export --int4 --method rtn --format onnx --fidelity-tokens 0`
  export_both  the same with --format onnx,gguf (load -> canonical model -> quantize -> encode, both formats)
The calibrated default (`--method` unset) adds the calibration's 28 min and 4.3 GB
(benchmarks/bench_calibration_2b.py); fidelity adds the float reference. Neither is measured here.
The bar (issue 15): peak RSS no more than 10% above 1.95 GB.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgepack.bench.machine import machine_info  # noqa: E402

BAR_BYTES = int(1.95e9 * 1.10)


def timed(cmd, log):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as fh:
        r = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], stdout=fh, stderr=subprocess.STDOUT, env=env)
    text = Path(log).read_text()
    if r.returncode:
        raise SystemExit(f"{cmd[:6]} failed (exit {r.returncode}); see {log}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) * 1024
    h, m, s = ([0, 0] + re.search(r"Elapsed \(wall clock\) time.*: ([\d:.]+)", text).group(1).split(":"))[-3:]
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", text).group(1))
    return {"wall_s": round(float(h) * 3600 + float(m) * 60 + float(s), 1), "user_cpu_s": user, "peak_rss_bytes": rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("/tmp/minicpm2b"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgepack-bench-export-2b"))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    py = sys.executable
    runs = {
        "write_onnx": [py, ROOT / "benchmarks" / "bench_onnx_export.py", "_write", a.ckpt, a.work / "w"],
        "export_onnx": [py, "-m", "edgepack", "export", "--int4", "--method", "rtn", "--format", "onnx",
                        "--fidelity-tokens", "0", "--threads", "2", "--model", a.ckpt, "--out", a.work / "o"],
        "export_both": [py, "-m", "edgepack", "export", "--int4", "--method", "rtn", "--format", "onnx,gguf",
                        "--fidelity-tokens", "0", "--threads", "2", "--model", a.ckpt, "--out", a.work / "b"],
    }
    res = {"benchmark": "export_2b", "command": "python benchmarks/bench_export_2b.py " + " ".join(sys.argv[1:]),
           "machine": machine_info(), "load_average_before": os.getloadavg(), "runs": {}}
    for name, cmd in runs.items():
        r = timed(cmd, a.work / f"{name}.log")
        res["runs"][name] = {**r, "cmd": " ".join(map(str, cmd[1:])), "load_average_after": os.getloadavg()}
        print(name, r, flush=True)
        shutil.rmtree(a.work / {"write_onnx": "w", "export_onnx": "o", "export_both": "b"}[name], ignore_errors=True)
    res["bar_peak_rss_bytes"] = BAR_BYTES
    res["meets_bar"] = all(r["peak_rss_bytes"] <= BAR_BYTES for r in res["runs"].values())
    out = ROOT / "benchmarks" / "results" / "export_2b.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}; meets bar: {res['meets_bar']}")


if __name__ == "__main__":
    main()
