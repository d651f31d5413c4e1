"""The artifact manifest, edgepack.json: what was exported, from what, how, and how faithful it is.

Field names are a stable interface (DESIGN.md "Interfaces"): add freely, rename none without
bumping SCHEMA. Every reader checks sha256 before trusting a file.
"""
import json
import os
from pathlib import Path

from .. import __version__
from ..errors import BadInput, IntegrityError

SCHEMA = 1
MANIFEST = "edgepack.json"


def file_entries(root, paths):
    from ..model.files import file_sha256

    root = Path(root)
    return [{"path": str(p), "bytes": (root / p).stat().st_size, "sha256": file_sha256(root / p)} for p in paths]


def files_under(root, sub):
    """Relative paths of every file under root/sub (sorted), or [sub] if it is a file."""
    root = Path(root)
    base = root / sub
    if base.is_file():
        return [str(sub)]
    return sorted(str(p.relative_to(root)) for p in base.rglob("*") if p.is_file())


def write_manifest(root, manifest):
    path = Path(root) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(root):
    """Parse and validate edgepack.json of an artifact folder."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise BadInput(f"{root}: artifact folder not found")
    if not path.is_file():
        raise BadInput(f"{path}: manifest not found (is {root} an edgepack artifact?)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{path}: manifest is not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise IntegrityError(f"{path}: manifest must be a JSON object")
    schema = m.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise IntegrityError(f"{path}: manifest field 'schema' is missing or not an integer")
    if schema > SCHEMA:
        raise BadInput(f"{path}: manifest schema {schema} is newer than this edgepack supports ({SCHEMA}); upgrade edgepack")
    arts = m.get("artifacts")
    if not isinstance(arts, list) or not arts:
        raise IntegrityError(f"{path}: manifest has no 'artifacts' list")
    for a in arts:
        if not isinstance(a, dict) or a.get("format") not in ("onnx", "gguf") or not isinstance(a.get("path"), str):
            raise IntegrityError(f"{path}: manifest artifact entry is malformed: {str(a)[:80]}")
        _check_entries(path, a.get("files"))
    tok = m.get("tokenizer")
    if not isinstance(tok, dict):
        raise IntegrityError(f"{path}: manifest has no 'tokenizer' object")
    _check_entries(path, tok.get("files"))
    return m


def _check_entries(path, files):
    if not isinstance(files, list) or not files:
        raise IntegrityError(f"{path}: manifest 'files' list is missing or empty")
    for f in files:
        ok = (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
              and isinstance(f.get("bytes"), int) and not isinstance(f.get("bytes"), bool))
        if not ok:
            raise IntegrityError(f"{path}: manifest file entry is malformed: {str(f)[:80]}")
        p = Path(f["path"])
        if p.is_absolute() or ".." in p.parts:
            raise IntegrityError(f"{path}: manifest file path {f['path']!r} escapes the artifact folder")


def verify_files(root, entries):
    """Raise IntegrityError unless every file exists with the manifest's size and sha256."""
    from ..model.files import file_sha256

    root = Path(root)
    for f in entries:
        p = root / f["path"]
        if not p.is_file():
            raise IntegrityError(f"{p}: file listed in the manifest is missing")
        if p.stat().st_size != f["bytes"]:
            raise IntegrityError(f"{p}: size {p.stat().st_size} differs from the manifest ({f['bytes']}); the file is truncated or modified")
        if file_sha256(p) != f["sha256"]:
            raise IntegrityError(f"{p}: sha256 differs from the manifest; the file was modified after export")


def find_artifact(manifest, fmt=None):
    arts = manifest["artifacts"]
    if fmt is None:
        return arts[0]
    for a in arts:
        if a["format"] == fmt:
            return a
    have = ", ".join(a["format"] for a in arts)
    raise BadInput(f"this artifact has no {fmt} backend (it has: {have})")


def new_manifest(ckpt, name, tokenizer, tokenizer_files):
    model = {"name": name, "architecture": ckpt.config.family, "config": ckpt.config.to_dict(),
             "source_path": str(Path(ckpt.path).resolve()), "source_sha256": ckpt.weights_sha256()}
    hub = getattr(ckpt, "hub", None)
    if hub:  # a Hugging Face id: the snapshot's commit pins the exact files
        model["source_hub"] = {"id": hub.repo_id, "revision": hub.revision}
    return {
        "schema": SCHEMA,
        "edgepack_version": __version__,
        "model": model,
        "tokenizer": {"kind": tokenizer.kind, "path": "tokenizer", "files": tokenizer_files,
                      "bos_id": tokenizer.bos_id, "eos_ids": list(tokenizer.eos_ids),
                      "chat_template": tokenizer.chat_template},
        "artifacts": [],
    }


GQA_HEAD_MULTIPLE = 16  # onnxruntime's GroupQueryAttention: "head_size shall be a multiple of 16"


def onnx_head_size(cfg):
    """Width of each K and V head in the ONNX cache (and genai_config's head_size). MLA's decompressed heads
    are zero-padded to the next multiple of GQA_HEAD_MULTIPLE at least as wide as both q/k (nope + rope) and v
    (onnx_writer.py); other attention keeps head_dim. cfg: the description's dict (or the DecoderConfig)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    hd = get("head_dim") or get("hidden_size") // get("num_attention_heads")
    if get("attention") != "mla":
        return hd
    return -(-max(hd, get("v_head_dim") or hd) // GQA_HEAD_MULTIPLE) * GQA_HEAD_MULTIPLE


def kv_cache_bytes(cfg, n_ctx, bytes_per=4, artifact=None):
    """K and V for every layer at context n_ctx, `bytes_per` bytes an element (kv_cache_dtype()).

    As the engine holds them: an artifact entry's kv_cache.bytes_per_token when its writer recorded it;
    else K and V of onnx_head_size() each (ONNX, and a checkpoint's estimate), except llama.cpp's K of
    head_dim and V of v_head_dim (MLA: MiniCPM3's 64 against K's 96)."""
    rec = (artifact or {}).get("kv_cache") or {}
    if rec.get("bytes_per_token"):
        return rec["bytes_per_token"] * n_ctx
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if (artifact or {}).get("format") == "gguf":
        k_dim, v_dim = head_dim, cfg.get("v_head_dim") or head_dim
    else:
        k_dim = v_dim = onnx_head_size(cfg)
    return cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * (k_dim + v_dim) * n_ctx * bytes_per


def kv_cache_dtype(artifact):
    """(dtype name, bytes per element) of an artifact entry's KV cache: what the ONNX writer recorded
    (onnx_writer.KV_DTYPE); an ONNX entry without the record predates it and was float32; llama.cpp's
    default cache (what the GGUF backend and the Android app use) is f16."""
    if artifact["format"] == "onnx":
        kv = artifact.get("kv_cache") or {"dtype": "float32", "bytes_per_element": 4}
        return kv["dtype"], kv["bytes_per_element"]
    return "float16", 2


def inspect_artifact(root):
    m = read_manifest(root)
    cfg = m["model"]["config"]
    measured = _measured_overhead(root)
    mem = []
    for a in m["artifacts"]:
        weights = sum(f["bytes"] for f in a["files"])
        kv_dtype, kv_bytes = kv_cache_dtype(a)
        over = a.get("runtime_overhead_bytes", measured.get(a["format"], {}).get("runtime_overhead_bytes"))
        for ctx in (512, 2048, 4096):
            if ctx > (cfg.get("context_length") or cfg["max_position_embeddings"]):
                continue
            kv = kv_cache_bytes(cfg, ctx, kv_bytes, a)
            total = weights + kv + (over or 0)
            mem.append({"format": a["format"], "context": ctx, "weights_bytes": weights,
                        "kv_cache_bytes": kv, "kv_cache_dtype": kv_dtype,
                        "runtime_overhead_bytes": over or 0, "overhead_measured": over is not None, "total_bytes": total,
                        "fits_phone_ram_gb": [g for g in (4, 6, 8, 12) if total <= 0.5 * g * 2**30]})
    return dict(m, kind="artifact", path=str(root), memory_by_context=mem)


def _measured_overhead(root):
    """Runtime overhead per format as `edgepack bench` last measured it on this artifact (edgepack.bench.json)."""
    try:
        return json.loads((Path(root) / "edgepack.bench.json").read_text(encoding="utf-8"))["runtime_overhead"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def format_artifact(info):

    c = info["model"]["config"]
    lines = [f"artifact          {info['path']}",
             f"model             {info['model']['name']} ({info['model'].get('architecture', 'minicpm')}, {c['num_hidden_layers']} layers, hidden {c['hidden_size']})",
             f"edgepack          {info['edgepack_version']} (schema {info['schema']})"]
    from ..model.rope import beyond

    if c.get("num_experts"):
        lines.append(f"experts           {c['num_experts']} per layer, {c['num_experts_per_tok']} per token")
    if note := beyond(c.get("rope") or {}, c["max_position_embeddings"]):
        lines.append(f"context           {c.get('context_length') or c['max_position_embeddings']} tokens exported; {note}")
    for a in info["artifacts"]:
        q = a.get("quantization", {})
        size = sum(f["bytes"] for f in a["files"])
        lines.append(f"{a['format']:5s} {a['path']:30s} {human_bytes(size)}, {q.get('scheme', '?')} "
                     f"({q.get('bits_per_weight', '?')} bits/weight, {q.get('method', '?')})")
        if e := q.get("experts"):
            below = f" (routed fewer than {e['min_routed_tokens']} calibration tokens)" if e.get("min_routed_tokens") else ""
            lines.append(f"      experts: {e['method']}, {e['calibrated_experts']} calibrated, {e['rtn_experts']} RTN{below}")
        if sm := a.get("smoke"):  # export's short prompt before the rename (edgepack/smoke.py)
            lines.append(f"      smoke run: {sm['prompt_tokens']} prompt + {sm['decode_tokens']} decode tokens in {sm['engine']}"
                         + (", vision.onnx on one slice" if sm.get("vision") else "") + ", passed at export")
        fid = a.get("fidelity")
        if fid:
            lines.append(f"      fidelity: ppl {fid['ppl']:.2f} vs float {fid['float_ppl']:.2f} "
                         f"({fid['ppl_increase_pct']:+.1f}%), top-1 {100 * fid['top1_agreement']:.1f}%, KL {fid['mean_kl']:.4f}"
                         f" on {fid['tokens']} tokens" + (f" (windows of {fid['window']})" if fid.get("window") else ""))
    for r in info["memory_by_context"]:
        fits = ", ".join(f"{g} GB" for g in r["fits_phone_ram_gb"]) or "none"
        over = (f" + runtime {human_bytes(r['runtime_overhead_bytes'])} measured" if r.get("overhead_measured")
                else " + runtime overhead not measured: run edgepack bench")
        lines.append(f"memory {r['format']:4s} ctx {r['context']:5d}: {human_bytes(r['total_bytes'])} "
                     f"(weights {human_bytes(r['weights_bytes'])} + KV {human_bytes(r['kv_cache_bytes'])} {r.get('kv_cache_dtype', '')}{over}); "
                     f"fits phones with: {fits}")
    return "\n".join(lines)


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
