"""Open an artifact folder: read edgepack.json, check the sha256 of every file used, pick the backend.

Nothing from the folder is trusted before its hash matches the manifest (streamed in 1 MiB chunks,
so a 1.5 GB model never sits in memory to be hashed). Backends are imported only when chosen, and
neither imports torch.
"""
import hashlib
import json
from pathlib import Path

from ..errors import BadInput, IntegrityError, NotSupported

MANIFEST = "edgepack.json"
SCHEMA = 1
FORMATS = ("onnx", "gguf")


def read_manifest(root):
    root = Path(root)
    f = root / MANIFEST
    if not root.is_dir():
        raise BadInput(f"{root}: not an artifact folder (no such directory)")
    if not f.is_file():
        raise BadInput(f"{root}: not an artifact folder (no {MANIFEST}; make one with 'edgepack export')")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or not isinstance(m.get("schema"), int):
        raise IntegrityError(f"{f}: no integer 'schema' field")
    if m["schema"] > SCHEMA:
        raise NotSupported(f"{f}: schema {m['schema']} is newer than this edgepack reads ({SCHEMA}); upgrade edgepack")
    if not isinstance(m.get("artifacts"), list) or not m["artifacts"]:
        raise IntegrityError(f"{f}: 'artifacts' is missing or empty")
    if not isinstance(m.get("tokenizer"), dict):
        raise IntegrityError(f"{f}: 'tokenizer' is missing")
    return m


def choose(manifest, root, backend=None):
    """The artifacts entry to run: the first one by default, or the one of format `backend`."""
    entries = [a for a in manifest["artifacts"] if isinstance(a, dict)]
    if backend is None:
        entry = entries[0] if entries else None
        if entry is None or entry.get("format") not in FORMATS:
            fmt = entry.get("format") if entry else None
            raise NotSupported(f"{Path(root) / MANIFEST}: first artifact has format {fmt!r}; this runtime runs {', '.join(FORMATS)}")
        return entry
    if backend not in FORMATS:
        raise BadInput(f"unknown backend {backend!r} (choose from {', '.join(FORMATS)})")
    for a in entries:
        if a.get("format") == backend:
            return a
    have = ", ".join(str(a.get("format")) for a in entries) or "none"
    raise BadInput(f"{root}: the artifact has no {backend} model (it has: {have}); export it with --format {backend}")


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve(root, rel):
    """root/rel, refusing absolute paths and '..' escapes (the manifest is data, not a path oracle)."""
    root = Path(root).resolve()
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise IntegrityError(f"{root / MANIFEST}: bad file path {rel!r}")
    p = (root / rel).resolve()
    if root != p and root not in p.parents:
        raise IntegrityError(f"{root / MANIFEST}: file path {rel!r} leaves the artifact folder")
    return p


def verify(root, files, where=""):
    """Check size and sha256 of each {"path", "bytes", "sha256"} (paths relative to root)."""
    if not isinstance(files, list) or not files:
        raise IntegrityError(f"{Path(root) / MANIFEST}: {where} lists no files to check")
    for f in files:
        if not isinstance(f, dict) or "sha256" not in f:
            raise IntegrityError(f"{Path(root) / MANIFEST}: {where} file entry without sha256: {f!r}")
        p = resolve(root, f.get("path"))
        if not p.is_file():
            raise IntegrityError(f"{p}: missing (listed in {MANIFEST})")
        size = p.stat().st_size
        if isinstance(f.get("bytes"), int) and size != f["bytes"]:
            raise IntegrityError(f"{p}: {size} bytes, the manifest says {f['bytes']} (truncated or replaced?)")
        if file_sha256(p) != f["sha256"]:
            raise IntegrityError(f"{p}: sha256 does not match the manifest (corrupt or modified)")


def open_artifact(path, backend=None, threads=None, n_ctx=None):
    """(backend, tokenizer, manifest) for an artifact folder, after checking every file they read."""
    from ..tokenizer import load_tokenizer

    root = Path(path)
    m = read_manifest(root)
    entry = choose(m, root, backend)
    fmt = entry["format"]
    tk = m["tokenizer"]
    verify(root, tk.get("files"), "tokenizer")
    verify(root, entry.get("files"), f"{fmt} artifact")
    tok_dir = resolve(root, tk.get("path") or "tokenizer")
    tokenizer = load_tokenizer(tok_dir, bos_id=tk.get("bos_id"), eos_ids=tk.get("eos_ids") or None)
    target = resolve(root, entry.get("path") or fmt)
    if fmt == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(target, threads=threads, n_ctx=n_ctx), tokenizer, m
    if target.is_dir():  # gguf entry naming its folder: the one file listed
        target = resolve(root, entry.get("file") and f"{entry['path']}/{entry['file']}" or entry["files"][0]["path"])
    from .gguf_backend import GGUFBackend

    return GGUFBackend(target, threads=threads, n_ctx=n_ctx), tokenizer, m
