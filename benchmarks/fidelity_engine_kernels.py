"""How far the demo fidelity figure moves when only the engine's int8 kernels change.

    python benchmarks/fidelity_engine_kernels.py ARTIFACT [--other-python PY]
        -> benchmarks/results/fidelity_engine_kernels.json

Calibration is bit-identical on every CPU (tests/test_quant.py), so what still moves the figure that
`edgepack export` prints from one machine to the next is the engine: onnxruntime's MatMulNBits rounds
activations to int8 and picks its kernels by CPU. Another onnxruntime version picks other kernels on
the same CPU, so the same artifact's fidelity (first 2048 eval tokens, the export's default) is
measured with the installed onnxruntime and with the one in --other-python (default: the venv of
tests/test_genai_phone_engine.py, onnxruntime 1.29.0, the Android app's engine), against one set of
float reference logits.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
CHILD = """
import json, sys, numpy as np, onnxruntime as ort
from edgepack.fidelity import backend_logits, compare
from edgepack.runtime.onnx_backend import OnnxBackend
art, tmp = sys.argv[1], sys.argv[2]
w = json.load(open(tmp + "/windows.json"))
ref = [np.load(f"{tmp}/ref{i}.npy") for i in range(len(w))]
with OnnxBackend(art + "/onnx", threads=2, n_ctx=max(map(len, w))) as b:
    got = backend_logits(b, w)
print(json.dumps({"onnxruntime": ort.__version__, "fidelity": compare(ref, got, w)}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--other-python", default=None)
    ap.add_argument("--tokens", type=int, default=2048)
    a = ap.parse_args()
    import numpy as np

    from edgepack.checkpoint import load
    from edgepack.fidelity import eval_windows, reference_logits
    from edgepack.tokenizer import load_tokenizer
    from machine import machine_info

    other = a.other_python
    if other is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_genai_phone_engine import phone_python

        other = str(phone_python())
    m = json.loads((Path(a.artifact) / "edgepack.json").read_text())
    ck = load(m["model"]["source_path"])
    tok = load_tokenizer(Path(a.artifact) / "tokenizer", m["tokenizer"]["bos_id"], m["tokenizer"]["eos_ids"])
    w = eval_windows(tok, a.tokens, ck.config.max_position_embeddings)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "windows.json").write_text(json.dumps(w))
        for i, z in enumerate(reference_logits(ck, w)):
            np.save(f"{tmp}/ref{i}.npy", z)
        for py in (sys.executable, other):
            r = subprocess.run([py, "-c", CHILD, a.artifact, tmp], capture_output=True, text=True,
                               env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]))
    d = [r["fidelity"] for r in runs]
    out = {"machine": machine_info(), "artifact": str(a.artifact), "method": m["artifacts"][0]["quantization"]["method"],
           "command": "python benchmarks/fidelity_engine_kernels.py " + " ".join(sys.argv[1:]), "runs": runs,
           "spread": {"ppl_increase_pct": round(abs(d[0]["ppl_increase_pct"] - d[1]["ppl_increase_pct"]), 3),
                      "top1_agreement": round(abs(d[0]["top1_agreement"] - d[1]["top1_agreement"]), 4)}}
    (HERE / "results" / "fidelity_engine_kernels.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["spread"]))


if __name__ == "__main__":
    main()
