"""Runs in the separate onnxruntime-genai 0.15.2 + onnxruntime 1.29.0 venv (the Android app's engine
versions), called by tests/test_genai_phone_engine.py. Two modes, each writing result.json and
logits<k>.npy (the logits each greedy token was picked from) into OUT_DIR:

    python genai_phone_worker.py genai ARTIFACT OUT_DIR N_NEW THREADS PROMPT...
    python genai_phone_worker.py edgepack ARTIFACT OUT_DIR N_NEW THREADS IDS_JSON

`genai` imports nothing from edgepack and makes the calls android_demo's GenAiRunner makes, in the
same order: Config(onnx folder) + overlay(threads), Model(config), Tokenizer(model),
applyChatTemplate(the manifest's template, one user message), encode, BOS by edgepack's rule
(EngineSetup.addsBos/withBos), greedy Generator loop.
`tokenize` loads genai's Model through an overlay that points the decoder at another graph of the
folder (EMBED_OVERLAY: MiniCPM-V's small embedding.onnx, so the decoder weights are not loaded a second
time beside the app's own onnxruntime sessions), then encodes the JSON list of texts with its Tokenizer;
it records VmRSS/VmHWM before and after the load:

    python genai_phone_worker.py tokenize ARTIFACT OUT_DIR 0 THREADS OVERLAY_JSON TEXTS_JSON

`edgepack` runs edgepack's own OnnxBackend (numpy + onnxruntime only) on the same onnxruntime, on
prompt ids given as a JSON list of lists.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime

# EngineSetup.configOverlay(threads) in the app (EngineSetupTest pins the same string).
OVERLAY = '{"model":{"decoder":{"session_options":{"intra_op_num_threads":%d}}}}'


def _onnx_dir(artifact):
    manifest = json.loads((artifact / "edgepack.json").read_text(encoding="utf-8"))
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    return manifest, artifact / entry["path"]


def adds_bos(folder):
    """EngineSetup.addsBos: add_bos_token of tokenizer_config.json, default true iff sentencepiece."""
    sentencepiece = (folder / "tokenizer.model").is_file()
    try:
        value = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("add_bos_token")
    except (OSError, ValueError):
        return sentencepiece
    return value if isinstance(value, bool) else sentencepiece


def run_genai(artifact, out_dir, n_new, threads, prompts):
    import onnxruntime_genai as og

    manifest, folder = _onnx_dir(artifact)
    template = manifest["tokenizer"]["chat_template"]
    config = og.Config(str(folder))
    config.overlay(OVERLAY % threads)
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    bos = tokenizer.bos_token_id if adds_bos(folder) else None
    results = {"genai": og.__version__, "onnxruntime": onnxruntime.__version__, "prompts": []}
    for k, prompt in enumerate(prompts):
        messages = json.dumps([{"role": "user", "content": prompt}])
        text = tokenizer.apply_chat_template(messages, template_str=template, add_generation_prompt=True)
        ids = [int(t) for t in tokenizer.encode(text)]
        if bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + n_new)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        tokens, logits = [], []
        while not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
            logits.append(np.asarray(generator.get_output("logits"), dtype=np.float32)[0, -1])
        np.save(out_dir / f"logits{k}.npy", np.stack(logits))
        results["prompts"].append({"text": text, "ids": ids, "tokens": tokens,
                                   "decoded": tokenizer.decode(np.array(tokens, dtype=np.int32))})
        del generator
    return results


def _status(keys=("VmRSS", "VmHWM")):
    """kB figures of /proc/self/status, as the app's ProcStatus reads them."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0])
    return out


def run_tokenize(artifact, out_dir, threads, overlay, texts):
    import onnxruntime_genai as og

    _, folder = _onnx_dir(artifact)
    before = _status()
    config = og.Config(str(folder))
    config.overlay(OVERLAY % threads)
    config.overlay(overlay)
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    return {"genai": og.__version__, "onnxruntime": onnxruntime.__version__, "before_kb": before,
            "after_kb": _status(), "bos": int(tokenizer.bos_token_id),
            "ids": [[int(t) for t in tokenizer.encode(text)] for text in texts]}


def run_edgepack(artifact, out_dir, n_new, threads, prompt_ids):
    from edgepack.runtime.onnx_backend import OnnxBackend

    _, folder = _onnx_dir(artifact)
    eos = set(json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"])
    results = {"onnxruntime": onnxruntime.__version__, "prompts": []}
    with OnnxBackend(folder, threads=threads, n_ctx=max(map(len, prompt_ids)) + n_new) as backend:
        for k, ids in enumerate(prompt_ids):
            backend.reset()
            tokens, logits, step = [], [], backend.forward(ids)
            while len(tokens) < n_new:
                logits.append(np.asarray(step, dtype=np.float32).reshape(-1))
                tokens.append(int(np.argmax(logits[-1])))
                if tokens[-1] in eos:
                    break
                step = backend.forward([tokens[-1]])
            np.save(out_dir / f"logits{k}.npy", np.stack(logits))
            results["prompts"].append({"ids": ids, "tokens": tokens})
    return results


def main(mode, artifact, out_dir, n_new, threads, *rest):
    artifact, out_dir, n_new, threads = Path(artifact), Path(out_dir), int(n_new), int(threads)
    if mode == "genai":
        results = run_genai(artifact, out_dir, n_new, threads, rest)
    elif mode == "tokenize":
        results = run_tokenize(artifact, out_dir, threads, rest[0], json.loads(rest[1]))
    else:
        results = run_edgepack(artifact, out_dir, n_new, threads, json.loads(rest[0]))
    (out_dir / "result.json").write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
