"""The MiniCPM3-4B shape (multi-head latent attention) end to end: checkpoint → int4 export → decode speed.

    python benchmarks/bench_minicpm3_4b.py [--work /tmp/edgepack-minicpm3] [--runs 1] [--tokens 16]
    -> benchmarks/results/bench_minicpm3_4b.json

1. A MiniCPM3-4B-shaped checkpoint with random bf16 weights (hidden 2560, 62 layers, 40 heads, q rank 768,
   kv rank 256, heads of nope 64 + rope 32, v 64, FFN 6400, vocab 73448, tied, LongRoPE), written tensor
   by tensor, four layers a shard: the real size (≈8.1 GB) and cost, meaningless text.
2. `edgepack export --int4 --method rtn --format onnx,gguf --context CTX` under /usr/bin/time -v: wall time
   and peak RSS of both formats in one process (the bar: 3 GB). The context is cut to --context (default
   2048) because the decompressed KV cache is 0.91 MiB a token in float16 (ONNX) and genai allocates the
   whole context up front: 29 GiB at the model's 32768.
3. `edgepack bench` with 2 threads: edgepack's runtime on both backends against onnxruntime-genai and
   llama.cpp on the same files, in one run.
The calibrated default method is timed by bench_calibration_2b.py on this script's checkpoint
(README, MiniCPM3).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

CONFIG = dict(
    architectures=["MiniCPM3ForCausalLM"], model_type="minicpm3", hidden_size=2560, intermediate_size=6400,
    num_hidden_layers=62, num_attention_heads=40, num_key_value_heads=40, vocab_size=73448,
    q_lora_rank=768, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
    max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
    rope_scaling={"type": "longrope", "long_factor": [1.0 + 0.5 * i for i in range(16)],
                  "short_factor": [1.0 + 0.02 * i for i in range(16)], "original_max_position_embeddings": 32768},
    scale_emb=12, dim_model_base=256, scale_depth=1.4, tie_word_embeddings=True,
    bos_token_id=1, eos_token_id=[2, 73440], torch_dtype="bfloat16")


def timed(cmd, label):
    """Run cmd under /usr/bin/time -v; return wall seconds and peak RSS bytes."""
    print(f"[minicpm3] {label}: {' '.join(map(str, cmd))}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(["/usr/bin/time", "-v", *map(str, cmd)], stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if not line.startswith("\t"):
            sys.stderr.write(line)
    if p.wait() != 0:
        sys.exit(f"[minicpm3] {label} failed (exit {p.returncode})")
    rss = next(int(m.group(1)) * 1024 for ln in lines if (m := re.search(r"Maximum resident set size \(kbytes\): (\d+)", ln)))
    return {"command": " ".join(map(str, cmd)), "wall_s": round(time.perf_counter() - t, 2), "peak_rss_bytes": rss,
            "load_average_after": os.getloadavg()}


def make_checkpoint(out, layers):
    import torch
    from safetensors.torch import save_file

    from edgepack.model.checkpoint import expected_shapes
    from edgepack.model.families import parse_config
    from edgepack.model.testmodels import train_sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    raw = dict(CONFIG, num_hidden_layers=layers)
    shapes = expected_shapes(parse_config(raw))
    g = torch.Generator().manual_seed(0)
    groups = [["model.embed_tokens.weight"]]
    for i in range(0, layers, 4):
        groups.append([n for n in shapes if any(n.startswith(f"model.layers.{j}.") for j in range(i, i + 4))])
    groups[-1].append("model.norm.weight")
    weight_map = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {}
        for name in names:
            t = torch.empty(shapes[name], dtype=torch.bfloat16)
            t.fill_(1.0) if t.dim() == 1 else t.normal_(0.0, 0.02, generator=g)
            shard[name] = t
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
        del shard
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    train_sentencepiece(out, vocab_size=2000)
    (out / "config.json").write_text(json.dumps(raw, indent=2))  # last: its presence marks a complete checkpoint


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgepack-minicpm3"))
    ap.add_argument("--layers", type=int, default=62, help="fewer for a smoke run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--context", type=int, default=2048, help="exported context (the decompressed KV is allocated for it)")
    ap.add_argument("--ctx", type=int, default=512, help="bench context")
    ap.add_argument("--prompts", default="en-short")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt, art = args.work / "minicpm3-4b", args.work / "minicpm3-4b-int4-rtn"
    steps = {"load_average_at_start": os.getloadavg()}
    if not (ckpt / "config.json").is_file():
        t = time.perf_counter()
        make_checkpoint(ckpt, args.layers)
        steps["make_checkpoint"] = {"wall_s": round(time.perf_counter() - t, 1)}
    steps["export_rtn_both"] = timed([sys.executable, "-m", "edgepack", "export", "--int4", "--method", "rtn", "--model", ckpt,
                                      "--out", art, "--format", "onnx,gguf", "--fidelity-tokens", 0, "--context", args.context,
                                      "--threads", args.threads, "--force"], "export")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "bench_minicpm3_4b.json"
    steps["bench"] = timed([sys.executable, "-m", "edgepack", "bench", art, "--device", "cpu", "--threads", args.threads,
                            "--runs", args.runs, "--tokens", args.tokens, "--ctx", args.ctx, "--prompts", args.prompts,
                            "--engines", "edgepack,onnxruntime-genai,llama.cpp", "--no-reference", "--json", out_json], "bench")

    from edgepack.formats.manifest import inspect_artifact

    info = inspect_artifact(art)
    report = json.loads(out_json.read_text())
    report["pipeline"] = {"checkpoint": str(ckpt), "artifact": str(art), "steps": steps, "config": CONFIG,
                          "layers": args.layers, "exported_context": args.context,
                          "artifact_files": [dict(f, format=a["format"]) for a in info["artifacts"] for f in a["files"]],
                          "memory_by_context": info["memory_by_context"],
                          "export_rss_bar_bytes": 3 * 10**9,
                          "note": "MiniCPM3-4B shape with random bf16 weights: real size and cost, meaningless text; "
                                  "the machine is shared (load averages recorded)"}
    out_json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"[minicpm3] wrote {out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
