"""`edgepack verify`: recompute the fidelity report from the artifact's files (sha256 checked first)."""
from pathlib import Path

from .errors import BadInput
from .model.hub import is_hub_id
from .formats.manifest import find_artifact, read_manifest, verify_files


def verify(artifact, model=None, fmt=None, tokens=None, threads=None, progress=None):
    """progress(stage, done, total), as for export: load, float reference, fidelity FORMAT."""
    from .export import artifact_fidelity, fidelity_kernels
    from .fidelity import eval_windows, reference_logits
    from .model.tokenizer import load_tokenizer

    progress = progress or (lambda stage, done, total: None)
    progress("load", 0, 1)
    root = Path(artifact)
    m = read_manifest(root)
    entries = [find_artifact(m, fmt)] if fmt else m["artifacts"]
    verify_files(root, m["tokenizer"]["files"])
    for e in entries:
        verify_files(root, e["files"])
    ckpt = source_checkpoint(root, m, model)
    tok = load_tokenizer(root / "tokenizer", bos_id=m["tokenizer"]["bos_id"], eos_ids=m["tokenizer"]["eos_ids"])
    recorded = [e.get("fidelity") or {} for e in entries]
    n = tokens or max(f.get("tokens", 0) for f in recorded) or 2048
    cfg = m["model"]["config"]
    ckpt.config = ckpt.config.with_context(cfg.get("context_length") or cfg["max_position_embeddings"])  # as exported
    ids = eval_windows(tok, n, ckpt.config.context_length)  # the export's windows
    progress("load", 1, 1)
    ref = reference_logits(ckpt, ids, progress=progress)  # "float reference" 0/L+1 .. L+1/L+1, a step a layer
    out = []
    for e in entries:
        progress(f"fidelity {e['format']}", 0, 1)
        fid = artifact_fidelity(e["format"], root / e["path"], ids, ref, threads, ckpt.config)
        fid["kernels"] = fidelity_kernels(e["format"], (e.get("quantization") or {}).get("accuracy_level"))  # this CPU's
        progress(f"fidelity {e['format']}", 1, 1)
        out.append({"format": e["format"], "path": e["path"], "fidelity": fid, "recorded": e.get("fidelity")})
    return {"artifact": str(root), "artifacts": out}


def source_checkpoint(root, m, model=None):
    """The checkpoint an artifact (folder root, manifest m) was exported from, its weights' sha256 checked:
    `model` when given, else the manifest's source path, else its hub id at the exported revision."""
    from .model.checkpoint import load

    src = model or m["model"].get("source_path")
    hub = m["model"].get("source_hub") or {}
    if not model and hub and not (src and Path(src).is_dir()):  # the cache moved: find the same snapshot by id
        src = hub["id"]
    revision = hub.get("revision") if src == hub.get("id") else None  # the exported commit, not today's main
    if not src or (src not in ("demo", "demo-llama") and not Path(src).is_dir() and not is_hub_id(src)):
        raise BadInput(f"{root}: the source checkpoint {src} is not available; pass --model DIR")
    ckpt = load(src, revision=revision)
    if ckpt.weights_sha256() != m["model"].get("source_sha256"):
        raise BadInput(f"{ckpt.path}: weights differ from the ones this artifact was exported from")
    return ckpt
