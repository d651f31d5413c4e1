"""Open an artifact folder: read edgepack.json, check the sha256 of every file used, pick the backend.

Nothing from the folder is loaded before its size and sha256 match the manifest (hashed in 1 MiB
chunks by edgepack.formats.manifest, so a 1.5 GB model never sits in memory to be hashed). Only the chosen
backend's files and the tokenizer are checked and only that backend is imported; neither imports
torch.
"""
from pathlib import Path

from ..errors import IntegrityError
from ..formats.manifest import find_artifact, read_manifest, verify_files


def open_artifact(path, backend=None, threads=None, n_ctx=None):
    """(backend, tokenizer, manifest) for an artifact folder; backend "onnx"|"gguf"|None (the first listed)."""
    from ..model.tokenizer import load_tokenizer

    root = Path(path)
    m = read_manifest(root)  # validates the structure, file entries and paths
    entry = find_artifact(m, backend)
    tk = m["tokenizer"]
    verify_files(root, tk["files"])
    verify_files(root, entry["files"])
    tokenizer = load_tokenizer(_inside(root, tk.get("path") or "tokenizer"), bos_id=tk.get("bos_id"),
                               eos_ids=tk.get("eos_ids") or None)
    target = _inside(root, entry["path"])
    kw = {}
    if entry["format"] == "onnx":
        from .onnx_backend import OnnxBackend as B

        vision = (m["model"].get("config") or {}).get("vision")
        if vision and entry.get("multimodal"):  # MiniCPM-V: decoder on inputs_embeds + vision.onnx
            from ..model.config import VisionConfig

            kw["vision"] = VisionConfig(**vision)
    else:
        from .gguf_backend import GGUFBackend as B

        cfg = m["model"].get("config") or {}
        if n_ctx is None and cfg.get("context_length"):  # the exported context (export --context), as ONNX has it
            n_ctx = min(cfg["context_length"], 4096)
        if entry.get("mmproj"):  # MiniCPM-V: the vision half, checked with the other files above
            kw["mmproj"] = _inside(root, entry["mmproj"]["path"])
    return B(target, threads=threads, n_ctx=n_ctx, **kw), tokenizer, m


def _inside(root, rel):
    p = (root / rel).resolve()
    if p != root.resolve() and root.resolve() not in p.parents:
        raise IntegrityError(f"{root / 'edgepack.json'}: path {rel!r} leaves the artifact folder")
    return p
