"""MiniCPM-V 4.0 shape (4.1B parameters, random weights): export cost, image encode and TTFT on 2 threads.

    python benchmarks/bench_minicpmv.py [--ckpt /tmp/minicpmv4] [--work DIR] -> results/minicpmv_4b.json
    python benchmarks/bench_minicpmv.py --smoke --ckpt /tmp/minicpmv-smoke   (2 + 2 layers: the script runs; no figures)

1. Writes a checkpoint in MiniCPM-V 4.0's exact config layout at its real size (LLM: hidden 2560, 32 layers,
   32 heads / 2 KV heads, head_dim 128, FFN 10240, vocab 73448, untied, LongRoPE; SigLIP NaViT tower: 1152 wide,
   27 layers, MLP 4304, 70×70 positions; resampler: 64 queries) with random bf16 weights, shard by shard.
2. `edgepack export --int4 --method rtn --format onnx,gguf --fidelity-tokens 0 --threads 2` under
   /usr/bin/time -v: wall time and peak RSS (the issue's bar: 4 GB).
3. For a 448×448 and a 1344×896 picture (1 and 7 slices), on each backend in its own process: image encode ms
   (and per slice), TTFT after encoding, decode tok/s (16 new tokens, greedy, no speculation); and llama.cpp's
   own route, llama-cpp-python's Llama + MiniCPMv26ChatHandler over the same GGUF pair (TTFT there includes
   its encode). The text is meaningless (random weights); the costs are the real model's.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_2b import timed  # noqa: E402

from edgepack.bench.machine import machine_info  # noqa: E402

SIZES = ((448, 448), (1344, 896))
NEW_TOKENS = 16


def make(out, layers=32, vision_layers=27):
    import torch
    from safetensors.torch import save_file

    from edgepack.model.checkpoint import expected_shapes
    from edgepack.model.config import vision_shapes
    from edgepack.model.families import parse_config
    from edgepack.model.families.minicpmv import vision_sources
    from edgepack.model.testmodels import CHATML, IMAGE_SYMBOLS, tiny_minicpmv_config, train_sentencepiece

    out.mkdir(parents=True, exist_ok=True)
    hd = 128
    raw = tiny_minicpmv_config("4.0")
    raw.update(hidden_size=2560, intermediate_size=10240, num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=2,
               head_dim=hd, vocab_size=73448, max_position_embeddings=32768, torch_dtype="bfloat16",
               rope_scaling={"rope_type": "longrope", "long_factor": [1.0 + 0.1 * i for i in range(hd // 2)],
                             "short_factor": [1.0 + 0.01 * i for i in range(hd // 2)], "original_max_position_embeddings": 32768},
               vision_config={"hidden_size": 1152, "image_size": 980, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                              "num_attention_heads": 16, "num_hidden_layers": vision_layers, "patch_size": 14})
    cfg = parse_config(raw)
    g = torch.Generator().manual_seed(0)
    shapes = {"llm." + n: s for n, s in expected_shapes(cfg).items()}
    src = vision_sources(cfg.vision)
    vshapes = {src[n][0]: s for n, s in vision_shapes(cfg.vision).items()}
    groups = [["llm.model.embed_tokens.weight"], ["llm.lm_head.weight", "llm.model.norm.weight"]]
    for i in range(0, cfg.num_hidden_layers, 4):
        groups.append([n for n in shapes if any(n.startswith(f"llm.model.layers.{j}.") for j in range(i, i + 4))])
    groups.append(list(vshapes))
    allshapes = {**shapes, **vshapes}
    wm = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {}
        for n in names:
            t = torch.empty(allshapes[n], dtype=torch.bfloat16)
            t.fill_(1.0) if t.dim() == 1 else t.normal_(0.0, 0.02, generator=g)
            shard[n] = t
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        wm.update({n: fname for n in names})
        print(f"wrote {fname}", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    train_sentencepiece(out, 2000, extra_symbols=IMAGE_SYMBOLS + ["<|im_start|>", "<|im_end|>"])
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    raw["eos_token_id"] = [2, sp.PieceToId("<|im_end|>")]
    tc = json.loads((out / "tokenizer_config.json").read_text())
    tc["chat_template"] = CHATML
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    n = sum(int(torch.Size(s).numel()) for s in allshapes.values())
    print(f"{n / 1e9:.2f}B parameters in {out}")
    return n


def pictures(work):
    import numpy as np
    from PIL import Image

    out = []
    for w, h in SIZES:
        a = (np.random.default_rng(w).random((h // 16, w // 16, 3)) * 255).astype(np.uint8)
        p = work / f"pic{w}x{h}.png"
        Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR).save(p)
        out.append(p)
    return out


def run_edgepack(art, backend, pics):
    """One backend in this process: [{image, slices, encode_ms, ...}] (a warm-up image first, not recorded)."""
    from edgepack.runtime import load

    rows = []
    with load(art, backend=backend, threads=2) as m:
        m.complete("Hi", images=[str(pics[0])], max_new_tokens=2, speculate=False)  # warm-up
        m._encoded.clear()
        for p in pics:
            s = m.complete("Describe this picture.", images=[str(p)], max_new_tokens=NEW_TOKENS, speculate=False)
            rows.append({"engine": "edgepack", "backend": backend, "image": p.stem[3:], "slices": s.image_slices,
                         "image_tokens": s.image_tokens, "encode_ms": round(s.encode_ms, 1),
                         "encode_ms_per_slice": round(s.encode_ms / s.image_slices, 1), "ttft_after_encode_s": round(s.ttft_s, 3),
                         "prefill_tok_s": round(s.prefill_tok_s, 2), "decode_tok_s": round(s.decode_tok_s, 2), "tokens": s.tokens})
    return rows


def run_llama_cpp(art, pics):
    """llama-cpp-python's own multimodal route over the same GGUF pair (streamed; TTFT includes encoding)."""
    import base64

    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MiniCPMv26ChatHandler

    entry = next(a for a in json.loads((art / "edgepack.json").read_text())["artifacts"] if a["format"] == "gguf")
    llm = Llama(model_path=str(art / entry["path"]), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False,
                chat_handler=MiniCPMv26ChatHandler(clip_model_path=str(art / entry["mmproj"]["path"]), verbose=False))
    rows = []
    for k, p in enumerate([pics[0], *pics]):
        url = "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
        t0, first, n = time.perf_counter(), None, 0
        for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Describe this picture."}]}],
                max_tokens=NEW_TOKENS, temperature=0.0, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                n += 1
                first = first or time.perf_counter()
        end = time.perf_counter()
        if k:  # the first pass is the warm-up
            rows.append({"engine": "llama-cpp-python mtmd", "backend": "gguf", "image": p.stem[3:],
                         "ttft_with_encode_s": round((first or end) - t0, 3),
                         "decode_tok_s": round((n - 1) / (end - first), 2) if first and n > 1 else None, "chunks": n})
    llm.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("/tmp/minicpmv4"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgepack-bench-minicpmv"))
    ap.add_argument("--smoke", action="store_true", help="2 LLM and 2 vision layers: checks the script, measures nothing")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # a child process: onnx | gguf | llama_cpp
    a = ap.parse_args()
    if a.part:
        pics = sorted(a.work.glob("pic*.png"), key=lambda p: p.stat().st_size)
        fn = {"onnx": lambda: run_edgepack(a.work / "art", "onnx", pics), "gguf": lambda: run_edgepack(a.work / "art", "gguf", pics),
              "llama_cpp": lambda: run_llama_cpp(a.work / "art", pics)}[a.part]
        print(json.dumps(fn()))
        return
    result = {"benchmark": "minicpmv_4b", "command": "python benchmarks/bench_minicpmv.py", "machine": machine_info(),
              "load_average_before": list(os.getloadavg())}
    if not (a.ckpt / "config.json").is_file():
        t = time.perf_counter()
        result["parameters"] = make(a.ckpt, *((2, 2) if a.smoke else ()))
        result["make_s"] = round(time.perf_counter() - t, 1)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    result["export"] = timed([sys.executable, "-m", "edgepack", "export", "--int4", "--method", "rtn", "--format", "onnx,gguf",
                              "--fidelity-tokens", "0", "--threads", "2", "--model", a.ckpt, "--out", a.work / "art"],
                             "export")
    result["export"]["bar_peak_rss_bytes"] = 4 * 10**9
    result["artifact_bytes"] = {p.name: p.stat().st_size for p in (a.work / "art").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20}
    pictures(a.work)
    result["runs"] = []
    for part in ("onnx", "gguf", "llama_cpp"):
        r = subprocess.run([sys.executable, __file__, "--work", str(a.work), "--part", part], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode:
            result["runs"].append({"part": part, "error": r.stderr.strip().splitlines()[-1][:300]})
        else:
            result["runs"] += json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(result["runs"][-1]), flush=True)
    result["load_average_after"] = list(os.getloadavg())
    out = ROOT / "benchmarks" / "results" / ("minicpmv_smoke.json" if a.smoke else "minicpmv_4b.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
