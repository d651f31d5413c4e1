"""Fidelity of each int4 method on the demo model, with fake quantization through the float reference.

    python benchmarks/quant_methods.py [METHOD[@TOKENS] ...]   (default: every method in edgepack.quant)
    python benchmarks/quant_methods.py --damp X METHOD[@TOKENS] ...   (GPTQ's damping X instead of the method's,
                                                                     gptq.DAMP or AO_DAMP; rows "METHOD[@TOKENS] damp=X")
    python benchmarks/quant_methods.py --ft-damp X METHOD[@TOKENS] ...   (the _ft methods' target damping
                                                                     instead of calibrate.FT_DAMP; "ft_damp=X")
    python benchmarks/quant_methods.py --gguf demo|2304 [ROW ...]   (GGUF types, llama.cpp scoring every file)
    python benchmarks/quant_methods.py --exports ART RTN_ART [OUT]   (real artifacts, scored by their engines;
                                                                     default OUT: results/quant_export_demo.json)

Each method quantizes the demo checkpoint (calibrated ones on texts.calibration_text()), the float
reference runs on the dequantized weights (edgepack.fidelity.reference_logits(weights=...)) over the
first 2048 tokens of texts.eval_text(), and fidelity.compare scores it against the float logits.
Size is the bytes of quantized weights (codes + fp32 scales + packed zero points; norms fp32) as
MatMulNBits stores them, relative to plain symmetric RTN. Results merge into
benchmarks/results/quant_methods.json (one record per method, rerunnable one method at a time).
"""
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "quant_methods.json"
REF_CACHE = Path(os.environ.get("EDGEPACK_REF_CACHE", "/tmp/edgepack-demo-ref-2048.npy"))


def machine():
    import torch

    from edgepack.bench.machine import machine_info

    return dict(machine_info(), torch_threads=torch.get_num_threads())


def main(names, damp=None, ft_damp=None):
    import torch

    from edgepack import fidelity
    from edgepack.quant import methods
    from edgepack.quant.calibrate import CALIBRATION_TOKENS
    from edgepack.model.checkpoint import load
    from edgepack.model.tokenizer import load_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("EDGEPACK_THREADS", "1")))  # small ops dominate; the 2 cores are shared
    ckpt = load("demo")
    c = ckpt.config
    tok = load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)
    ids = fidelity.eval_ids(tok, 2048)
    if REF_CACHE.is_file():
        ref = np.load(REF_CACHE)
    else:
        ref = fidelity.reference_logits(ckpt, ids)
        np.save(REF_CACHE, ref)
    before = json.loads(OUT.read_text()) if OUT.is_file() else {"results": {}}
    results = before["results"]
    for r in results.values():  # rows merge across runs: each keeps the CPU it ran on
        r.setdefault("cpu", before["machine"]["cpu"])
    rtn_bytes = methods.size_bytes(methods.quantize_model(ckpt, "rtn"))
    if ft_damp is not None:
        from edgepack.quant import calibrate

        calibrate.FT_DAMP = ft_damp  # the float target's damping (the _ft methods)
    n_weights = sum(int(np.prod(ckpt.shape(n))) for n in ckpt.names)
    for name in names:
        t0 = time.time()
        spec, _, n_cal = name.partition("@")  # METHOD@TOKENS: that many calibration tokens (default 2048)
        m = methods.method(spec) if damp is None else replace(methods.method(spec), damp=damp)  # GPTQ's damping
        q = methods.quantize_model(ckpt, m, tokenizer=tok, n_tokens=int(n_cal) if n_cal else CALIBRATION_TOKENS)
        calib_s = time.time() - t0
        logits = fidelity.reference_logits(ckpt, ids, weights=q.weight)
        fid = fidelity.compare(ref, logits, ids)
        size = methods.size_bytes(q)
        if damp is not None:
            name = f"{name} damp={damp:g}"
        if ft_damp is not None:
            name = f"{name} ft_damp={ft_damp:g}"
        r = {"method": name, "description": q.method.describe, "ppl": fid["ppl"], "float_ppl": fid["float_ppl"],
             "ppl_increase_pct": fid["ppl_increase_pct"], "top1_agreement": fid["top1_agreement"],
             "mean_kl": round(float(fid["mean_kl"]), 6), "bits_per_weight": round(8 * size / n_weights, 3),
             "size_vs_rtn": round(size / rtn_bytes, 4), "quantize_s": round(calib_s, 1), "calibration": q.info["calibration"],
             "cpu": machine()["cpu"]}
        results[name] = r
        print(json.dumps(r), flush=True)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps({"machine": machine(), "eval": {"text": fid["eval_text"], "tokens": fid["tokens"]},
                                   "results": results}, indent=2) + "\n")


LONG_EVAL = 8192  # tokens for the second, finer figure: 4 windows of 2048 (the demo's eval text has 10,553)


def record_exports(default_dir, rtn_dir, out=ROOT / "results" / "quant_export_demo.json"):
    """Real artifacts: `edgepack export` with the default methods vs `--method rtn`, fidelity measured by
    the runtimes themselves (onnxruntime, llama.cpp), sizes from the manifests' file lists. The export
    prints its figure on 2048 tokens; `edgepack verify --tokens 8192` adds one on four times as many."""
    from edgepack.verify import verify

    def load(d):
        return json.loads((Path(d) / "edgepack.json").read_text())

    rtn = {a["format"]: a for a in load(rtn_dir)["artifacts"]}
    long = {r["format"]: r["fidelity"] for r in verify(default_dir, tokens=LONG_EVAL, threads=2)["artifacts"]}
    rows = []
    for a in load(default_dir)["artifacts"]:
        size, base = (sum(f["bytes"] for f in x["files"]) for x in (a, rtn[a["format"]]))
        f = a["fidelity"]
        rows.append({"format": a["format"], "path": a["path"], "method": a["quantization"]["method"],
                     "quantization": a["quantization"], "fidelity": f, f"fidelity_{LONG_EVAL}": long[a["format"]],
                     "bytes": size, "rtn_bytes": base,
                     "size_vs_rtn": round(size / base, 4),
                     "acceptance": {"ppl_increase_pct<=10": f["ppl_increase_pct"] <= 10, "top1>=0.80": f["top1_agreement"] >= 0.8,
                                    "size_vs_rtn<=1.15": size / base <= 1.15}})
    out.write_text(json.dumps({"machine": machine(), "commands": [
        export_command(load(default_dir), default_dir),
        f"edgepack export --model demo --out {rtn_dir} --method rtn --fidelity-tokens 0 --threads 2",
        f"python benchmarks/quant_methods.py --exports {default_dir} {rtn_dir}  (verify --tokens {LONG_EVAL})"],
        "results": rows}, indent=2) + "\n")
    return rows


def export_command(manifest, out):
    """The `edgepack export` line that wrote an artifact, read back from its manifest."""
    from edgepack.model.checkpoint import load
    from edgepack.quant.calibrate import default_tokens
    from edgepack.quant.methods import DEFAULT_GGUF_METHOD, DEFAULT_METHOD

    tokens = default_tokens(load("demo"))
    arts = manifest["artifacts"]
    cmd = f"edgepack export --model demo --out {out} --threads 2"
    if len(arts) == 1:
        cmd += f" --format {arts[0]['format']}"
    q = arts[0]["quantization"]
    if q["method"] not in (DEFAULT_METHOD, DEFAULT_GGUF_METHOD):
        cmd += f" --method {q['method']}"
    if (q.get("calibration") or {}).get("tokens", tokens) != tokens:
        cmd += f" --calibration-tokens {q['calibration']['tokens']}"
    return cmd


def table(path=OUT):
    """The results as the Markdown table quoted in edgepack/quant/'s docstring."""
    rs = json.loads(Path(path).read_text())["results"].values()
    lines = ["| method | ppl | Δ ppl | top-1 | KL | bits/weight | size vs rtn |", "|---|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['method']} | {r['ppl']:.2f} | {r['ppl_increase_pct']:+.1f}% | {100 * r['top1_agreement']:.1f}% | "
                     f"{r['mean_kl']:.3f} | {r['bits_per_weight']:.2f} | {r['size_vs_rtn']:.3f} |")
    return "\n".join(lines)


# -- GGUF types: edgepack's files against llama.cpp's quantizer, llama.cpp scoring every file ---------
GGUF_ROWS = {  # row -> (who quantizes, GGUF type, edgepack method)
    "llama.cpp q4_0": ("llama.cpp", "q4_0", None),
    "llama.cpp q4_k_m": ("llama.cpp", "q4_k_m", None),
    "llama.cpp q4_k_m + imatrix": ("llama.cpp", "q4_k_m", "imatrix"),
    "llama.cpp q4_k_s": ("llama.cpp", "q4_k_s", None),
    "llama.cpp q5_k_m": ("llama.cpp", "q5_k_m", None),
    # edgepack's rows: METHOD[@TOKENS][ damp=X], bare = 2048 calibration tokens and the method's damping, as
    # in main(); the export's defaults on both models here are 8192 tokens (calibrate.default_tokens)
    "edgepack q4_0 (default)": ("edgepack", "q4_0", "awq_gptq_sym_ao+emb5@8192"),
    "edgepack q4_0, file order (the default before 2026-12-07)": ("edgepack", "q4_0", "awq_gptq_sym+emb5"),
    "edgepack q4_0 act-order, damp 0.01": ("edgepack", "q4_0", "awq_gptq_sym_ao+emb5 damp=0.01"),
    "edgepack q4_0 act-order, damp 0.01, 8192 calibration tokens": ("edgepack", "q4_0", "awq_gptq_sym_ao+emb5@8192 damp=0.01"),
    "edgepack q4_k_m": ("edgepack", "q4_k_m", "awq_gptq_sym@8192"),
    "edgepack q4_k_s": ("edgepack", "q4_k_s", "awq_gptq_sym@8192"),
    "edgepack q5_k_m": ("edgepack", "q5_k_m", "awq_gptq_sym@8192"),
    "edgepack q4_k_m, 2048 calibration tokens": ("edgepack", "q4_k_m", "awq_gptq_sym"),
    "edgepack q5_k_m, 2048 calibration tokens": ("edgepack", "q5_k_m", "awq_gptq_sym"),
}
WIDE = dict(hidden_size=2304, intermediate_size=5760, num_hidden_layers=4, num_attention_heads=36, num_key_value_heads=36,
            max_position_embeddings=4096, dim_model_base=2304,  # logit scale 1: peaked enough for top-1 to mean something
            vocab_size=None)  # MiniCPM-2B's widths, few layers, random weights (make_tiny), the tiny tokenizer's vocabulary


def imatrix(ckpt, tok):
    """llama.cpp's importance matrix from edgepack's calibration text: for every linear, the mean x² of
    each input column over the calibration tokens through the float model (llama-imatrix's statistic),
    under its GGUF name."""
    import gguf
    import torch

    from edgepack.formats.gguf_writer import _arch
    from edgepack.model.reference import MiniCPM
    from edgepack.quant.calibrate import calibration_ids

    model = MiniCPM.from_checkpoint(ckpt)
    names = gguf.TensorNameMap(_arch(ckpt.config), ckpt.config.num_hidden_layers)
    sums, hooks = {}, []
    for n, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            g = names.get_name(n + ".weight", try_suffixes=(".weight",))
            if g:
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, a, g=g: sums.__setitem__(g, sums.get(g, 0) + a[0].double().pow(2).reshape(-1, a[0].shape[-1]).sum(0))))
    ids = calibration_ids(tok)
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    return {g: (v / ids.numel()).float().numpy() for g, v in sums.items()}


def gguf_types(model, rows, work=Path(os.environ.get("EDGEPACK_WORK", "/tmp/edgepack-gguf-types"))):
    """Write each row's GGUF (llama.cpp's quantizer runs on edgepack's f32 GGUF), score every file with
    llama.cpp over the first 2048 eval tokens against the f32 GGUF's own logits. Rows merge into
    results/gguf_kquant_{model}.json as they finish."""
    import torch

    from edgepack import fidelity
    from edgepack.formats.gguf_writer import llama_quantize, write_gguf
    from edgepack.model.checkpoint import load
    from edgepack.model.testmodels import make_tiny
    from edgepack.model.tokenizer import load_tokenizer
    from edgepack.quant.calibrate import CALIBRATION_TOKENS
    from edgepack.quant.methods import method, quantize_model
    from edgepack.runtime.gguf_backend import GGUFBackend

    torch.set_num_threads(int(os.environ.get("EDGEPACK_THREADS", "2")))
    work = Path(work) / model
    work.mkdir(parents=True, exist_ok=True)
    if model == "demo":
        ckpt = load("demo")
    else:  # a random checkpoint: quality is read against its own f32 GGUF, not against language
        d = work / "ckpt"
        if not (d / "config.json").is_file():
            make_tiny(d, tied=False, **{k: v for k, v in WIDE.items() if v is not None})  # an untied head: the tied
            # table made every random hidden state argmax its own token (top-1 1.0 whatever the quantization)
        ckpt = load(d)
    c = ckpt.config
    tok = load_tokenizer(ckpt.path, bos_id=c.bos_token_id, eos_ids=c.eos_token_ids)
    ids = fidelity.eval_ids(tok, 2048)
    f32 = work / "f32"
    if not (f32 / "model-F32.gguf").is_file():
        f32.mkdir(exist_ok=True)
        write_gguf(ckpt, f32, gguf_type="f32")
    out = ROOT / "results" / f"gguf_kquant_{model}.json"
    results = json.loads(out.read_text())["results"] if out.is_file() else {}

    def score(path):
        with GGUFBackend(path, threads=2, n_ctx=len(ids)) as be:
            return fidelity.backend_logits(be, ids)

    ref = score(f32 / "model-F32.gguf")
    for row in rows:
        who, kind, spec = GGUF_ROWS[row]
        d = work / row.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        d.mkdir(exist_ok=True)
        t0 = time.time()
        if who == "llama.cpp":
            path = d / f"model-{kind}.gguf"
            llama_quantize(f32 / "model-F32.gguf", path, kind, threads=2, imatrix=imatrix(ckpt, tok) if spec else None)
            q = None
        else:
            name, _, damp = spec.partition(" damp=")
            name, _, n_cal = name.partition("@")
            m = method(name) if not damp else replace(method(name), damp=float(damp))
            q = quantize_model(ckpt, m, tokenizer=tok, block8=32, block=32, kmix=None if kind == "q4_0" else kind,
                               n_tokens=int(n_cal) if n_cal else CALIBRATION_TOKENS)
            path = d / write_gguf(ckpt, d, gguf_type=kind, quantized=q)["file"]
        quantize_s = time.time() - t0
        fid = fidelity.compare(ref, score(path), ids)
        from collections import Counter

        import gguf

        types = Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors if len(t.shape) > 1)
        r = {"row": row, "quantizer": who, "gguf_type": kind, "method": spec, "bytes": path.stat().st_size,
             "MiB": round(path.stat().st_size / 2 ** 20, 2), "ppl": fid["ppl"], "f32_ppl": fid["float_ppl"],
             "ppl_increase_pct": fid["ppl_increase_pct"], "top1_agreement": fid["top1_agreement"],
             "mean_kl": round(float(fid["mean_kl"]), 6), "tensor_types": dict(types), "quantize_s": round(quantize_s, 1),
             "imatrix": None if who == "edgepack" else spec == "imatrix"}
        results[row] = r
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps({"machine": machine(), "model": model if model == "demo" else {"random": WIDE},
                                   "eval": {"text": fid["eval_text"], "tokens": fid["tokens"], "engine": "llama.cpp (llama-cpp-python)",
                                            "against": "the model's own f32 GGUF, scored by llama.cpp"},
                                   "command": f"python benchmarks/quant_methods.py --gguf {model}",
                                   "results": results}, indent=2) + "\n")
        del q


def gguf_table(model):
    rs = json.loads((ROOT / "results" / f"gguf_kquant_{model}.json").read_text())["results"].values()
    lines = ["| file | size | Δppl | top-1 vs f32 | KL |", "|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['row']} | {r['MiB']:.1f} MiB | {r['ppl_increase_pct']:+.1f}% | {100 * r['top1_agreement']:.1f}% | {r['mean_kl']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--gguf"]:  # --gguf demo|2304 [ROW ...]  (--gguf demo --table prints the table)
        if sys.argv[3:4] == ["--table"]:
            print(gguf_table(sys.argv[2]))
        else:
            gguf_types(sys.argv[2], sys.argv[3:] or list(GGUF_ROWS))
    elif sys.argv[1:2] == ["--table"]:
        print(table())
    elif sys.argv[1:2] == ["--exports"]:  # --exports ARTIFACT RTN_ARTIFACT [OUT.json]  (default quant_export_demo.json)
        for r in record_exports(*sys.argv[2:4], *[Path(p) for p in sys.argv[4:5]]):
            print(json.dumps({k: r[k] for k in ("format", "method", "fidelity", f"fidelity_{LONG_EVAL}", "size_vs_rtn", "acceptance")}))
    else:
        from edgepack.quant.methods import METHODS

        args, knobs = sys.argv[1:], {}
        while args[:1] in (["--damp"], ["--ft-damp"]):  # --damp X and/or --ft-damp X, then the methods
            knobs[args[0][2:].replace("-", "_")] = float(args[1])
            args = args[2:]
        main(args or list(METHODS), **knobs)
