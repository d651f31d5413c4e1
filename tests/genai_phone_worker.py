"""Runs in the separate onnxruntime-genai 0.15.2 + onnxruntime 1.29.0 venv (the Android app's engine
versions), called by tests/test_genai_phone_engine.py. Two modes, each writing result.json and
logits<k>.npy (the logits each greedy token was picked from) into OUT_DIR:

    python genai_phone_worker.py genai ARTIFACT OUT_DIR N_NEW THREADS PROMPT...
    python genai_phone_worker.py edgepack ARTIFACT OUT_DIR N_NEW THREADS IDS_JSON

`genai` imports nothing from edgepack and makes the calls android_demo's GenAiRunner makes, in the
same order: Config(onnx folder) + overlay(threads), Model(config), Tokenizer(model),
applyChatTemplate(the manifest's template, one user message), encode, BOS by edgepack's rule
(EngineSetup.addsBos/withBos), greedy Generator loop.
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
    else:
        results = run_edgepack(artifact, out_dir, n_new, threads, json.loads(rest[0]))
    (out_dir / "result.json").write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
