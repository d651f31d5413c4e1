"""What a k-token verify costs (MiniCPM-2B shape, or any artifact), and the speed-up that projects for speculation.

    python benchmarks/make_minicpm_2b.py /tmp/edgepack-2b/ckpt
    python -m edgepack export --int4 --model /tmp/edgepack-2b/ckpt --format onnx --method rtn \\
        --fidelity-tokens 0 --threads 2 --out /tmp/edgepack-2b/int4-onnx
    python benchmarks/bench_verify_cost.py /tmp/edgepack-2b/int4-onnx [--threads 2] [--rounds 8]
    python benchmarks/bench_verify_cost.py DEMO_ARTIFACT --out benchmarks/results/verify_cost_demo.json

Also recorded: how far a batched forward's logits are from the one-token kernel's on the same tokens
(max |difference| over the rows of a 9-token forward against 9 one-token forwards): the rounding that
the int4 guarantee of tests/test_speculate.py has to cover.

Cost: after a 64-token prefill, one forward of 1 + k tokens (k = 0..8) through edgepack's ONNX backend with
the logits of every position, as a verify runs it, then the cache rolled back (truncate) so every forward
starts from the same 64 tokens. Rounds alternate the order of k (ascending, then descending) and the table
is the median per k divided by the median one-token forward, within this run.

Projection: the weights are random, so acceptance cannot be measured on this shape (its text is noise).
It comes from the demo model instead (benchmarks/results/speculate_demo.json, edgepack+lookup/onnx on the
grounded prompts): that run's own verify decisions (how many verifies, how many drafted and accepted
tokens, how many plain steps) are re-priced with this table: time = plain steps × 1 + verifies ×
cost(mean draft length); speed-up = decode tokens / time. A 135M model copies less faithfully than a 2B one
would, and the controller would pick other draft lengths on this cost curve: an estimate, not a measurement.
benchmarks/bench_lookup_replay.py --cost-table benchmarks/results/verify_cost_2b.json replays the controller
itself on this table (it then picks the lengths this curve favours): the projection the README quotes.
Writes benchmarks/results/verify_cost_2b.json.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "benchmarks" / "results" / "speculate_demo.json"


def measure(artifact, threads, rounds, max_k=8, prompt_len=64):
    from edgepack.runtime import load

    with load(artifact, backend="onnx", threads=threads) as m:
        be = m.backend
        hp = getattr(be, "huge_pages", None)
        if hp is not None:
            hp.wait()  # the weights on 2 MB pages before anything is timed, as edgepack bench does
        prompt = [300 + i for i in range(prompt_len)]
        be.reserve(prompt_len + max_k + 1)
        be.forward(prompt)
        times = {k: [] for k in range(max_k + 1)}
        for r in range(rounds + 1):  # round 0 is a warm-up, not recorded
            for k in (range(max_k + 1) if r % 2 == 0 else reversed(range(max_k + 1))):
                t = time.perf_counter()
                be.forward([400 + j for j in range(k + 1)], all_logits=k > 0)
                dt = time.perf_counter() - t
                be.truncate(prompt_len)
                if r:
                    times[k].append(dt)
        steps = [be.forward([400 + j]) for j in range(max_k + 1)]
        be.truncate(prompt_len)
        rows = be.forward([400 + j for j in range(max_k + 1)], all_logits=True)
        deviation = [round(float(np.abs(rows[j] - steps[j]).max()), 5) for j in range(max_k + 1)]
    c0 = statistics.median(times[0])
    return deviation, {str(k): {"median_s": round(statistics.median(v), 5), "min_s": round(min(v), 5), "max_s": round(max(v), 5),
                     "relative_to_one_token": round(statistics.median(v) / c0, 3)} for k, v in times.items()}


def project(table, demo):
    rel = {int(k): v["relative_to_one_token"] for k, v in table.items()}

    def cost(k):  # linear between measured integers
        lo = min(int(math.floor(k)), max(rel))
        hi = min(lo + 1, max(rel))
        return rel[lo] + (rel[hi] - rel[lo]) * (k - lo)

    out = {}
    for r in demo["report"]["results"]:
        if (r["engine"], r["backend"], r["prompt_kind"]) != ("edgepack+lookup", "onnx", "grounded"):
            continue
        runs = len(r["decode_tok_s"]["samples"])
        decode_tokens = runs * (r["new_tokens"] - 1)
        forwards = decode_tokens - r["accepted_tokens"]  # each accepted draft token saved one forward
        verifies = r["verify_steps"]
        k_mean = r["drafted_tokens"] / verifies if verifies else 0.0
        time_units = (forwards - verifies) + verifies * cost(k_mean)
        out[r["prompt"]] = {"demo_acceptance_rate": round(r["acceptance_rate"], 3),
                            "demo_mean_accepted_length": round(r["mean_accepted_length"], 2),
                            "mean_draft_length": round(k_mean, 2), "verifies_per_token": round(verifies / decode_tokens, 3),
                            "demo_measured_speedup": round(r["speedup_vs_plain"], 3),
                            "projected_speedup": round(decode_tokens / time_units, 3)}
    sp = [v["projected_speedup"] for v in out.values()]
    return {"per_prompt": out, "projected_speedup_geomean": round(math.exp(sum(map(math.log, sp)) / len(sp)), 3) if sp else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", help="a MiniCPM-2B-shaped int4 artifact with an onnx folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=64, help="tokens in the cache before each verify")
    ap.add_argument("--demo", default=str(DEMO), help="the demo model's speculation benchmark (acceptance)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verify_cost_2b.json"))
    a = ap.parse_args()

    from edgepack.bench.machine import machine_info
    from edgepack.formats.manifest import read_manifest

    machine = machine_info()
    model = read_manifest(Path(a.artifact))["model"]
    deviation, table = measure(a.artifact, a.threads, a.rounds, prompt_len=a.prompt_tokens)
    machine["load_average_at_end"] = list(os.getloadavg())
    demo = json.loads(Path(a.demo).read_text(encoding="utf-8"))
    out = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
           "note": "load averages recorded in machine. Random weights (2B shape): acceptance cannot be measured on "
                   "that shape; the projection takes it from the demo model (SmolLM2-135M in MiniCPM form) and re-prices "
                   "that run's verify decisions with this cost table",
           "model": {"name": model.get("name"), "config": model.get("config")}, "machine": machine,
           "threads": a.threads, "rounds": a.rounds, "prefill_tokens": a.prompt_tokens,
           "verify_cost": table, "batched_vs_one_token_max_abs_logit_difference_per_row": deviation,
           "projection": project(table, demo), "demo_source": str(Path(a.demo).relative_to(ROOT))
           if Path(a.demo).resolve().is_relative_to(ROOT) else a.demo}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("k:", " ".join(f"{k}:{v['relative_to_one_token']:.2f}" for k, v in table.items()))
    print(json.dumps(out["projection"], indent=2))

if __name__ == "__main__":
    main()
