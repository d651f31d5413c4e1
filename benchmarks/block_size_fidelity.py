"""Demo-model fidelity of the ONNX int4 artifact by block size, default method (the speed side is
benchmarks/bench_decode_levers.py on the 2B shape).

    python benchmarks/block_size_fidelity.py WORKDIR [--blocks 32,64] [--threads 2]

Exports the demo model once per block size (`edgepack export --int4 --format onnx --block-size B`, the
default calibrated method, whose GPTQ fits one grid per block) into WORKDIR/bB and records the export's
own fidelity report (2048 held-out tokens against the float reference: perplexity, top-1 agreement, KL)
and bits/weight. The demo's hidden size (576) does not divide by 128, so block 128 cannot be measured on
it. Writes benchmarks/results/block_size_fidelity.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--blocks", default="32,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "block_size_fidelity.json")
    a = ap.parse_args()

    from edgepack.bench import machine_info
    from edgepack.export import export
    from edgepack.manifest import find_artifact, read_manifest

    machine, rows = machine_info(), []
    for b in (int(x) for x in a.blocks.split(",")):
        t = time.perf_counter()
        art = export(model="demo", out=a.workdir / f"b{b}", formats=("onnx",), block_size=b, threads=a.threads, force=True)
        e = find_artifact(read_manifest(art), "onnx")
        rows.append({"block_size": b, "export_s": round(time.perf_counter() - t, 1), "fidelity": e.get("fidelity"),
                     "quantization": e["quantization"]})
        print(json.dumps(rows[-1]), flush=True)
    out = {"benchmark": "block_size_fidelity", "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
           "machine": machine, "model": "demo (SmolLM2-135M-Instruct as MiniCPM)", "results": rows}
    a.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
