"""Float perplexity of the demo model on the fixed held-out text (first 2048 tokens).

    python benchmarks/demo_float_ppl.py   -> benchmarks/results/demo_float_ppl.json
"""
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from edgepack.checkpoint import load  # noqa: E402
from edgepack.fidelity import compare, eval_ids, reference_logits  # noqa: E402
from edgepack.texts import sources  # noqa: E402
from edgepack.tokenizer import load_tokenizer  # noqa: E402
from machine import machine_info  # noqa: E402


def main(n_tokens=2048):
    ckpt = load("demo")
    tok = load_tokenizer(ckpt.path, ckpt.config.bos_token_id, ckpt.config.eos_token_ids)
    ids = eval_ids(tok, n_tokens)
    t = time.perf_counter()
    ref = reference_logits(ckpt, ids)
    fid = compare(ref, ref, ids)
    out = {"model": "demo (SmolLM2-135M-Instruct in MiniCPM form)", "eval_text": sources()[0], "tokens": len(ids),
           "float_ppl": fid["float_ppl"], "seconds": round(time.perf_counter() - t, 2), "machine": machine_info()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "demo_float_ppl.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
