"""Write a MiniCPM-2B-shaped checkpoint with random bf16 weights: same size and cost as the real model.

    python benchmarks/_minicpm_2b.py OUT [--layers 40]

Config is MiniCPM-2B's (hidden 2304, 40 layers, 36 heads, MHA, FFN 5760, vocab 122753, tied,
scale_emb 12, dim_model_base 256, scale_depth 1.4). Tensors are drawn straight into bf16 and
written shard by shard (~0.5 GB each), so peak RSS stays well under 2 GB. The tokenizer is a small
locally trained sentencepiece model (the text it produces is meaningless anyway).
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgepack.model.checkpoint import expected_shapes  # noqa: E402
from edgepack.model.families import parse_config  # noqa: E402
from edgepack.model.testmodels import train_sentencepiece  # noqa: E402

CONFIG = dict(
    architectures=["MiniCPMForCausalLM"], model_type="minicpm", hidden_size=2304, intermediate_size=5760,
    num_hidden_layers=40, num_attention_heads=36, num_key_value_heads=36, vocab_size=122753,
    max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, scale_emb=12.0, dim_model_base=256,
    scale_depth=1.4, tie_word_embeddings=True, hidden_act="silu", bos_token_id=1, eos_token_id=2,
    torch_dtype="bfloat16")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=40, help="fewer layers for a quick smoke run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = dict(CONFIG, num_hidden_layers=args.layers)
    cfg = parse_config(raw)
    shapes = expected_shapes(cfg)
    g = torch.Generator().manual_seed(0)

    # shard 1: the embedding alone; then 4 layers per shard; the final norm rides with the last
    groups = [["model.embed_tokens.weight"]]
    for i in range(0, cfg.num_hidden_layers, 4):
        groups.append([n for n in shapes if any(n.startswith(f"model.layers.{j}.") for j in range(i, i + 4))])
    groups[-1].append("model.norm.weight")
    weight_map = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {}
        for name in names:
            t = torch.empty(shapes[name], dtype=torch.bfloat16)
            if t.dim() == 1:
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=g)
            shard[name] = t
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
        del shard
        print(f"wrote {fname} ({len(names)} tensors)", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    train_sentencepiece(out, vocab_size=2000)
    print(f"MiniCPM-2B-shaped checkpoint in {out}")


if __name__ == "__main__":
    main()
