"""Prompt lookup on the demo model without a noisy clock: acceptance by match length, and the controller replayed.

    python -m edgepack export --int4 --model demo --threads 2 --out /tmp/h17/demo-int4
    python benchmarks/bench_lookup_replay.py /tmp/h17/demo-int4 [--tokens 128] [--threads 2]

1. The greedy reply to each bench prompt (edgepack.bench.prompts.PROMPTS, end-of-sequence ignored, as edgepack bench
   runs them) from the ONNX backend without speculation.
2. Acceptance by match length: at every position of every reply, the drafter's draft (runtime/speculate.py)
   against the tokens that do come; a drafted token j tokens into a draft found by an n-gram has match
   length m = n + j (the length runtime/speculate.Controller keys its acceptance by). Grounded and
   open-ended prompts apart.
3. The cost of a forward of 1 + k tokens on this artifact (benchmarks/bench_verify_cost.measure, medians of
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

    from bench_verify_cost import measure

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


if __name__ == "__main__":
    main()
