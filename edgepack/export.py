"""`edgepack export`: checkpoint → ONNX and/or GGUF int4 artifacts + manifest, all or nothing.

Everything is written into a hidden temporary folder beside OUT and renamed into place only when
complete (manifest last), so an error, a full disk or Ctrl-C never leaves something that looks
finished. Before that, each artifact runs a short prompt in edgepack's runtime (smoke.py). An existing
OUT is refused unless force=True.
"""
import os
import shutil
import tempfile
from pathlib import Path

from . import interrupt
from .errors import BadInput
from .formats.manifest import file_entries, files_under, new_manifest, write_manifest

FORMATS = ("onnx", "gguf")
DTYPES = ("int4", "fp32", "f16")
# --target: the int4 ONNX's MatMulNBits accuracy_level. desktop: int8 activations (onnx_writer.ACCURACY_LEVEL), whose
# arm64 dotprod/i8mm path quantizes a whole row: 2.1-2.7% error on the demo's down_proj vs 0.65-0.92% on x86, and
# +0.79 points of Δppl on emulated arm64. phone: level 1 (fp32 activations; 0 and 2 give the same product on every
# core measured), exact on both CPUs, so arm64's fidelity is x86's (+12.201% vs +12.205%) at ~5.6x level 4's
# emulated prefill cost (arm_matmulnbits_kernels.json, check_arm_demo_rtn8_phone_target_256.json).
TARGETS = {"desktop": 4, "phone": 1}


def default_out(name, dtype):
    return Path.cwd() / f"{name}-{dtype}"


def demo_artifact(threads=None, log=None):
    """The demo model's default int4 artifact, exported first if it is missing (`edgepack bench` without one)."""
    from .model.demo import NAME

    root = default_out(NAME, "int4")
    if not (root / "edgepack.json").is_file():
        (log or (lambda msg: None))(f"no artifact given and {root} is missing: exporting the demo model first")
        export(model="demo", out=root, threads=threads, log=log)
    return root


def export(model="demo", out=None, formats=FORMATS, dtype="int4", block_size=32, gguf_type=None, threads=None,
           force=False, fidelity_tokens=2048, progress=None, log=None, method=None, context=None, kv_dtype=None,
           mmproj_type="f16", vision_dtype=None, target="desktop", calibration_tokens=None):
    """Export `model` (a checkpoint dir, a Hugging Face id org/name, "demo" or "demo-llama"); returns the artifact folder.

    context: the tokens the artifact serves (default: the description's context_length, i.e. max_position_embeddings, or 4096 for a dynamic-NTK model); the ONNX
    RoPE caches, genai's context_length and, for LongRoPE, the factor set follow it.

    method: the int4 method of edgepack.quant (default: methods.DEFAULT_METHOD for ONNX,
    methods.DEFAULT_GGUF_METHOD for GGUF Q4_0 and DEFAULT_KQUANT_METHOD for the K types, the measured
    best within the size budget).
    kv_dtype: the ONNX KV cache's type (default: onnx_writer.KV_DTYPE for int4, float32 for fp32).
    mmproj_type: a MiniCPM-V's mmproj GGUF beside the LLM GGUF: f16 (default), q8_0 or f32.
    vision_dtype: a MiniCPM-V's vision.onnx weights: fp16 (default for int4), int8 or fp32 (default for fp32).
    target: "desktop" (default) or "phone": the int4 ONNX's MatMulNBits accuracy_level (TARGETS).
    calibration_tokens: tokens of calibration text for a calibrated int4 method (default
    quant.calibrate.default_tokens: 2048 to 8192 by the model's size, as many as its time budget allows;
    a multiple of the 512-token sequences). More tokens fit better: act-order's fake-quant Δppl on the
    demo is +4.6% at 2048 tokens, +3.2% at 4096, +2.7% at 8192 (benchmarks/README.md, decision log "int4 method")."""
    from .model.checkpoint import load
    from .model.tokenizer import load_tokenizer

    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise BadInput(f"unknown format {','.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    if target not in TARGETS:
        raise BadInput(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype}; choose from {', '.join(DTYPES)}")
    if dtype == "f16" and "onnx" in formats:
        raise BadInput("--dtype f16 exists for GGUF only; use fp32 or int4 for ONNX")
    if block_size not in (16, 32, 64, 128, 256):
        raise BadInput(f"--block-size {block_size} is not supported (16, 32, 64, 128 or 256)")
    if method is not None:
        from .quant import kquant, methods

        m = methods.method(method)  # a misspelt method fails now, not after loading and calibrating
        if dtype != "int4":
            raise BadInput(f"--method {method} applies to int4 exports, not --dtype {dtype}")
        if m.act_order and "gguf" in formats and gguf_type in kquant.MIXES:  # the K grids' GPTQ runs in file order
            raise BadInput(f"--method {method}: act-order applies to ONNX int4 and GGUF q4_0, not GGUF {gguf_type}")
        if (m.refine or m.seq) and "gguf" in formats and gguf_type in kquant.MIXES:
            raise BadInput(f"--method {method} applies to ONNX int4 and GGUF q4_0, not GGUF {gguf_type}")
    if calibration_tokens is not None:
        from .quant.calibrate import CALIBRATION_SEQ

        if dtype != "int4" or method == "rtn":
            raise BadInput(f"--calibration-tokens applies to a calibrated int4 method, not to {'--method rtn' if dtype == 'int4' else '--dtype ' + dtype}")
        if calibration_tokens <= 0 or calibration_tokens % CALIBRATION_SEQ:
            raise BadInput(f"--calibration-tokens {calibration_tokens} must be a positive multiple of {CALIBRATION_SEQ}")
    if kv_dtype is not None:
        from .formats.onnx_writer import KV_DTYPES

        if kv_dtype not in KV_DTYPES:
            raise BadInput(f"--kv-dtype {kv_dtype} is not supported ({', '.join(KV_DTYPES)})")
    log = log or (lambda msg: None)
    progress = progress or (lambda stage, done, total: None)

    progress("load", 0, 1)  # before the first byte of the checkpoint is read
    ckpt = load(model)
    if vision_dtype is not None and (ckpt.config.vision is None or "onnx" not in formats):
        raise BadInput("--vision-dtype applies to a MiniCPM-V model's ONNX export (vision.onnx) only")
    if ckpt.config.vision is not None and "gguf" in formats:
        from .formats.mmproj import TYPES, check_mtmd

        check_mtmd(ckpt.config.vision)  # MiniCPM-V 2.0: ONNX only, said now
        if mmproj_type not in TYPES:
            raise BadInput(f"--mmproj-type {mmproj_type} is not supported ({', '.join(TYPES)})")
    if context is not None:
        if not 16 <= int(context) <= ckpt.config.max_position_embeddings:
            why = " (its dynamic NTK RoPE scaling beyond that is not exported)" if ckpt.config.rope.kind == "dynamic" else ""
            raise BadInput(f"--context {context} must lie between 16 and the model's {ckpt.config.max_position_embeddings} tokens{why}")
        ckpt.config = ckpt.config.with_context(context)
    if dtype == "int4" and "onnx" in formats:
        from .formats.onnx_writer import check_block_size

        check_block_size(ckpt, block_size)  # now, not after calibrating
    if "onnx" in formats and ckpt.config.attention == "mla":
        from .formats.onnx_mla import mla_head_order

        mla_head_order(ckpt.config)  # a q/k head GQA cannot rotate fails now too
    from .model import demo

    if str(model) in ("demo", "demo-llama"):
        name = {"demo": demo.NAME, "demo-llama": demo.LLAMA_NAME}[str(model)]
    else:  # a hub id's name part (openbmb/MiniCPM5-2B -> MiniCPM5-2B), or the directory's name
        name = ckpt.hub.repo_id.split("/")[1] if getattr(ckpt, "hub", None) else Path(model).resolve().name
    out = Path(out) if out else default_out(name, dtype)
    if out.exists() and not force:
        raise BadInput(f"{out}: output already exists (use --force to replace it)")
    tok = load_tokenizer(ckpt.path, bos_id=ckpt.config.bos_token_id, eos_ids=ckpt.config.eos_token_ids)
    if tok.vocab_size > ckpt.config.vocab_size:
        raise BadInput(f"{ckpt.path}: tokenizer has {tok.vocab_size} tokens but the embedding only {ckpt.config.vocab_size} rows")
    if fidelity_tokens:  # windows of at most the model's context; too many tokens fails now, not after writing
        from .fidelity import eval_windows

        ids = eval_windows(tok, fidelity_tokens, ckpt.config.context_length)
    progress("load", 1, 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    from .quant import methods

    # the folders exist only inside scratch_dir, which removes them however the block ends (interrupt.py);
    # spill: a mixture-of-experts model's calibrated expert codes, beside the artifact, never inside it
    with interrupt.scratch_dir(out.parent, f".{out.name}.tmp-") as tmp, \
            interrupt.scratch_dir(out.parent, f".{out.name}.spill-") as spill, methods.shared_calibration():
        tdir = tmp / "tokenizer"
        tdir.mkdir()
        for f in tok.files + [n for n in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja") if (ckpt.path / n).is_file()]:
            shutil.copyfile(ckpt.path / f, tdir / f)
        manifest = new_manifest(ckpt, name, tok, file_entries(tmp, files_under(tmp, "tokenizer")))
        ref = image_ref = None
        from .smoke import prompt_ids, smoke

        smoke_ids = prompt_ids(tok)
        for fmt in formats:  # ONNX and GGUF share one calibration
            log(f"writing {fmt} ({dtype})")
            entry = _write_format(fmt, ckpt, tmp, dtype, block_size, gguf_type, threads, progress, method, kv_dtype, calibration_tokens,
                                  spill, vision_dtype, TARGETS[target])
            if fmt == "onnx":
                entry["target"] = target
            if fmt == "gguf" and ckpt.config.vision is not None:
                entry.update(write_vision_gguf(ckpt, tmp, mmproj_type))
            progress(f"smoke {fmt}", 0, 1)  # it runs before the fidelity, which a broken artifact would fail less clearly
            entry["smoke"] = smoke(fmt, tmp / entry["path"], ckpt.config, smoke_ids, root=tmp)
            progress(f"smoke {fmt}", 1, 1)
            if fidelity_tokens:
                if ref is None:
                    from .fidelity import reference_logits

                    ref = reference_logits(ckpt, ids, progress=progress)  # "float reference" 0/L+1 .. L+1/L+1, a step a layer
                progress(f"fidelity {fmt}", 0, 1)
                entry["fidelity"] = artifact_fidelity(fmt, tmp / entry["path"], ids, ref, threads, ckpt.config)
                entry["fidelity"]["kernels"] = fidelity_kernels(fmt, entry.get("quantization", {}).get("accuracy_level"))
                if ckpt.config.vision is not None:  # MiniCPM-V: image prompts too (image_fidelity.py)
                    from .image_fidelity import image_fidelity, reference_cases

                    if image_ref is None:
                        image_ref = reference_cases(ckpt, tok)
                    mm = tmp / entry["mmproj"]["path"] if entry.get("mmproj") else None
                    entry["fidelity"]["image"] = image_fidelity(fmt, tmp / entry["path"], ckpt.config, tok,
                                                                image_ref, threads, mmproj=mm)
                progress(f"fidelity {fmt}", 1, 1)
            entry["files"] += entry.pop("files_extra", [])
            manifest["artifacts"].append(entry)
        ckpt.close()
        write_manifest(tmp, manifest)
        os.chmod(tmp, 0o755)
        interrupt.commit(tmp, lambda: _replace(tmp, out))
    return out


def quantize_for(fmt, ckpt, dtype, gguf_type=None, method=None, progress=None, block_size=32, scratch=None, n_tokens=None):
    """The quantization stage for one format: edgepack.quant's Quantized model, or None when the format
    encodes float weights or plain RTN itself (onnxruntime's packer, gguf.quants' Q4_0, llama.cpp's
    Q4_K_M via q4_k_m-llamacpp); GGUF's K types (q4_k_m, q4_k_s, q5_k_m) always carry edgepack's codes, the
    method calibrating them (rtn: round-to-nearest on the K grids). Inside methods.shared_calibration() both
    formats share one calibration.
    scratch: where a mixture-of-experts model's calibrated expert codes are spilled meanwhile.
    n_tokens: the calibration's size (default quant.calibrate.default_tokens: 2048 to 8192 by model size)."""
    from .quant import methods

    tokens = {} if n_tokens is None else {"n_tokens": n_tokens}
    if dtype != "int4":
        return None
    if fmt == "onnx":
        spec, block8, block = method or methods.DEFAULT_METHOD, methods.KEEP8_BLOCK, block_size
    elif (gguf_type or "q4_0") == "q4_0":
        spec, block8, block = method or methods.DEFAULT_GGUF_METHOD, 32, 32  # GGUF's blocks are 32 weights
    elif gguf_type in ("q4_k_m", "q4_k_s", "q5_k_m"):
        spec = (method or methods.DEFAULT_KQUANT_METHOD).split("+")[0]  # the mix names every tensor's bits
        return methods.quantize_model(ckpt, spec, progress=progress, block8=32, block=32, scratch=scratch, kmix=gguf_type, **tokens)
    else:
        if method and method != "rtn":
            raise BadInput(f"--method {method} applies to ONNX int4 and GGUF q4_0, not GGUF {gguf_type}")
        return None
    if spec == "rtn":
        return None
    return methods.quantize_model(ckpt, spec, progress=progress, block8=block8, block=block, scratch=scratch, **tokens)


def _write_format(fmt, ckpt, tmp, dtype, block_size, gguf_type, threads, progress, method=None, kv_dtype=None,
                  calibration_tokens=None, spill=None, vision_dtype=None, accuracy_level=TARGETS["desktop"]):
    q = quantize_for(fmt, ckpt, dtype, gguf_type, method, progress, block_size, scratch=spill, n_tokens=calibration_tokens)  # load -> quantize -> encode
    if fmt == "onnx":
        from .formats.onnx_writer import write_onnx

        d = tmp / "onnx"
        d.mkdir()
        entry = write_onnx(ckpt, d, dtype=dtype, block_size=block_size, threads=threads, progress=progress, quantized=q,
                           kv_dtype=kv_dtype, vision_dtype=vision_dtype, accuracy_level=accuracy_level)
        entry["path"] = "onnx"
    else:
        from .formats.gguf_writer import write_gguf

        d = tmp / "gguf"
        d.mkdir()
        kind = gguf_type or {"fp32": "f32", "f16": "f16"}.get(dtype)
        kw = {"gguf_type": kind} if kind else {}
        entry = write_gguf(ckpt, d, threads=threads, progress=progress, quantized=q, **kw)
        entry["path"] = f"gguf/{entry.pop('file')}"
    if dtype == "int4" and ckpt.config.num_experts:
        entry["quantization"]["experts"] = experts_entry(ckpt.config, q)
    del q  # its codes go as soon as this format is written (the shared calibration stays for the next)
    entry["format"] = fmt
    entry["files"] = file_entries(tmp, files_under(tmp, entry["path"]))
    return entry


def experts_entry(c, q):
    """The manifest's quantization.experts: how the experts were quantized and how many fell back to RTN."""
    e = {"count": c.num_experts, "used_per_token": c.num_experts_per_tok}
    info = q.info.get("experts") if q is not None else None
    if info is None:  # --method rtn (or a method without calibration): the format's RTN for every expert
        return {**e, "method": "rtn", "calibrated_experts": 0, "rtn_experts": c.num_experts * c.num_hidden_layers,
                "min_routed_tokens": None, "note": "no calibration: every expert is symmetric round-to-nearest int4"}
    m = q.method
    how = f"gptq_sym{'+clip' if m.clip else ''}" if m.gptq else ("clip_sym (routed E[x^2])" if m.clip else "rtn")
    return {**e, "method": how, "calibrated_experts": info["calibrated_experts"], "rtn_experts": info["rtn_experts"],
            "min_routed_tokens": info["min_routed_tokens"],
            "routed_tokens_per_layer": info["routed_tokens"],
            "note": "each expert calibrated on the calibration tokens the float router sends it (softmax, top-k, "
                    "renormalised), symmetric int4 without AWQ; an expert routed fewer than min_routed_tokens is RTN"}


def write_vision_gguf(ckpt, tmp, mmproj_type):
    """A MiniCPM-V's mmproj beside its LLM GGUF; the manifest entry's `mmproj` path and files."""
    from .formats.mmproj import write_mmproj

    c = ckpt.config
    path = tmp / "gguf" / f"mmproj-{mmproj_type.upper()}.gguf"
    scale = c.embedding_scale if c.gguf_arch == "minicpm" else 1.0  # what llama.cpp's minicpm arch multiplies inputs by
    info = write_mmproj(c.vision, lambda n: ckpt.vision(n).numpy(), path, mmproj_type, embedding_scale=scale,
                        name=ckpt.path.name)
    rel = f"gguf/{path.name}"
    return {"mmproj": {"path": rel, **{k: v for k, v in info.items() if k != "path"}},
            "files_extra": file_entries(tmp, files_under(tmp, rel))}


def fidelity_kernels(fmt, accuracy_level=None):
    """The CPU kernels a fidelity figure was measured on: this machine's arch, CPU and its flags, the engine."""
    import importlib.metadata as md
    import platform

    from .bench.machine import cpu_info

    pkg, name = ("onnxruntime", "onnxruntime") if fmt == "onnx" else ("llama_cpp_python", "llama.cpp (llama-cpp-python)")
    try:
        engine = f"{name} {md.version(pkg)}"
    except md.PackageNotFoundError:
        engine = f"{name} ?"
    info = cpu_info()
    k = {"arch": platform.machine(), "cpu": info["cpu"], "flags": info["flags"], "engine": engine}
    if accuracy_level is not None:
        k["accuracy_level"] = accuracy_level
    return k


def artifact_fidelity(fmt, path, ids, ref, threads, cfg=None):
    """Fidelity of one written format against precomputed reference logits (export and verify);
    ids and ref are lists of windows (fidelity.eval_windows); cfg: the exported model's description."""
    from .fidelity import backend_logits, compare

    n_ctx = max(16, *map(len, ids))
    if fmt == "onnx":
        from .runtime.onnx_backend import OnnxBackend as B
    else:
        from .model.rope import llama_cpp_n_ctx
        from .runtime.gguf_backend import GGUFBackend as B

        n_ctx = llama_cpp_n_ctx(cfg, n_ctx) if cfg is not None else n_ctx  # LongRoPE: the export's factor set
    with B(path, threads=threads, n_ctx=n_ctx) as b:
        return compare(ref, backend_logits(b, ids), ids)


def _replace(tmp, out):
    """Move the finished folder into place; an old OUT (with --force) goes only after that (run inside
    interrupt.commit, so no signal lands between the two renames)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
