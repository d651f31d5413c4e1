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

Read-bandwidth bound: the run probes how fast `--threads` threads read memory (edgepack/bandwidth.py),
before the engines load and after they quit, keeps the better probe, and gives every decode figure as a
fraction of the bound it sets: bandwidth ÷ (weight bytes of the engine's file + KV cache bytes per token ×
the tokens cached at mid-decode). A decode step reads every weight once; nothing runs faster than that.

Speech rate: words (or CJK characters) per token of the generated text × decode tok/s, against
2.5 words/s of conversational English or 5.2 characters/s of read Mandarin (runtime/meter.py).
"""
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .errors import BadInput, InternalError

DEVICES = ("cpu",)
DEMO_NAME = "smollm2-135m-instruct-minicpm"
OVERHEAD_FILE = "edgepack.bench.json"  # beside edgepack.json: measured runtime overhead, read by inspect
N_CTX = 1024  # every engine gets the same context size

# (engine, backend, artifact format it reads or None for the source checkpoint)
ENGINES = (("edgepack", "onnx", "onnx"), ("onnxruntime-genai", "onnx", "onnx"),
           ("edgepack", "gguf", "gguf"), ("llama.cpp", "gguf", "gguf"), ("torch-reference", "fp32", None),
           ("edgepack+lookup", "onnx", "onnx"), ("edgepack+lookup", "gguf", "gguf"), ("llama.cpp+lookup", "gguf", "gguf"))
LOOKUP = "+lookup"  # the suffix of an engine that drafts from the prompt; the engine without it is its plain self

_EN_LONG = (
    "The lighthouse stood on a rock at the mouth of the harbour for more than two hundred years. Its keepers "
    "lived in a small stone house beside it, and each evening one of them climbed the narrow stairs to light "
    "the lamp. In the early years the lamp burned whale oil, which smoked and had to be trimmed every few hours "
    "through the night. Later it burned paraffin, and later still it was lit by electricity from a cable laid "
    "along the sea floor. Ships coming in from the west looked for its beam long before they could see the "
    "coast, and fishermen timed their return by it. During storms the keepers kept watch in turns, writing the "
    "wind, the height of the waves and every passing vessel into a thick logbook. When the light was finally "
    "automated, the last keeper locked the door, handed the key to the harbour master and moved to a cottage "
    "in the town, from which he could still see the beam sweep across the water every night.\n\n"
    "Summarize this story in a few sentences, then explain why lighthouses were automated.")
_ZH_LONG = (
    "灯塔矗立在港口入口的一块礁石上，已经两百多年了。守塔人住在旁边一间小石屋里，每天傍晚都有一个人爬上狭窄的楼梯去点灯。"
    "早年灯里烧的是鲸油，烟很大，夜里每隔几个小时就要修剪一次灯芯。后来改烧煤油，再后来用上了从海底电缆送来的电。"
    "从西边驶来的船只，远在看见海岸之前就开始寻找它的光束，渔民们也靠它来安排返航的时间。暴风雨的夜里，守塔人轮流值班，"
    "把风向、浪高和每一艘经过的船都记在一本厚厚的日志里。灯塔最终实现自动化之后，最后一位守塔人锁上门，把钥匙交给港务长，"
    "搬到了镇上的一间小屋，每天晚上他仍然能看见光束扫过海面。\n\n请用几句话概括这个故事，然后解释灯塔为什么会实现自动化。")
_EN_STORY, _ZH_STORY = _EN_LONG.split("\n\n")[0], _ZH_LONG.split("\n\n")[0]


def _code_sample():
    """A short function from CPython's own reference text (pydoc_data.topics, as edgepack.texts)."""
    import textwrap

    from pydoc_data.topics import topics

    text = topics.get("function", "")
    start = text.find("   def whats_on_the_telly")
    if start < 0:  # another CPython's topics: the first indented block with a def and a return
        import re

        m = next((m for t in topics.values() for m in re.finditer(r"\n((?:   [^\n]*\n){3,12})", t)
                  if "def " in m.group(1) and "return" in m.group(1)), None)
        return textwrap.dedent(m.group(1)) if m else "def add(a, b):\n    return a + b\n"
    end = text.find("\n\n", start)
    return textwrap.dedent(text[start:end]) + "\n"


PROMPTS = {  # name -> user message (the chat template is applied)
    "en-short": "Explain why the sky is blue.",
    "en-long": _EN_LONG,
    "zh-short": "请解释天空为什么是蓝色的。",
    "zh-long": _ZH_LONG,
    "en-rewrite": _EN_STORY + "\n\nRewrite the text above, word for word, but replace every \"keepers\" with \"guards\".",
    "en-extract": _EN_STORY + "\n\nQuote, word for word, the three sentences of the text above that say what the lamp burned.",
    "en-code": "Rename the parameter penguin to bird everywhere in this function and return the whole function:\n\n"
               + _code_sample(),
    "zh-rewrite": _ZH_STORY + "\n\n请逐字复述上面的文字，只把其中的“守塔人”都换成“看守”。",
    "zh-extract": _ZH_STORY + "\n\n请逐字引用上文中说明灯里烧什么的句子。",
}
OPEN_ENDED = ("en-short", "zh-short")  # every other prompt is grounded: its answer copies from the prompt


# -- the library entry point ---------------------------------------------------------------------

def bench(artifact=None, *, device="cpu", threads=None, runs=3, warmup=1, new_tokens=64, prompts=None,
          engines=None, reference=True, n_ctx=N_CTX, progress=None, log=None, speculate=True):
    """Benchmark an artifact folder (None: the demo model's default artifact, exported if missing).

    Returns the report: {"machine", "settings", "results": [one record per engine and prompt], "skipped"}.
    `progress(engine_label, prompt, k, n)` is called before every run; `log(msg)` for everything else.
    """
    if device not in DEVICES:
        raise BadInput(f"--device {device} is not supported; supported: {', '.join(DEVICES)}")
    if runs < 1 or warmup < 0 or new_tokens < 2:
        raise BadInput("bench needs runs >= 1, warmup >= 0 and at least 2 new tokens")
    log = log or (lambda msg: None)
    root = _artifact(artifact, threads, log)

    from .manifest import read_manifest, verify_files
    from .tokenizer import load_tokenizer

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


def _artifact(artifact, threads, log):
    if artifact is not None:
        return Path(artifact)
    from .export import default_out, export

    root = default_out(DEMO_NAME, "int4")
    if not (root / "edgepack.json").is_file():
        log(f"no artifact given and {root} is missing: exporting the demo model first")
        export(model="demo", out=root, threads=threads, log=log)
    return root


# -- one subprocess per engine -------------------------------------------------------------------

_MARK = "@@edgepack-bench "
PAUSE_S = 0.2  # between runs of different engines: lets the last one's spinning worker threads go to sleep


class _Worker:
    """One engine in a fresh interpreter (`python -m edgepack.bench --worker`), driven over stdin/stdout."""

    def __init__(self, spec):
        import threading

        self.spec, self.label = spec, f"{spec['engine']}/{spec['backend']}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgepack.bench", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.err = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.send(spec)

    def send(self, msg):
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: recv() says how

    def quit(self, log):
        """Ask the worker to close its engine and exit; returns its closing report (peak RSS, engine detail)."""
        self.send({"quit": True})
        done = self.recv(log)["done"]  # InternalError if it died instead
        self.proc.wait()
        return done

    def recv(self, log):
        """The worker's next message; other lines on its stdout (library chatter) go to the log."""
        for line in self.proc.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK):])
            if line.strip():
                log(f"{self.label}: {line.rstrip()}")
        rc = self.proc.wait()
        time.sleep(0.1)  # let the stderr reader catch up
        tail = " | ".join(x.strip() for x in self.err[-3:] if x.strip())[:300]
        why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        raise InternalError(f"{self.label} worker failed ({why}){': ' + tail if tail else ''}")


def _run_interleaved(specs, plan, prompt_ids, warmup, new_tokens, progress, log):
    """Load every engine (one at a time), then run the plan round-robin: for each (prompt, run k), each engine
    once, in reverse order every other round. Drift on a busy machine then hits every engine alike instead
    of whichever ran last.
    Returns {(engine, backend): figures, or the reason it failed}."""
    workers, outs = [], {}
    try:
        for spec in specs:
            log(f"{spec['engine']}/{spec['backend']}: loading {spec['path']}")
            w = _Worker(spec)
            try:
                w.loaded = w.recv(log)["loaded"]
                workers.append(w)
                w.runs = {}
            except InternalError as e:
                outs[(spec["engine"], spec["backend"])] = str(e)
                log(str(e))
        n = len(plan) // max(1, len({p for p, _ in plan}))
        for r, (p, k) in enumerate(plan):
            # every other round in reverse: the engine that runs right after another one's threads went
            # idle was measured a few % off, and that must not always be the same engine
            for w in (list(workers) if r % 2 == 0 else workers[::-1]):
                if progress:
                    progress(w.label, p, k + 1, n)
                w.send({"prompt": p, "ids": prompt_ids[p], "n": new_tokens})
                try:
                    r = w.recv(log)["run"]
                except InternalError as e:
                    outs[(w.spec["engine"], w.spec["backend"])] = str(e)
                    log(str(e))
                    workers.remove(w)
                    continue
                if k >= warmup:
                    w.runs.setdefault(p, []).append(r)
                time.sleep(PAUSE_S)
        for w in workers:
            try:
                done = w.quit(log)
            except InternalError as e:
                outs[(w.spec["engine"], w.spec["backend"])] = str(e)
                continue
            outs[(w.spec["engine"], w.spec["backend"])] = dict(
                w.loaded, **done, prompts=[{"name": p, "prompt_tokens": len(prompt_ids[p]), "runs": w.runs[p]}
                                           for p in dict.fromkeys(p for p, _ in plan)])
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    return outs


def worker():
    """The subprocess side: read the spec, load the engine, then answer run requests until told to quit."""
    def say(**msg):
        sys.stdout.write(_MARK + json.dumps(msg) + "\n")
        sys.stdout.flush()

    spec = json.loads(sys.stdin.readline())
    eng = ENGINE_CLASSES[spec["engine"]](spec)  # imports its library (counted: it is part of the footprint)
    rss_before = _rss()
    t = time.perf_counter()
    eng.load()
    load_s = time.perf_counter() - t
    eng.settle()
    say(loaded={"load_s": load_s, "rss_before_load_bytes": rss_before, "rss_after_load_bytes": _rss()})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("quit"):
            break
        say(run=eng.run(msg["ids"], msg["n"]))
    peak = _peak_rss()
    eng.close()
    say(done={"peak_rss_bytes": peak, "detail": eng.detail})


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss():
    """This process's own peak RSS. Not ru_maxrss: Linux carries that across fork+exec, so every worker
    reported its parent's high-water mark (2.9 GiB for each engine after an in-process demo export).
    VmHWM belongs to the current address space, which exec replaces."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class _NoEos:
    """The artifact's tokenizer with no end-of-sequence ids: every run generates exactly N tokens."""

    eos_ids = ()

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)


class _Engine:
    """load() builds the engine; run(ids, n) -> {"ttft_s", "prefill_s", "decode_s", "decode_steps", "ids"}."""

    detail = None

    def __init__(self, spec):
        self.spec = spec

    def settle(self):
        """After load, before anything is timed: finish background work (not part of load_s)."""


class EdgepackEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        from . import runtime  # noqa: F401  (imports onnxruntime or llama.cpp lazily, at load)

    def load(self):
        from .runtime import load

        self.model = load(self.spec["root"], backend=self.spec["backend"], threads=self.spec["threads"], n_ctx=self.spec["n_ctx"])
        self.tok = _NoEos(self.model.tokenizer)

    def settle(self):
        # the idle-time huge-page collapse (runtime/hugepages.py) finishes here, while this worker is
        # alone, rather than in its idle gaps while the other engines are being timed
        hp = getattr(self.model.backend, "huge_pages", None)
        if hp is not None:
            hp.wait()
            self.detail = {"huge_pages_bytes": hp.bytes, "huge_pages_s": round(hp.seconds, 2), "huge_pages_error": hp.error}

    def run(self, ids, n):
        from .runtime import Stats, generate

        s = Stats()
        lookup = self.spec["engine"].endswith(LOOKUP)
        for _ in generate(self.model.backend, self.tok, ids, max_new_tokens=n, stats=s, speculate=lookup,
                          controller=self.model._controller):  # its measured costs carry over, as in a chat
            pass
        return {"ttft_s": s.ttft_s, "prefill_s": s.prefill_s, "decode_s": s.decode_s, "decode_steps": s.decode_steps,
                "ids": s.ids, "drafted_tokens": s.drafted_tokens, "accepted_tokens": s.accepted_tokens,
                "verify_steps": s.verify_steps}

    def close(self):
        self.model.close()


class OrtGenaiEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import onnxruntime_genai as og

        self.og = og

    def load(self):
        og, th = self.og, self.spec["threads"]
        cfg = og.Config(self.spec["path"])
        cfg.clear_providers()  # CPU
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": th, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(cfg)
        self.detail = {"intra_op_num_threads": th, "past_present_share_buffer": "as in genai_config.json"}

    def run(self, ids, n):
        og = self.og
        t0 = time.perf_counter()
        params = og.GeneratorParams(self.model)
        total = len(ids) + n
        params.set_search_options(do_sample=False, max_length=total, min_length=total)  # min_length: no early eos
        g = og.Generator(self.model, params)
        t1 = time.perf_counter()
        g.append_tokens(ids)
        prefill_s = time.perf_counter() - t1
        out, t_first = [], None
        while len(out) < n and not g.is_done():
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
            if t_first is None:
                t_first = time.perf_counter()
        end = time.perf_counter()
        del g
        return {"ttft_s": t_first - t0, "prefill_s": prefill_s, "decode_s": end - t_first, "decode_steps": len(out) - 1,
                "ids": out}

    def close(self):
        del self.model


class LlamaCppEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import llama_cpp

        self.llama_cpp = llama_cpp

    def load(self):
        import llama_cpp.llama as high

        from .runtime.gguf_backend import use_extra_buffer_types

        extra = use_extra_buffer_types()
        if not extra:
            # Same workaround as GGUFBackend: llama.cpp's AMX repacking segfaults on Q4_0 in this VM, and
            # Llama() has no argument for it, so its default model params are patched in this worker only.
            orig = high.llama_cpp.llama_model_default_params

            def params():
                p = orig()
                p.use_extra_bufts = False
                return p

            high.llama_cpp.llama_model_default_params = params
        th = self.spec["threads"]
        draft = None
        if self.spec["engine"].endswith(LOOKUP):
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            draft = _CountingDraft(LlamaPromptLookupDecoding())  # its defaults: max_ngram_size 2, 10 tokens
        self.draft = draft
        # logits_all=True with a draft model: llama-cpp-python 0.3.36 sizes its scores buffer from the argument
        # (n_batch rows without it) though a draft model turns logits_all on, and crashes past n_batch tokens
        self.llm = self.llama_cpp.Llama(model_path=self.spec["path"], n_ctx=self.spec["n_ctx"], n_threads=th,
                                        n_threads_batch=th, n_batch=512, verbose=False, draft_model=draft,
                                        logits_all=draft is not None)
        self.detail = {"n_threads": th, "n_batch": 512, "use_extra_bufts": extra}
        if draft is not None:
            self.detail["draft_model"] = {"class": "LlamaPromptLookupDecoding", "max_ngram_size": draft.inner.max_ngram_size,
                                          "num_pred_tokens": draft.inner.num_pred_tokens}
            evals, orig = self, self.llm.eval

            def eval_counted(tokens):  # every eval after the prefill verifies one token + its draft
                evals.evals += 1
                return orig(tokens)

            self.llm.eval = eval_counted

    def run(self, ids, n):
        self.llm.reset()  # else generate() reuses the cached prefix and skips the prefill
        self.evals = 0
        if self.draft is not None:
            self.draft.drafted = 0
        t0 = time.perf_counter()
        out, t_first = [], None
        for tok in self.llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if t_first is None:
                t_first = time.perf_counter()
            out.append(int(tok))
            if len(out) == n:
                break
        end = time.perf_counter()
        r = {"ttft_s": t_first - t0, "prefill_s": t_first - t0, "decode_s": end - t_first,
             "decode_steps": len(out) - 1, "ids": out}
        if self.draft is not None:
            # tokens that came without an eval of their own were drafted and kept (the prefill's eval gave the first)
            r.update(drafted_tokens=self.draft.drafted, accepted_tokens=max(0, len(out) - self.evals),
                     verify_steps=max(0, self.evals - 1))
        return r

    def close(self):
        self.llm.close()


class _CountingDraft:
    """A llama-cpp-python draft model that counts the tokens it proposes (what its eval then verifies)."""

    def __init__(self, inner):
        self.inner, self.drafted = inner, 0

    def __call__(self, input_ids, **kw):
        out = self.inner(input_ids, **kw)
        self.drafted += len(out)
        return out


class TorchEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import torch

        torch.set_num_threads(spec["threads"])
        self.torch = torch

    def load(self):
        from .checkpoint import load
        from .reference import MiniCPM

        ckpt = load(self.spec["path"])
        self.model = MiniCPM.from_checkpoint(ckpt)
        ckpt.close()
        self.detail = {"dtype": "float32", "torch_threads": self.torch.get_num_threads()}

    def run(self, ids, n):
        from .reference import KVCache

        torch, model = self.torch, self.model
        with torch.inference_mode():
            cache = KVCache(model.config.num_hidden_layers)
            t0 = time.perf_counter()
            logits = model(torch.tensor([ids]), cache)
            prefill_s = time.perf_counter() - t0
            out = [int(logits[0, -1].argmax())]
            t_first = time.perf_counter()
            while len(out) < n:
                logits = model(torch.tensor([[out[-1]]]), cache)
                out.append(int(logits[0, -1].argmax()))
            end = time.perf_counter()
        return {"ttft_s": t_first - t0, "prefill_s": prefill_s, "decode_s": end - t_first, "decode_steps": n - 1,
                "ids": out}

    def close(self):
        del self.model


ENGINE_CLASSES = {"edgepack": EdgepackEngine, "onnxruntime-genai": OrtGenaiEngine, "llama.cpp": LlamaCppEngine,
                  "torch-reference": TorchEngine, "edgepack+lookup": EdgepackEngine, "llama.cpp+lookup": LlamaCppEngine}


# -- from raw samples to records ------------------------------------------------------------------

def _summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": list(xs)}


def _record(engine, backend, p, out, art_bytes, tok, new_tokens, threads):
    from .runtime.meter import SpeechMeter

    runs = p["runs"]
    ttft = [r["ttft_s"] for r in runs]
    prefill = [p["prompt_tokens"] / r["prefill_s"] for r in runs]
    decode = [r["decode_steps"] / r["decode_s"] for r in runs]
    ids = runs[-1]["ids"]
    text = tok.decode(ids)  # random-weight models pick ids past the tokenizer: it drops them
    meter = SpeechMeter()
    meter.feed(text)
    d = statistics.median(decode)
    words_s, cjk_s, ratio = meter.rates(len(ids), d)
    return {
        "engine": engine, "backend": backend, "prompt": p["name"],
        "label": f"pp{p['prompt_tokens']}+tg{new_tokens}", "prompt_tokens": p["prompt_tokens"], "new_tokens": len(ids),
        "load_s": out["load_s"], "ttft_s": statistics.median(ttft), "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": _summary(decode), "ttft_s_runs": _summary(ttft), "prefill_tok_s_runs": _summary(prefill),
        "peak_rss_bytes": out["peak_rss_bytes"], "rss_after_load_bytes": out["rss_after_load_bytes"],
        "rss_before_load_bytes": out["rss_before_load_bytes"], "artifact_bytes": art_bytes,
        "words_per_s": words_s, "cjk_chars_per_s": cjk_s, "speech_ratio": ratio,
        "speech_unit": "cjk_chars" if meter.cjk_dominant else "words",
        "tokens_per_word": len(ids) / meter.words if meter.words else None,
        "tokens_per_cjk_char": len(ids) / meter.cjk_chars if meter.cjk_chars else None,
        "text_head": text[:160], "threads": threads, "engine_detail": out.get("detail"),
        "prompt_kind": "open-ended" if p["name"] in OPEN_ENDED else "grounded", **_lookup_figures(runs, engine.endswith(LOOKUP)),
    }


def _lookup_figures(runs, lookup):
    """Speculation counts summed over the timed runs (None for an engine that does not draft)."""
    if not lookup:
        return {"drafted_tokens": None, "accepted_tokens": None, "acceptance_rate": None, "mean_accepted_length": None}
    drafted, accepted = sum(r["drafted_tokens"] for r in runs), sum(r["accepted_tokens"] for r in runs)
    verifies = sum(r["verify_steps"] for r in runs)
    return {"drafted_tokens": drafted, "accepted_tokens": accepted, "verify_steps": verifies,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "mean_accepted_length": accepted / verifies if verifies else 0.0}


def _add_ratios(results, default_backend):
    """Each record's figures ÷ edgepack's runtime on the same prompt (same format; the default for torch), and
    a drafting engine's decode tok/s ÷ its plain self's (speedup_vs_plain)."""
    ours = {(r["backend"], r["prompt"]): r for r in results if r["engine"] == "edgepack"}
    by_engine = {(r["engine"], r["backend"], r["prompt"]): r for r in results}
    for r in results:
        plain = by_engine.get((r["engine"][:-len(LOOKUP)], r["backend"], r["prompt"])) if r["engine"].endswith(LOOKUP) else None
        r["speedup_vs_plain"] = r["decode_tok_s"]["median"] / plain["decode_tok_s"]["median"] if plain else None
        base = ours.get((r["backend"], r["prompt"])) or ours.get((default_backend, r["prompt"]))
        if base is None:
            r["vs_edgepack"] = None
            continue
        r["vs_edgepack"] = {
            "against": f"edgepack/{base['backend']}",
            "decode_tok_s": r["decode_tok_s"]["median"] / base["decode_tok_s"]["median"],
            "prefill_tok_s": r["prefill_tok_s"] / base["prefill_tok_s"],
            "ttft_s": r["ttft_s"] / base["ttft_s"], "load_s": r["load_s"] / base["load_s"],
            "peak_rss_bytes": r["peak_rss_bytes"] / base["peak_rss_bytes"]}


def _add_bounds(results, bandwidth, m, formats):
    """Each record's read-bandwidth bound (tok/s) and its decode median as a fraction of it (None for the
    float reference, which reads no artifact)."""
    from .bandwidth import decode_bound_tok_s
    from .manifest import kv_cache_bytes, kv_cache_dtype

    for r in results:
        a = formats.get(r["backend"])
        if a is None:
            r["decode_bound_tok_s"] = r["decode_fraction_of_bound"] = None
            continue
        weights = sum(f["bytes"] for f in a["files"] if f["path"].endswith((".onnx.data", ".gguf")))
        per_token = kv_cache_bytes(m["model"]["config"], 1, kv_cache_dtype(a)[1])
        bound = decode_bound_tok_s(bandwidth, weights, per_token, r["prompt_tokens"] + r["new_tokens"] // 2)
        r["decode_bound_tok_s"] = bound
        r["decode_fraction_of_bound"] = r["decode_tok_s"]["median"] / bound


def _record_overhead(root, m, raw, formats, log):
    """Measured runtime overhead per format = edgepack's peak RSS − weight file bytes − KV cache in use at the
    peak (longest prompt + new tokens). Written to OVERHEAD_FILE beside the manifest for `edgepack inspect`."""
    from .manifest import kv_cache_bytes, kv_cache_dtype

    cfg = m["model"]["config"]
    over = {}
    for (engine, backend), out in raw.items():
        if engine != "edgepack":
            continue
        weights = sum(f["bytes"] for f in formats[backend]["files"])
        held = max(p["prompt_tokens"] + len(p["runs"][-1]["ids"]) for p in out["prompts"])
        kv = kv_cache_bytes(cfg, held, kv_cache_dtype(formats[backend])[1])
        over[backend] = {"runtime_overhead_bytes": max(0, out["peak_rss_bytes"] - weights - kv),
                         "peak_rss_bytes": out["peak_rss_bytes"], "weights_bytes": weights, "kv_cache_bytes": kv,
                         "tokens_held": held, "method": "peak RSS of `edgepack bench`'s runtime worker − weights − KV in use",
                         "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if over:
        try:
            (root / OVERHEAD_FILE).write_text(json.dumps({"runtime_overhead": over}, indent=2) + "\n")
        except OSError as e:
            log(f"could not record the measured overhead in {root / OVERHEAD_FILE}: {e.strerror}")
    return over


def _fp32_bytes(m):
    c = m["model"]["config"]
    h, L, ff, v = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    kvd = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kvd + 3 * h * ff
    return 4 * (L * per_layer + v * h * (1 if c["tie_word_embeddings"] else 2))


def _dir_weight_bytes(path):
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin"))


def _gb(n):
    return f"{n / 2**30:.1f} GiB"


# -- machine ---------------------------------------------------------------------------------------

# the CPU features that change which kernels torch, onnxruntime and llama.cpp run (and so their rounding)
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_info():
    """{"cpu": model name, "vendor", "flags": the CPU_FLAGS present} from /proc/cpuinfo (Linux)."""
    info = {"cpu": platform.processor() or "?", "vendor": "?", "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            fields = {}
            for ln in f:
                if not ln.strip():
                    break  # the first processor describes them all
                k, _, v = ln.partition(":")
                fields[k.strip()] = v.strip()
    except OSError:
        return info
    have = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", info["cpu"]), "vendor": fields.get("vendor_id", "?"),
            "flags": [f for f in CPU_FLAGS if f in have]}


def machine_info():
    import importlib.metadata as md

    import psutil

    ci = cpu_info()
    cpu = ci["cpu"]
    libs = {}
    for name in ("edgepack", "numpy", "onnxruntime", "onnxruntime-genai", "llama_cpp_python", "torch", "gguf",
                 "onnx", "tokenizers", "sentencepiece"):
        try:
            libs[name] = md.version(name)
        except md.PackageNotFoundError:
            libs[name] = None
    return {"cpu": cpu, "cpu_vendor": ci["vendor"], "cpu_flags": ci["flags"], "cores_logical": os.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
            "ram_bytes": psutil.virtual_memory().total, "os": platform.platform(), "python": platform.python_version(),
            "libraries": libs, "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# -- printers over the report ----------------------------------------------------------------------

def _num(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _bytes(n):
    from .inspect import human_bytes

    return human_bytes(n)


def print_table(report, console=None):
    """A rich table: one row per engine and prompt, the ratio to edgepack's runtime (×ep) beside each figure."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=170)  # a file or pipe: do not squeeze the table into 80 columns
    s = report["settings"]
    t = Table(title=f"edgepack bench · {s['model']} · {s['threads']} threads · {s['runs']} runs "
                    f"(+{s['warmup_runs']} warm-up) · median [min–max] · ×ep = ratio to edgepack's runtime")
    for col in ("engine", "prompt", "test", "load s", "TTFT s", "prefill tok/s", "decode tok/s", "min–max", "×ep",
                "lookup", "speech", "peak RSS", "artifact"):
        t.add_column(col, justify="left" if col in ("engine", "prompt", "test") else "right", no_wrap=True)
    for r in report["results"]:
        d, v = r["decode_tok_s"], r.get("vs_edgepack") or {}

        def x(key):
            return f" {v[key]:.2f}×" if key in v and r["engine"] != "edgepack" else ""

        rate = f"{_num(r['cjk_chars_per_s'])} ch/s" if r["speech_unit"] == "cjk_chars" else f"{_num(r['words_per_s'])} w/s"
        t.add_row(f"{r['engine']} {r['backend']}", r["prompt"], r["label"], f"{r['load_s']:.2f}", f"{r['ttft_s']:.3f}",
                  f"{_num(r['prefill_tok_s'])}{x('prefill_tok_s')}", _num(d["median"]) + _of_bound(r), f"{_num(d['min'])}–{_num(d['max'])}",
                  x("decode_tok_s").strip(), _lookup_cell(r), f"{rate} = {_num(r['speech_ratio'])}×",
                  f"{_bytes(r['peak_rss_bytes'])}{x('peak_rss_bytes')}", _bytes(r["artifact_bytes"]))
    console.print(t)
    mc = report["machine"]
    console.print(f"machine: {mc['cpu']}, {mc['cores_logical']} cores, {_bytes(mc['ram_bytes'])} RAM, "
                  f"Python {mc['python']}, load average {mc['load_average_at_start'][0]:.2f} at start, "
                  f"{mc.get('load_average_at_end', [0])[0]:.2f} at end (other processes compete for the cores)")
    bw = report.get("read_bandwidth")
    if bw:
        console.print(f"(NN% of B): decode as a fraction of the read-bandwidth bound B tok/s = {bw['bytes_per_s'] / 1e9:.1f} GB/s "
                      f"(probed in this run, {s['threads']} threads) ÷ (weight bytes + KV bytes at mid-decode).")
    console.print("lookup: accepted/drafted tokens · accepted tokens per verify · decode tok/s ÷ the same engine "
                  "without prompt lookup.")
    console.print("×ep: ratio to edgepack's runtime on the same format and prompt (torch: the artifact's first format). "
                  "speech: words/s (ch/s when the text is mostly CJK) of the generated text, × human speech "
                  "(2.5 words/s, 5.2 ch/s).")
    console.print(f"timed: {s['timed']}", style="dim")
    for sk in report["skipped"]:
        console.print(f"skipped {sk['engine']}/{sk['backend']}: {sk['reason']}", style="yellow")


def _of_bound(r):
    frac, bound = r.get("decode_fraction_of_bound"), r.get("decode_bound_tok_s")
    return f" ({100 * frac:.0f}% of {_num(bound)})" if frac else ""


def _lookup_cell(r):
    """acceptance rate · mean accepted length · ×plain, for an engine that drafts."""
    if r.get("drafted_tokens") is None:
        return ""
    sp = r.get("speedup_vs_plain")
    return (f"{100 * r['acceptance_rate']:.0f}% · {r['mean_accepted_length']:.1f}"
            + (f" · {sp:.2f}×" if sp else ""))


def write_json(report, path):
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def speech_line_tok_s(report):
    """Human speech rates in tokens/s: 2.5 words/s × tokens per word (and 5.2 ch/s × tokens per CJK character),
    measured on edgepack's generated text (falls back to any engine's)."""
    from .runtime.meter import CJK_CHARS_PER_S, WORDS_PER_S

    out = {}
    for unit, key, rate in (("words", "tokens_per_word", WORDS_PER_S), ("cjk_chars", "tokens_per_cjk_char", CJK_CHARS_PER_S)):
        rs = [r for r in report["results"] if r["speech_unit"] == unit and r[key]]
        ours = [r for r in rs if r["engine"] == "edgepack"] or rs
        if ours:
            out[unit] = (rate * statistics.median(r[key] for r in ours), statistics.median(r[key] for r in ours))
    return out


def plot(report, path):
    """Bar chart of median decode tok/s per engine (one bar per prompt, min–max whiskers) with the human
    speech rate converted to tokens/s drawn as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    engines = list(dict.fromkeys(f"{r['engine']}/{r['backend']}" for r in res))
    prompts = list(dict.fromkeys(r["prompt"] for r in res))
    width = 0.8 / max(1, len(prompts))
    fig, ax = plt.subplots(figsize=(max(8, 1.8 * len(engines)), 6), dpi=110)
    for j, p in enumerate(prompts):
        xs, ys, lo, hi = [], [], [], []
        for i, e in enumerate(engines):
            r = next((r for r in res if f"{r['engine']}/{r['backend']}" == e and r["prompt"] == p), None)
            if r is None:
                continue
            d = r["decode_tok_s"]
            xs.append(i + (j - (len(prompts) - 1) / 2) * width)
            ys.append(d["median"])
            lo.append(d["median"] - d["min"])
            hi.append(d["max"] - d["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=p)
    styles = {"words": ("--", "English speech: 2.5 words/s × %.2f tokens/word = %.1f tok/s"),
              "cjk_chars": (":", "Mandarin speech: 5.2 chars/s × %.2f tokens/char = %.1f tok/s")}
    for unit, (tok_s, per) in speech_line_tok_s(report).items():
        ls, fmt = styles[unit]
        ax.axhline(tok_s, color="black", ls=ls, lw=1.2, label=fmt % (per, tok_s) + " (tokens/unit measured on the generated text)")
    s = report["settings"]
    ax.set_xticks(range(len(engines)))
    ax.set_xticklabels(engines, fontsize=8)
    ax.set_ylabel("decode tokens/s (median, min–max)")
    ax.set_title(f"{s['model']}: decode speed, {s['threads']} threads, {s['runs']} runs, {report['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        sys.exit("usage: python -m edgepack.bench --worker (internal, driven over stdin; use `edgepack bench`)")
