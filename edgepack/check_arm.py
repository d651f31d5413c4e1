"""`edgepack check-arm`: the ONNX artifact on onnxruntime's arm64 kernels, emulated, against x86 and the manifest.

The phone runs onnxruntime's arm64 kernels: MatMulNBits' int8 paths take NEON dot-product or i8mm
routes (KleidiAI where SME is present), float16 is native arithmetic. Everything else here runs x86's.
This check runs edgepack's own OnnxBackend in an arm64 Debian root under qemu user-mode emulation
(arm64root.py) and, with the very same onnxruntime release on the host (x86), on the same token ids:

- teacher-forced fidelity (perplexity, top-1 agreement, KL against the float reference) on the
  manifest's evaluation windows, beside the manifest's figures and the x86 ones;
- the logits of both CPUs on those windows compared position by position (argmax where the margin is clear);
- greedy answers to two chat prompts (tests/test_genai_phone_engine.py's): arm64 teacher-forced on x86's
  answer must pick x86's token wherever its top-1/top-2 margin is clear, with the chosen token's
  log-prob within LOGP_BOUND, and its own free-running answer must equal x86's up to its first unclear
  position (free-running text forks at near-ties, at a point that depends on the kernels);
- the CPU features the emulated core offered (--cpu picks the core; see arm64root.CPUS).

--format gguf does the same for the GGUF on llama.cpp's arm64 build (arm64root.ensure_llama: the host's
llama-cpp-python release cross-compiled for armv8.2-a+dotprod+fp16) against the host's llama-cpp-python.
record() adds the arm64 figures to the manifest (`check-arm --record`).

Emulated speed means nothing, so nothing is timed. Bounds: DESIGN.md's measured spread of onnxruntime's
int8 kernels across CPUs and versions (Δppl ±0.5 point, top-1 ±1.5 points).
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .arm64root import CPUS, WHEELS, ensure_host_site, ensure_llama, ensure_root, python_command, site_path, tool
from .bench.machine import cpu_info
from .errors import BadInput, InternalError
from .fidelity import DEFAULT_TOKENS, agreement, compare, eval_windows, reference_logits
from .formats.manifest import find_artifact, read_manifest, verify_files, write_manifest
from .model.tokenizer import load_tokenizer
from .verify import source_checkpoint

PROMPTS = ("What is the capital of France?", "Write a haiku about the sea.")  # test_genai_phone_engine.py's
N_NEW = 32
CLEAR_MARGIN = 1.5  # top-1/top-2 logits: ~2x the largest change of it measured across onnxruntime versions (0.80)
LOGP_BOUND = 0.5    # the chosen token's log-prob, arm64 vs x86
PPL_POINTS = 0.5    # Δppl, in points of percent: the README's resolution
TOP1_POINTS = 1.5   # top-1 agreement, in points of percent
KL_FACTOR, KL_FLOOR = 1.5, 1e-5  # mean KL to the float reference: at most 1.5x the other figure + 1e-5 (fp32: ~0)
NO_SPEED = "no speed figures: qemu emulates every arm64 instruction, so time says nothing about a phone"


def check_arm(artifact, model=None, cpu="phone", tokens=None, threads=2, n_new=N_NEW, margin=CLEAR_MARGIN, log=None,
              fmt="onnx"):
    """The report (a dict; see format_report) for one artifact's ONNX folder (or fmt="gguf": its GGUF on
    llama.cpp's arm64 build, arm64root.ensure_llama, against the host's llama-cpp-python) on the emulated core `cpu`.
    margin: the top-1/top-2 logit gap above which both CPUs must pick the same token (CLEAR_MARGIN suits
    a trained model; a tiny random one, whose logits spread by ~0.2, needs a smaller one)."""
    log = log or (lambda msg: None)
    root = Path(artifact)
    m = read_manifest(root)
    if fmt not in ("onnx", "gguf"):
        raise BadInput(f"unknown --format {fmt!r}: onnx or gguf")
    entry = find_artifact(m, fmt)
    verify_files(root, m["tokenizer"]["files"])
    verify_files(root, entry["files"])
    if cpu not in CPUS:
        raise BadInput(f"unknown --cpu {cpu!r}: one of {', '.join(CPUS)}")
    arm_root = ensure_root(log)  # built once, cached (arm64root.py)
    tk = m["tokenizer"]
    tok = load_tokenizer(root / (tk.get("path") or "tokenizer"), bos_id=tk.get("bos_id"), eos_ids=tk.get("eos_ids") or None)
    recorded = entry.get("fidelity") or {}
    cfg = m["model"]["config"]
    context = cfg.get("context_length") or cfg["max_position_embeddings"]
    windows = eval_windows(tok, tokens or recorded.get("tokens") or DEFAULT_TOKENS, context)
    ckpt = source_checkpoint(root, m, model)
    ckpt.config = ckpt.config.with_context(context)  # as exported
    log(f"float reference on {sum(map(len, windows))} evaluation tokens")
    ref = reference_logits(ckpt, windows)
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    job = {fmt: str(root / entry["path"]), "threads": threads, "windows": windows, "prompts": prompts,
           "n_new": n_new, "eos": list(tok.eos_ids), "forced": None,
           "n_ctx": max(16, *map(len, windows), *(len(p) + n_new for p in prompts))}
    if fmt == "gguf":
        from .model.rope import llama_cpp_n_ctx

        job["n_ctx"] = llama_cpp_n_ctx(ckpt.config, job["n_ctx"])  # LongRoPE: the export's factor set
        llama = ensure_llama(log)  # the host's llama-cpp-python release, cross-built for arm64 (cached)
        host_site, arm_site, env = [], [str(llama), site_path(arm_root)], {"LLAMA_CPP_LIB_PATH": str(llama / "llama_cpp" / "lib"),
                                                                "LD_LIBRARY_PATH": str(llama / "llama_cpp" / "lib")}
    else:
        host_site, arm_site, env = [str(ensure_host_site())], [site_path(arm_root)], {}
    with tempfile.TemporaryDirectory(prefix="edgepack-check-arm-") as tmp:
        log("x86_64: " + ("the host's llama-cpp-python" if fmt == "gguf" else "onnxruntime " + WHEELS[0].split("==")[1]))
        x86 = _worker([sys.executable], host_site, job, Path(tmp) / "x86_64", len(windows))
        log(f"arm64 under qemu (-cpu {CPUS[cpu][0]}): every instruction emulated, this takes a while")
        arm = _worker(python_command(arm_root, cpu), arm_site, dict(job, forced=[p["tokens"] for p in x86["prompts"]]),
                      Path(tmp) / "arm64", len(windows), env)
        report = _report(root, cpu, recorded, windows, ref, prompts, x86, arm, tok, margin)
    return report


def record(artifact, report):
    """Add the report's arm64 figures to the manifest's entry of its format as `fidelity_arm64` (with the kernels they were
    measured on and x86's on the same onnxruntime release, for comparison). Only edgepack.json is rewritten,
    atomically (temp + rename); the files it lists are verified first and left alone, so their sha256s stay
    valid (the manifest hashes no file of its own, and nothing else hashes it). Returns the new entry."""
    root = Path(artifact)
    m = read_manifest(root)
    entry = find_artifact(m, report.get("format", "onnx"))
    verify_files(root, m["tokenizer"]["files"])
    verify_files(root, entry["files"])  # refuses an artifact whose files no longer match its manifest
    cpu, acc = report["cpu"], (entry.get("quantization") or {}).get("accuracy_level")

    def kernels(arch, name, flags, engine):
        k = {"arch": arch, "cpu": name, "flags": flags, "engine": engine}
        return dict(k, accuracy_level=acc) if acc is not None else k

    fid = {"x86_64": report["fidelity"]["x86_64"], "arm64": report["fidelity"]["arm64"]}
    entry["fidelity_arm64"] = dict(fid["arm64"], kernels=kernels(
        "aarch64", f"qemu-user -cpu {cpu['qemu_cpu']} ('{cpu['name']}': {cpu['description']}), emulated", cpu["features"],
        report["engine"]), x86_64=dict(fid["x86_64"], kernels=kernels(platform.machine(), report["host"]["cpu"],
                                                                       report["host"]["flags"], report["host_engine"])),
        qemu=report["qemu"], ok=report["ok"], failures=report["failures"])
    write_manifest(root, m)
    return entry["fidelity_arm64"]


def _worker(python, site, job, out, n_windows, extra_env=None):
    """Run check_arm_worker under `python` with the `site` folders (the engine) first on the path; load what it wrote."""
    out.mkdir()
    (out / "job.json").write_text(json.dumps(job), encoding="utf-8")
    code = str(Path(__file__).resolve().parent.parent)  # this edgepack, importable by the emulated python too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*site, code]), PYTHONNOUSERSITE="1",
               PYTHONDONTWRITEBYTECODE="1", **(extra_env or {}))
    r = subprocess.run([*python, "-m", "edgepack.check_arm_worker", str(out / "job.json"), str(out)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = " | ".join((r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]) or "(no output)"
        raise InternalError(f"the check worker ({Path(python[-1]).name}) failed with exit {r.returncode}: {tail[:600]}")
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    res["windows"] = [np.load(out / f"window{k}.npy", mmap_mode="r") for k in range(n_windows)]
    res["prompts"] = [{"tokens": t, "logits": np.load(out / f"prompt{k}.npy")} for k, t in enumerate(res.pop("free_running"))]
    return res


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def chat_agreement(reference_tokens, forced_logits, free_tokens, margin=CLEAR_MARGIN):
    """arm64 against x86's greedy answer: arm64's logits teacher-forced on x86's tokens, and arm64's own
    free-running answer. Disagreements count only where arm64's top-1 leads its top-2 by `margin`."""
    tokens, z = np.asarray(reference_tokens), np.asarray(forced_logits, np.float64)
    top2 = np.sort(z, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= margin
    argmax = z.argmax(-1)
    first_unclear = int(np.argmin(clear)) if not clear.all() else len(tokens)
    split = next((i for i, (a, b) in enumerate(zip(free_tokens, reference_tokens)) if a != b),
                 None if len(free_tokens) == len(reference_tokens) else min(len(free_tokens), len(reference_tokens)))
    return {"tokens": len(tokens), "clear": int(clear.sum()), "same_argmax": int((argmax == tokens).sum()),
            "clear_disagreements": int((clear & (argmax != tokens)).sum()), "first_unclear": first_unclear,
            "free_running_split": split, "free_running_ok": split is None or split >= first_unclear}


def _report(root, cpu, recorded, windows, ref, prompts, x86, arm, tok, margin):
    fid = {"x86_64": compare(ref, x86["windows"], windows), "arm64": compare(ref, arm["windows"], windows)}
    cross = [agreement(a, b, margin) for a, b in zip(x86["windows"], arm["windows"])]
    n = sum(c["positions"] for c in cross)
    windows_cmp = {"positions": n, "top1": round(sum(c["top1"] * c["positions"] for c in cross) / n, 4),
                   "clear": sum(c["clear"] for c in cross), "clear_disagreements": sum(c["clear_disagreements"] for c in cross),
                   "max_abs_err": float(f"{max(c['max_abs_err'] for c in cross):.3g}"),
                   "rel_err": round(max(c["rel_err"] for c in cross), 6),
                   "mean_kl": float(f"{sum(c['mean_kl'] * c['positions'] for c in cross) / n:.3g}")}
    chat = []
    for k, text in enumerate(PROMPTS):
        xp, ap = x86["prompts"][k], arm["prompts"][k]
        rows = np.arange(len(xp["tokens"]))
        logp = np.abs(_log_softmax(ap["logits"])[rows, xp["tokens"]] - _log_softmax(xp["logits"])[rows, xp["tokens"]])
        c = chat_agreement(xp["tokens"], ap["logits"], ap["tokens"], margin)
        c.update(prompt=text, prompt_tokens=len(prompts[k]), max_logp_err=round(float(logp.max()), 4),
                 x86_answer=tok.decode(xp["tokens"]), arm64_answer=tok.decode(ap["tokens"]))
        chat.append(c)
    windows_cmp["margin"] = margin
    failures = _failures(recorded, fid, windows_cmp, chat)
    return {"artifact": str(root), "onnxruntime": arm.get("onnxruntime"), "host_onnxruntime": x86.get("onnxruntime"),
            "format": "gguf" if arm["engine"].startswith("llama.cpp") else "onnx", "engine": arm["engine"], "host_engine": x86["engine"],
            "host": cpu_info(), "qemu": _qemu_version(),
            "cpu": {"name": cpu, "qemu_cpu": CPUS[cpu][0], "description": CPUS[cpu][1], "features": arm["features"],
                    "machine": arm["machine"]},
            "tokens": fid["arm64"]["tokens"], "window": fid["arm64"]["window"],
            "fidelity": {"manifest": recorded or None, **fid}, "windows": windows_cmp, "chat": chat,
            "speed": NO_SPEED, "failures": failures, "ok": not failures}


def _qemu_version():
    r = subprocess.run([tool("qemu-aarch64-static", "qemu-user-static"), "--version"], capture_output=True, text=True)
    return (r.stdout.splitlines() or ["?"])[0]


def _failures(recorded, fid, windows_cmp, chat):
    a, x = fid["arm64"], fid["x86_64"]
    out = []

    def bounds(other, name):
        d_ppl = a["ppl_increase_pct"] - other["ppl_increase_pct"]
        d_top1 = 100 * (a["top1_agreement"] - other["top1_agreement"])
        if abs(d_ppl) > PPL_POINTS:
            out.append(f"Δppl {a['ppl_increase_pct']:+.3f}% on arm64 vs {other['ppl_increase_pct']:+.3f}% {name}: "
                       f"{d_ppl:+.3f} points, beyond ±{PPL_POINTS}")
        if a["mean_kl"] > KL_FACTOR * other["mean_kl"] + KL_FLOOR:
            out.append(f"mean KL {a['mean_kl']:.6f} on arm64 vs {other['mean_kl']:.6f} {name}: more than "
                       f"{KL_FACTOR}x + {KL_FLOOR}")
        if abs(d_top1) > TOP1_POINTS:
            out.append(f"top-1 {100 * a['top1_agreement']:.2f}% on arm64 vs {100 * other['top1_agreement']:.2f}% {name}: "
                       f"{d_top1:+.2f} points, beyond ±{TOP1_POINTS}")

    bounds(x, "on x86_64")
    if recorded.get("ppl_increase_pct") is not None and recorded.get("tokens") == a["tokens"]:
        bounds(recorded, "in the manifest")
    if windows_cmp["clear_disagreements"]:
        out.append(f"evaluation windows: arm64's argmax differs from x86_64's at {windows_cmp['clear_disagreements']} "
                   f"of {windows_cmp['clear']} positions with a margin >= {windows_cmp['margin']}")
    for c in chat:
        if c["clear_disagreements"]:
            out.append(f"{c['prompt']!r}: arm64 picks another token than x86_64 at {c['clear_disagreements']} of "
                       f"{c['clear']} clear positions")
        if c["max_logp_err"] > LOGP_BOUND:
            out.append(f"{c['prompt']!r}: the chosen token's log-prob differs by {c['max_logp_err']} (> {LOGP_BOUND})")
        if not c["free_running_ok"]:
            out.append(f"{c['prompt']!r}: arm64's own answer leaves x86_64's at token {c['free_running_split']}, "
                       f"before the first unclear position ({c['first_unclear']})")
    return out


def format_report(r):
    """The report as text: CPU, fidelity table (manifest / x86_64 / arm64), windows, chat, verdict."""
    cpu = r["cpu"]
    lines = [f"{r['artifact']}: {r['engine']} on arm64 (qemu -cpu {cpu['qemu_cpu']}) vs x86_64 "
             f"({r['host_engine']}, {r['host']['cpu']})",
             f"emulated core '{cpu['name']}': {cpu['description']}",
             f"  features offered (AT_HWCAP/AT_HWCAP2): {' '.join(cpu['features']) or 'none of note'}",
             f"fidelity on {r['tokens']} evaluation tokens (window {r['window']}), against the float reference:",
             f"  {'':10} {'ppl':>10} {'Δppl':>9} {'top-1':>8} {'mean KL':>10}"]
    for name in ("manifest", "x86_64", "arm64"):
        f = r["fidelity"][name]
        if f:
            other = f" (on {f['tokens']} tokens: not comparable)" if f["tokens"] != r["tokens"] else ""
            lines.append(f"  {name:10} {f['ppl']:10.4f} {f['ppl_increase_pct']:+8.3f}% {100 * f['top1_agreement']:7.2f}% "
                         f"{f['mean_kl']:10.6f}{other}")
    w = r["windows"]
    lines.append(f"arm64 vs x86_64 logits, {w['positions']} positions: same argmax {100 * w['top1']:.2f}%, "
                 f"{w['clear_disagreements']} disagreements of {w['clear']} clear (margin >= {w['margin']}), "
                 f"max |Δlogit| {w['max_abs_err']}, mean KL {w['mean_kl']:.2e}")
    for c in r["chat"]:
        split = "same answer" if c["free_running_split"] is None else f"own answer forks at token {c['free_running_split']}"
        lines.append(f"{c['prompt']!r}: {c['tokens']} tokens, {c['clear_disagreements']} disagreements of {c['clear']} "
                     f"clear, first unclear at {c['first_unclear']}, {split}, max |Δlog-prob| {c['max_logp_err']}")
        lines.append(f"  x86_64: {c['x86_answer']!r}")
        if c["arm64_answer"] != c["x86_answer"]:
            lines.append(f"  arm64:  {c['arm64_answer']!r}")
    lines.append(r["speed"])
    lines += [f"FAIL: {f}" for f in r["failures"]] or ["OK: arm64 agrees with x86_64 and the manifest within the bounds"]
    return "\n".join(lines)
