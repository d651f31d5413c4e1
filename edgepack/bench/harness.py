"""`edgepack bench`: speed, memory and speech rate of an artifact against peer engines, in one run.

llama-bench's discipline: one result schema (`bench()` returns it; the table, `--json` and `--plot`
are printers over it), an unrecorded warm-up run, then repetitions reported as median, min, max and
the raw samples, labels like pp23+tg64, settings and machine in every report.

Engines, all on the same weights and fed the same token ids (the artifact's tokenizer with its chat
template, applied once, outside any timer):

    edgepack            onnx   edgepack's runtime loop over the ONNX folder (OnnxBackend)
    edgepack            gguf   edgepack's runtime loop over the GGUF file (GGUFBackend)
    onnxruntime-genai   onnx   its native Generator loop (greedy) on the same ONNX folder
    llama.cpp           gguf   llama_cpp.Llama.generate (its own eval + greedy sampler) on the same GGUF
    torch-reference     fp32   edgepack's float reference on the source checkpoint (manifest source_path)
    edgepack+lookup     onnx   edgepack's loop with prompt-lookup speculation (runtime/speculate.py, adaptive k)
    edgepack+lookup     gguf   the same over the GGUF file
    llama.cpp+lookup    gguf   llama-cpp-python's own prompt lookup (Llama(draft_model=LlamaPromptLookupDecoding()),
                               its defaults: 2-gram, 10 tokens per draft, always on), the peer

Prompts are grounded (the answer copies spans of the prompt: summarise, rewrite, extract, code edit, English
and Chinese, built from the lighthouse story below and a code sample of CPython's pydoc_data.topics) or
open-ended (the short questions). Speculation rows report drafted and accepted tokens, the acceptance
rate (accepted / drafted), the mean accepted length (accepted per verify) and speedup_vs_plain (decode
tok/s ÷ the same engine without speculation, same prompt, same run). `--no-speculate` leaves them out.

Every engine runs in its own fresh subprocess (`python -m edgepack.bench --worker`, driven over a pipe),
so its peak RSS (ru_maxrss) is its own: interpreter, libraries, weights, KV cache, buffers. The engines
are loaded one at a time, then run round-robin (each prompt, each run k: every engine once), so the
drift of a busy machine hits every engine alike.

What is timed: load_s = constructing the engine from files (edgepack's includes the sha256 check of
every file it reads; its ONNX worker then lets the idle-time huge-page collapse finish before anything
is timed, recorded as engine_detail.huge_pages_s, not in load_s); TTFT = prompt ids in → first token sampled (prefill + one sample; for
onnxruntime-genai it includes creating the Generator, which allocates its KV cache per request);
prefill tok/s = prompt tokens / prefill time (llama.cpp's loop does not split prefill from the first
sample, so its prefill time is its TTFT); decode tok/s = steps after the first token / time from the
first token to the last (each step = one forward + one sample, plus edgepack's incremental
detokenizer). Not timed: tokenization and the chat template, detokenization of peers' output, the
speech meter. Every run generates exactly --tokens tokens (end-of-sequence is ignored, as
llama-bench does), greedy.

Read-bandwidth bound: the run probes how fast `--threads` threads read memory (edgepack/bench/bandwidth.py),
before the engines load and after they quit, keeps the better probe, and gives every decode figure as a
fraction of the bound it sets: bandwidth ÷ (weight bytes of the engine's file + KV cache bytes per token ×
the tokens cached at mid-decode). A decode step reads every weight once; nothing runs faster than that.

Speech rate: words (or CJK characters) per token of the generated text × decode tok/s, against
2.5 words/s of conversational English or 5.2 characters/s of read Mandarin (runtime/meter.py).
"""
import os
from pathlib import Path

from ..errors import BadInput, InternalError
from .engines import LOOKUP
from .machine import machine_info
from .prompts import PROMPTS
from .report import _add_bounds, _add_ratios, _dir_weight_bytes, _fp32_bytes, _gb, _record, _record_overhead
from .worker import _run_interleaved

DEVICES = ("cpu",)






N_CTX = 1024  # every engine gets the same context size


# (engine, backend, artifact format it reads or None for the source checkpoint)
ENGINES = (("edgepack", "onnx", "onnx"), ("onnxruntime-genai", "onnx", "onnx"),
           ("edgepack", "gguf", "gguf"), ("llama.cpp", "gguf", "gguf"), ("torch-reference", "fp32", None),
           ("edgepack+lookup", "onnx", "onnx"), ("edgepack+lookup", "gguf", "gguf"), ("llama.cpp+lookup", "gguf", "gguf"))






def bench(artifact, *, device="cpu", threads=None, runs=3, warmup=1, new_tokens=64, prompts=None,
          engines=None, reference=True, n_ctx=N_CTX, progress=None, log=None, speculate=True):
    """Benchmark an artifact folder (or a callable returning one, called once the settings are checked:
    the CLI passes the demo artifact's export that way).

    Returns the report: {"machine", "settings", "results": [one record per engine and prompt], "skipped"}.
    `progress(engine_label, prompt, k, n)` is called before every run; `log(msg)` for everything else.
    """
    if device not in DEVICES:
        raise BadInput(f"--device {device} is not supported; supported: {', '.join(DEVICES)}")
    if runs < 1 or warmup < 0 or new_tokens < 2:
        raise BadInput("bench needs runs >= 1, warmup >= 0 and at least 2 new tokens")
    log = log or (lambda msg: None)
    root = Path(artifact() if callable(artifact) else artifact)

    from ..formats.manifest import read_manifest, verify_files
    from ..model.tokenizer import load_tokenizer

    m = read_manifest(root)
    verify_files(root, m["tokenizer"]["files"])
    for a in m["artifacts"]:
        verify_files(root, a["files"])  # once here, untimed; edgepack's own load checks again (timed)
    tk = m["tokenizer"]
    tok = load_tokenizer(root / (tk.get("path") or "tokenizer"), bos_id=tk.get("bos_id"), eos_ids=tk.get("eos_ids") or None)
    names = list(prompts or PROMPTS)
    unknown = [p for p in names if p not in PROMPTS]
    if unknown:
        raise BadInput(f"unknown prompt {unknown[0]}; choose from {', '.join(PROMPTS)}")
    cfg = m["model"]["config"]
    n_ctx = min(n_ctx, cfg.get("context_length") or cfg["max_position_embeddings"])
    if new_tokens + 16 > n_ctx:
        raise BadInput(f"--tokens {new_tokens} leaves no room for a prompt in the context of {n_ctx} tokens")
    texts = {p: _fit(tok, PROMPTS[p], n_ctx - new_tokens) for p in names}
    prompt_ids = {p: tok.encode_chat([{"role": "user", "content": texts[p]}]) for p in names}

    threads = threads or os.cpu_count() or 1
    machine = machine_info()
    if machine["load_average_at_start"][0] > machine["cores_logical"]:
        log(f"warning: load average {machine['load_average_at_start'][0]:.1f} on {machine['cores_logical']} cores: other "
            "processes compete with the bench; llama.cpp's spinning thread pool slows down most when they do")
    settings = {"device": device, "threads": threads, "runs": runs, "warmup_runs": warmup, "new_tokens": new_tokens,
                "n_ctx": n_ctx, "sampling": "greedy; end-of-sequence ignored (fixed tg length)", "speculate": speculate,
                "artifact": str(root), "model": m["model"]["name"],
                "prompts": {p: {"text": texts[p], "prompt_tokens": len(prompt_ids[p]), "truncated": texts[p] != PROMPTS[p]}
                            for p in names},
                "timed": __doc__.split("What is timed: ")[1].split("\n\nSpeech rate")[0].replace("\n", " ")}
    formats = {a["format"]: a for a in m["artifacts"]}
    wanted = set(engines) if engines else None
    known = {e for e, _, _ in ENGINES} | {f"{e}/{b}" for e, b, _ in ENGINES}
    if wanted and wanted - known:
        raise BadInput(f"unknown engine {sorted(wanted - known)[0]}; choose from {', '.join(sorted(known))}")
    results, skipped, raw, specs = [], [], {}, []
    for engine, backend, fmt in ENGINES:
        label = f"{engine}/{backend}"
        if wanted is not None and engine not in wanted and label not in wanted:
            continue
        if engine.endswith(LOOKUP) and not speculate:
            continue
        if fmt is not None and fmt not in formats:
            skipped.append({"engine": engine, "backend": backend, "reason": f"the artifact has no {fmt} format"})
            continue
        if fmt is None:
            src = m["model"].get("source_path")
            if not reference:
                skipped.append({"engine": engine, "backend": backend, "reason": "--no-reference given (fp32 torch of "
                                "this model would need about %s of RAM)" % _gb(_fp32_bytes(m))})
                continue
            if not src or not Path(src).is_dir():
                skipped.append({"engine": engine, "backend": backend,
                                "reason": f"source checkpoint {src} (manifest model.source_path) is gone"})
                continue
            path, art_bytes = src, _dir_weight_bytes(src)
        else:
            path = str(root / formats[fmt]["path"])
            art_bytes = sum(f["bytes"] for f in formats[fmt]["files"])
        specs.append({"engine": engine, "backend": backend, "path": path, "root": str(root), "threads": threads,
                      "n_ctx": n_ctx, "artifact_bytes": art_bytes})
    plan = [(p, k) for p in names for k in range(warmup + runs)]
    from .bandwidth import read_bandwidth

    probes = [read_bandwidth(threads)]  # before the workers load, and after they quit (below)
    log(f"read bandwidth {probes[0]['read_bytes_per_s'] / 1e9:.1f} GB/s ({threads} threads)")
    outs = _run_interleaved(specs, plan, prompt_ids, warmup, new_tokens, progress, log)
    probes.append(read_bandwidth(threads))
    for spec in specs:
        out = outs[(spec["engine"], spec["backend"])]
        if isinstance(out, str):  # a peer crashing must not lose the other engines' figures
            skipped.append({"engine": spec["engine"], "backend": spec["backend"], "reason": out})
            continue
        raw[(spec["engine"], spec["backend"])] = out
        for p in out["prompts"]:
            results.append(_record(spec["engine"], spec["backend"], p, out, spec["artifact_bytes"], tok, new_tokens, threads))
    if not results:
        raise InternalError("no engine produced figures: " + "; ".join(s["reason"] for s in skipped))
    _add_ratios(results, default_backend=m["artifacts"][0]["format"])
    bandwidth = {"bytes_per_s": max(p["read_bytes_per_s"] for p in probes), "probes": probes}
    _add_bounds(results, bandwidth["bytes_per_s"], m, formats)
    machine["load_average_at_end"] = list(os.getloadavg())  # other work on the machine skews every engine
    report = {"schema": 1, "machine": machine, "settings": settings, "results": results, "skipped": skipped,
              "read_bandwidth": bandwidth}
    report["runtime_overhead"] = _record_overhead(root, m, raw, formats, log)
    return report


def _fit(tok, text, budget):
    """The prompt text, cut at the end (by characters) until it and its chat template fit in budget tokens."""
    while len(tok.encode_chat([{"role": "user", "content": text}])) > budget:
        text = text[: int(len(text) * 0.9)]
    return text
