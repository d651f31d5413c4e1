"""Prompt lookup on the demo model without a noisy clock: acceptance by match length, and the controller replayed.

    python -m edgepack export --int4 --model demo --threads 2 --out /tmp/h17/demo-int4
    python benchmarks/bench_lookup_replay.py /tmp/h17/demo-int4 [--tokens 128] [--threads 2]

1. The greedy reply to each bench prompt (edgepack.bench.prompts.PROMPTS, end-of-sequence ignored, as edgepack bench
   runs them) from the ONNX backend without speculation.
2. Acceptance by match length: at every position of every reply, the drafter's draft (runtime/speculate.py)
   against the tokens that do come; a drafted token j tokens into a draft found by an n-gram has match
   length m = n + j (the length runtime/speculate.Controller keys its acceptance by). Grounded and
   open-ended prompts apart.
3. The cost of a forward of 1 + k tokens on this artifact (measure() below, the verify-cost mode, medians of
   --rounds alternating rounds), relative to one token.
4. Replay: the real generation loop and Controller over a backend that replays the recorded reply, on a
   virtual clock that charges each forward its measured relative cost (so the load of a shared machine
   cannot move the figure, and every decision the controller makes is priced as the machine priced it).
   Against it, the oracle: the best k at every step knowing the reply (dynamic programming), the bound for
   any controller over this drafter. With --cost-table (a verify_cost_*.json, e.g. the 2B shape's) the same
   replay is priced by that table too: the controller then picks the draft lengths that table favours.

What the replay leaves out: Python time outside the forwards (the drafter, the controller, the sampler's
rows: ~0.05 ms a token against ~10-25 ms a forward here) and that a real clock's costs are noisier than
the medians. The measured speed-up is benchmarks/bench_speculate.py's; this explains it.
Writes benchmarks/results/lookup_replay_demo.json.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgepack.runtime import Backend, Stats, generate, speculate  # noqa: E402


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


class Replay(Backend):
    """Logits that make greedy pick the recorded sequence; each decode forward advances the clock."""

    name = "replay"

    def __init__(self, seq, clock, cost, vocab_size):
        self.seq, self.clock, self.cost, self.vocab_size, self.n_ctx = seq, clock, cost, vocab_size, len(seq) + 64
        self.ids, self.forwards = [], []

    n_past = property(lambda self: len(self.ids))

    def _row(self, j):
        row = np.zeros(self.vocab_size, np.float32)
        row[self.seq[j + 1] if j + 1 < len(self.seq) else 0] = 1.0
        return row

    def forward(self, tokens, all_logits=False):
        if self.ids:  # not the prefill
            self.clock.t += self.cost[len(tokens) - 1]
            self.forwards.append(len(tokens))
        start = len(self.ids)
        self.ids.extend(int(t) for t in tokens)
        if all_logits:
            return np.stack([self._row(j) for j in range(start, len(self.ids))])
        return self._row(len(self.ids) - 1)

    def truncate(self, n):
        del self.ids[n:]

    def reset(self):
        self.ids = []

    def close(self):
        pass


class _Silent:
    eos_ids = ()

    @staticmethod
    def token_bytes(i):
        return b""

    @staticmethod
    def piece(i):
        return ""


def replies(artifact, threads, tokens):
    from edgepack.bench.prompts import PROMPTS
    from edgepack.bench.engines import _NoEos
    from edgepack.runtime import load

    out = {}
    with load(artifact, backend="onnx", threads=threads) as m:
        tok = _NoEos(m.tokenizer)
        for p, text in PROMPTS.items():
            ids = m.prompt_ids(text)
            s = Stats()
            m._cache.ids = None
            for _ in generate(m.backend, tok, ids, max_new_tokens=tokens, stats=s, speculate=False):
                pass
            out[p] = {"prompt": ids, "reply": s.ids, "text_head": m.tokenizer.decode(s.ids)[:100]}
        vocab = m.backend.vocab_size
    return out, vocab


def acceptance_by_match(data, open_ended):
    table = {}
    for p, d in data.items():
        kind = "open-ended" if p in open_ended else "grounded"
        reply, drafter = d["reply"], speculate.Drafter(d["prompt"])
        for i, t in enumerate(reply[:-1]):
            drafter.append(t)
            draft, n = drafter.draft(speculate.MAX_K)
            for j, x in enumerate(draft):
                if i + 1 + j >= len(reply):
                    break
                m = min(n + j, speculate.MAX_MATCH)
                row = table.setdefault(kind, {}).setdefault(m, [0, 0])
                row[0] += 1
                row[1] += x == reply[i + 1 + j]
                if x != reply[i + 1 + j]:
                    break
    return {kind: {str(m): {"drafted": v[0], "kept": v[1], "rate": round(v[1] / v[0], 3)} for m, v in sorted(t.items())}
            for kind, t in table.items()}


def oracle(prompt, reply, cost):
    """The least clock time for the reply's decode steps over every choice of k, knowing the reply."""
    drafter, runs = speculate.Drafter(prompt), []
    for i, t in enumerate(reply):
        drafter.append(t)
        draft, _ = drafter.draft(speculate.MAX_K)
        a = 0
        while a < len(draft) and i + 1 + a < len(reply) and draft[a] == reply[i + 1 + a]:
            a += 1
        runs.append((len(draft), a))
    N = len(reply)
    best = [0.0] * (N + 1)
    for i in range(N - 2, -1, -1):
        k_max, a = runs[i]
        best[i] = min([cost[0] + best[i + 1]] + [cost[k] + best[min(i + min(k, a) + 1, N - 1)] for k in range(1, k_max + 1)])
    return (N - 1) / best[0]


def replay(data, cost, vocab, open_ended):
    clock = Clock()
    real = speculate.time.perf_counter
    speculate.time.perf_counter = clock
    try:
        ctl, per = speculate.Controller(), {}
        for p, d in data.items():  # one controller across the prompts, as edgepack bench keeps it
            be, s, t0 = Replay(d["prompt"] + d["reply"], clock, cost, vocab), Stats(), clock.t
            for _ in generate(be, _Silent, d["prompt"], max_new_tokens=len(d["reply"]), stats=s, controller=ctl):
                pass
            assert s.ids == d["reply"], p
            per[p] = {"kind": "open-ended" if p in open_ended else "grounded",
                      "controller_speedup": round((len(d["reply"]) - 1) / (clock.t - t0), 3),
                      "oracle_speedup": round(oracle(d["prompt"], d["reply"], cost), 3),
                      "drafted_tokens": s.drafted_tokens, "accepted_tokens": s.accepted_tokens,
                      "verify_steps": s.verify_steps, "forwards": len(be.forwards)}
    finally:
        speculate.time.perf_counter = real

    def gm(xs):
        return round(math.exp(sum(map(math.log, xs)) / len(xs)), 3)

    summary = {kind: {key: gm([v[key] for v in per.values() if v["kind"] == kind]) for key in ("controller_speedup", "oracle_speedup")}
               for kind in ("grounded", "open-ended")}
    summary["open-ended"]["controller_speedup_min"] = min(v["controller_speedup"] for v in per.values() if v["kind"] == "open-ended")
    return {"geomean": summary, "per_prompt": per}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact", help="the demo model's artifact folder (an onnx folder inside)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cost-table", action="append", default=[],
                    help="a verify_cost_*.json whose relative costs also price the replay (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lookup_replay_demo.json"))
    a = ap.parse_args()


    from edgepack.bench.prompts import OPEN_ENDED
    from edgepack.bench.machine import machine_info

    t0, machine = time.time(), machine_info()
    data, vocab = replies(a.artifact, a.threads, a.tokens)
    _, table = measure(a.artifact, a.threads, a.rounds, max_k=speculate.MAX_K)
    machine["load_average_at_end"] = list(os.getloadavg())
    costs = {"this artifact": [table[str(k)]["relative_to_one_token"] for k in range(speculate.MAX_K + 1)]}
    for f in a.cost_table:
        t = json.loads(Path(f).read_text(encoding="utf-8"))["verify_cost"]
        costs[Path(f).name] = [t[str(k)]["relative_to_one_token"] for k in range(speculate.MAX_K + 1)]
    out = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
           "note": "replies: greedy, ONNX backend, end-of-sequence ignored; replay: virtual clock charging each "
                   "forward its relative cost (load-independent); oracle: best k per step knowing the reply",
           "machine": machine, "threads": a.threads, "tokens": a.tokens, "wall_s": None,
           "controller": {k: getattr(speculate, k) for k in ("MAX_K", "MAX_NGRAM", "MAX_MATCH", "MIN_GAIN", "DECAY",
                                                              "PRIOR_MISS", "PRIOR_TRIALS", "PRIOR_SLOPE")},
           "verify_cost_this_artifact": table,
           "acceptance_by_match_length": acceptance_by_match(data, OPEN_ENDED),
           "replay": {name: {"relative_cost": c, **replay(data, c, vocab, OPEN_ENDED)} for name, c in costs.items()},
           "replies": {p: {"prompt_tokens": len(d["prompt"]), "text_head": d["text_head"]} for p, d in data.items()}}
    out["wall_s"] = round(time.time() - t0, 1)
    Path(a.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, r in out["replay"].items():
        print(name, json.dumps(r["geomean"]))
    print(json.dumps(out["acceptance_by_match_length"]))
    print(f"wrote {a.out}", file=sys.stderr)


# -- verify-cost: what a (1 + k)-token verify costs ----------------------------------------------
VERIFY_COST_DOC = """What a k-token verify costs (MiniCPM-2B shape, or any artifact), and the speed-up that projects for speculation.

    python benchmarks/_minicpm_2b.py /tmp/edgepack-2b/ckpt
    python -m edgepack export --int4 --model /tmp/edgepack-2b/ckpt --format onnx --method rtn \\
        --fidelity-tokens 0 --threads 2 --out /tmp/edgepack-2b/int4-onnx
    python benchmarks/bench_lookup_replay.py verify-cost /tmp/edgepack-2b/int4-onnx [--threads 2] [--rounds 8]
    python benchmarks/bench_lookup_replay.py verify-cost DEMO_ARTIFACT --out benchmarks/results/verify_cost_demo.json

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


def main_verify_cost():
    ap = argparse.ArgumentParser(description=VERIFY_COST_DOC.split("\n")[0])
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
    if sys.argv[1:2] == ["verify-cost"]:
        sys.argv.pop(1)
        main_verify_cost()
    else:
        main()
