"""Decode speed of edgepack's runtime against the engines' own loops, same machine, same run.

    python benchmarks/bench_runtime.py ARTIFACT            # an edgepack artifact with onnx + gguf
    python benchmarks/bench_runtime.py --onnx DIR --gguf FILE [--threads 2] [--runs 5] [--tokens 64]

Engines (all on the same int4 weights, all greedy, all with `--threads` threads):
  runtime-onnx   edgepack.runtime: our Python loop (sampler, stop checks, detokenizer) over OnnxBackend
                 (IOBinding, KV cache bound in place, weights collapsed into 2 MB pages: hugepages.py;
                 the collapse runs in the background after load and is waited for before any run,
                 its seconds recorded as huge_pages)
  runtime-onnx-4k  the same with huge_pages=False (the weights stay on 4 KB pages), for the record
  ortgenai       onnxruntime-genai's native C++ loop (og.Generator) on the same ONNX folder
  llama.cpp      llama.cpp Q4_0 through llama-cpp-python: one llama_decode per token + argmax. The
                 high-level llama_cpp.Llama (what the anchor script uses) segfaults on this machine's AMX
                 CPU, so the GGUF backend's context (extra buffer types off where AMX is advertised) runs it.
  runtime-gguf   edgepack.runtime's loop over GGUFBackend (for the record)

Timed as llama-bench does: a warm-up per engine that is not recorded, then `--runs` repetitions in
which the engines take turns (so drift hits all alike); prefill of `--prompt-tokens` synthetic ids
(300, 301, ...), then `--tokens` decode steps, the clock starting after the first new token. The weights
of the 2B shape are random, so eos is ignored (text is meaningless; speed is the real model's).
Tokenization is not timed (ids go in). Writes benchmarks/results/bench_runtime.json.

Load order matters more than the engines: in one process the session loaded later decodes 3-8%
faster (the same ONNX graph against a byte-identical copy measured 1.048x for the second one,
benchmarks/bench_onnx_export.py), so by default the whole measurement runs twice, the second time
with the engines loaded in reverse order, and the ratios are the geometric mean over both orders.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# llama.cpp is built with OpenMP, whose threads busy-wait at barriers: on this shared 2-core machine (load
# average ~10 from other work) that took the demo model's decode from 18 to 1 tok/s at 2 threads. Passive
# waiting is the fair setting for a loaded machine (override by setting it yourself); recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stats(xs):
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3),
            "mean": round(statistics.mean(xs), 3), "stdev": round(statistics.stdev(xs), 3) if len(xs) > 1 else 0.0,
            "samples": [round(x, 3) for x in xs]}


class Runtime:
    def __init__(self, backend, tokenizer, label):
        from edgepack.runtime import Model

        tokenizer.eos_ids = ()  # random weights: never stop early
        self.model, self.label = Model(backend, tokenizer), label

    def run(self, prompt, n):
        s = self.model.complete(ids=prompt, max_new_tokens=n + 1)
        assert s.decode_steps == n, s.finish_reason
        return {"prefill_tok_s": s.prefill_tok_s, "decode_tok_s": s.decode_tok_s, "ttft_s": s.ttft_s}

    def close(self):
        self.model.close()


class OrtGenai:
    label = "ortgenai"

    def __init__(self, folder, threads):
        import onnxruntime_genai as og

        self.og = og
        cfg = og.Config(str(folder))
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(cfg)

    def run(self, prompt, n):
        og = self.og
        params = og.GeneratorParams(self.model)
        total = len(prompt) + n + 1
        params.set_search_options(do_sample=False, max_length=total, min_length=total)  # min_length: no eos stop
        g = og.Generator(self.model, params)
        t0 = time.perf_counter()
        g.append_tokens([prompt])  # prefill
        t1 = time.perf_counter()
        g.generate_next_token()  # the first token (sampled from the prefill's logits)
        t2 = time.perf_counter()
        for _ in range(n):
            g.generate_next_token()
        t3 = time.perf_counter()
        del g
        return {"prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": n / (t3 - t2), "ttft_s": t2 - t0}

    def close(self):
        del self.model


class LlamaCpp:
    label = "llama.cpp"

    def __init__(self, path, threads, n_ctx):
        from edgepack.runtime.gguf_backend import GGUFBackend

        self.b = GGUFBackend(path, threads=threads, n_ctx=n_ctx)

    def run(self, prompt, n):
        b = self.b
        b.reset()
        t0 = time.perf_counter()
        tok = int(np.argmax(b.forward(prompt)))
        t1 = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(b.forward([tok])))
        t2 = time.perf_counter()
        return {"prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": n / (t2 - t1), "ttft_s": t1 - t0}

    def close(self):
        self.b.close()


def measure(order, args, onnx_dir, gguf, tok_dir, n_ctx, prompt):
    """Load the engines in `order`, warm each up, run `--runs` interleaved rounds, close them all.
    Returns ({engine: [run results]}, {engine: load seconds}, {engine: huge-page collapse})."""
    from edgepack.model.tokenizer import load_tokenizer

    engines, load_s, huge = [], {}, {}
    for name in order:
        t = time.perf_counter()
        if name in ("runtime-onnx", "runtime-onnx-4k"):
            from edgepack.runtime.onnx_backend import OnnxBackend

            b = OnnxBackend(onnx_dir, threads=args.threads, n_ctx=n_ctx, huge_pages=name == "runtime-onnx")
            e = Runtime(b, load_tokenizer(tok_dir), name)
        elif name == "runtime-gguf":
            from edgepack.runtime.gguf_backend import GGUFBackend

            e = Runtime(GGUFBackend(gguf, threads=args.threads, n_ctx=n_ctx), load_tokenizer(tok_dir), name)
        elif name == "ortgenai":
            e = OrtGenai(onnx_dir, args.threads)
        elif name == "llama.cpp":
            e = LlamaCpp(gguf, args.threads, n_ctx)
        else:
            sys.exit(f"unknown engine {name}")
        load_s[name] = round(time.perf_counter() - t, 2)
        hp = getattr(getattr(e, "model", None), "backend", None)
        hp = getattr(hp, "huge_pages", None)
        if hp is not None:  # time the steady state: the background collapse finishes before any run
            hp.wait()
            huge[name] = {"bytes": hp.bytes, "seconds": round(hp.seconds, 2), "error": hp.error}
        e.run(prompt, 8)  # warm-up, not recorded
        engines.append(e)
        print(f"[bench_runtime] loaded {name} in {load_s[name]} s {huge.get(name, '')}", file=sys.stderr, flush=True)

    samples = {e.label: [] for e in engines}
    for r in range(args.runs):
        for e in (engines if r % 2 == 0 else engines[::-1]):  # alternate who goes first
            res = e.run(prompt, args.tokens)
            samples[e.label].append(res)
            print(f"[bench_runtime] run {r + 1}/{args.runs} {e.label}: decode {res['decode_tok_s']:.2f} tok/s, "
                  f"prefill {res['prefill_tok_s']:.1f} tok/s", file=sys.stderr, flush=True)
    while engines:  # no reference left behind: the next load order starts from released memory
        engines.pop().close()
    gc.collect()
    return samples, load_s, huge


def run_ratios(samples):
    """runtime-onnx (and its 4 KB-page variant) over each peer: median of per-run ratios (each run's
    engines ran back to back)."""
    out = {}
    for ours in ("runtime-onnx", "runtime-onnx-4k"):
        for peer in ("ortgenai", "llama.cpp"):
            if ours in samples and peer in samples:
                per_run = [a["decode_tok_s"] / b["decode_tok_s"] for a, b in zip(samples[ours], samples[peer])]
                out[f"{ours} / {peer}"] = {"median_of_runs": round(statistics.median(per_run), 3)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", nargs="?", type=Path, help="edgepack artifact folder (onnx + gguf)")
    ap.add_argument("--onnx", type=Path, help="an ONNX folder instead of the artifact's")
    ap.add_argument("--gguf", type=Path, help="a GGUF file instead of the artifact's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--engines", default="runtime-onnx,ortgenai,llama.cpp,runtime-gguf")
    ap.add_argument("--one-load-order", dest="both_load_orders", action="store_false",
                    help="load the engines once, in --engines order (default: twice, the second time reversed)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_runtime.json")
    args = ap.parse_args()

    from edgepack.bench.machine import machine_info

    onnx_dir, gguf, tok_dir = args.onnx, args.gguf, None
    if args.artifact:
        from edgepack.formats.manifest import find_artifact, read_manifest

        m = read_manifest(args.artifact)
        onnx_dir = onnx_dir or args.artifact / find_artifact(m, "onnx")["path"]
        gguf = gguf or args.artifact / find_artifact(m, "gguf")["path"]
        tok_dir = args.artifact / m["tokenizer"]["path"]
    tok_dir = tok_dir or onnx_dir
    n_ctx = args.prompt_tokens + args.tokens + 8
    prompt = list(range(300, 300 + args.prompt_tokens))
    wanted = args.engines.split(",")

    orders = [wanted, wanted[::-1]] if args.both_load_orders and len(wanted) > 1 else [wanted]
    samples, load_s, order_ratios, huge = {}, {}, [], {}
    for order in orders:
        got, loaded, collapsed = measure(order, args, onnx_dir, gguf, tok_dir, n_ctx, prompt)
        for k, v in got.items():
            samples.setdefault(k, []).extend(v)
        load_s.update({k: load_s.get(k, []) + [v] for k, v in loaded.items()})
        for k, v in collapsed.items():
            huge.setdefault(k, []).append(v)
        order_ratios.append({"load_order": order, **run_ratios(got)})

    results = []
    for name, runs in samples.items():
        results.append({"engine": name, "load_s": min(load_s[name]), **({"huge_pages": huge[name]} if name in huge else {}),
                        "prompt_tokens": args.prompt_tokens,
                        "decode_tokens": args.tokens,
                        "decode_tok_s": stats([x["decode_tok_s"] for x in runs]),
                        "prefill_tok_s": stats([x["prefill_tok_s"] for x in runs]),
                        "ttft_s": stats([x["ttft_s"] for x in runs])})
    med = {r["engine"]: r["decode_tok_s"]["median"] for r in results}
    ratios = {}
    for key in order_ratios[0]:
        if key != "load_order":  # geometric mean over the load orders: each order's bias cancels
            per = [o[key]["median_of_runs"] for o in order_ratios]
            a, b = key.split(" / ")
            ratios[key] = {"geomean_over_load_orders": round(statistics.geometric_mean(per), 3),
                           "per_load_order": per, "of_medians": round(med[a] / med[b], 3)}
    import psutil

    report = {"machine": dict(machine_info(), load_average=os.getloadavg(),
                              available_ram_bytes=psutil.virtual_memory().available), "settings": {"threads": args.threads, "runs": args.runs,
              "onnx": str(onnx_dir), "gguf": str(gguf), "greedy": True, "synthetic_prompt": "ids 300..",
              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
              "command": " ".join(sys.argv), "results": results, "decode_ratios": ratios, "per_load_order": order_ratios,
              "targets": {"runtime-onnx / ortgenai": 1.0, "runtime-onnx / llama.cpp": 1.3}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"{r['engine']:14s} decode {r['decode_tok_s']['median']:7.2f} tok/s (min {r['decode_tok_s']['min']:.2f}, "
              f"max {r['decode_tok_s']['max']:.2f})  prefill {r['prefill_tok_s']['median']:7.1f} tok/s")
    for k, v in ratios.items():
        print(f"{k}: {v['geomean_over_load_orders']:.3f}x (per load order {v['per_load_order']}, of medians {v['of_medians']:.3f}x)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
