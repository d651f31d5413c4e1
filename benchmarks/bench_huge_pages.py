"""What moving the weights onto 2 MB pages (edgepack/runtime/hugepages.py) costs and gives, per mode,
each measurement in a fresh process (a cold start is the point):

    python benchmarks/bench_huge_pages.py ONNX_DIR [--threads 2] [--reps 2] [--tokens 64]

    off    huge_pages=False: the weights stay on 4 KB pages
    now    huge_pages="now": the collapse starts at load and runs during the first generation
    idle   huge_pages=True (the default): the collapse runs only while no forward has run for IDLE_S

Per process: load, a cold generation (--tokens after a 64-token prompt; TTFT and decode tok/s), then
wait for the collapse to finish (its seconds recorded), then the same generation again (warm). The
weights of the 2B shape are random, so eos is ignored. Writes benchmarks/results/huge_pages_2b.json.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r"""
import json, sys, time
from edgepack.runtime import Model
from edgepack.runtime.onnx_backend import OnnxBackend
from edgepack.tokenizer import load_tokenizer
folder, mode, threads, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
b = OnnxBackend(folder, threads=threads, n_ctx=64 + 2 * n + 8, huge_pages={"off": False, "now": "now", "idle": True}[mode])
load_s = time.perf_counter() - t
tok = load_tokenizer(folder)
tok.eos_ids = ()
m = Model(b, tok)
prompt = list(range(300, 364))
def gen():
    b.reset()
    s = m.complete(ids=prompt, max_new_tokens=n + 1)
    return {"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tok_s}
cold = gen()
hp = b.huge_pages
if hp is not None:
    hp.wait()
warm = gen()
print(json.dumps({"mode": mode, "load_s": load_s, "cold": cold, "warm": warm,
                  "collapse_s": hp and hp.seconds, "collapsed_bytes": hp and hp.bytes, "error": hp and hp.error}))
m.close()
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "huge_pages_2b.json")
    args = ap.parse_args()
    from machine import machine_info

    modes = ["off", "now", "idle"]
    runs = []
    for r in range(args.reps):
        for mode in modes[r % 3:] + modes[:r % 3]:  # rotated: each mode runs after each other one
            p = subprocess.run([sys.executable, "-c", CHILD, str(args.onnx_dir), mode, str(args.threads), str(args.tokens)],
                               capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.splitlines()[-1])
            runs.append(res)
            print(f"[huge_pages] {mode:4s} load {res['load_s']:.2f} s  cold: TTFT {res['cold']['ttft_s']:.2f} s, "
                  f"decode {res['cold']['decode_tok_s']:.2f} tok/s  collapse {res['collapse_s'] or 0:.2f} s  "
                  f"warm: decode {res['warm']['decode_tok_s']:.2f} tok/s", file=sys.stderr, flush=True)
    summary = {}
    for mode in modes:
        rs = [x for x in runs if x["mode"] == mode]
        med = lambda f: round(statistics.median(f(x) for x in rs), 3)  # noqa: E731
        summary[mode] = {"load_s": med(lambda x: x["load_s"]), "cold_ttft_s": med(lambda x: x["cold"]["ttft_s"]),
                         "cold_decode_tok_s": med(lambda x: x["cold"]["decode_tok_s"]),
                         "warm_decode_tok_s": med(lambda x: x["warm"]["decode_tok_s"]),
                         "collapse_s": med(lambda x: x["collapse_s"] or 0.0)}
    report = {"machine": machine_info(), "command": " ".join(sys.argv),
              "settings": {"threads": args.threads, "reps": args.reps, "prompt_tokens": 64, "tokens": args.tokens,
                           "onnx": str(args.onnx_dir)}, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for mode, s in summary.items():
        print(f"{mode:4s} " + "  ".join(f"{k} {v}" for k, v in s.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
