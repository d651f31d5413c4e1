"""`edgepack check-arm`: the tiny fp32 and int4 ONNX artifacts on onnxruntime 1.29.0's arm64 kernels, run for
real under qemu user-mode emulation, against the same onnxruntime on x86 and the manifest's figures.

The arm64 root is built once and cached (~/.cache/edgepack/arm64-root, or $EDGEPACK_CACHE): debootstrap's
first stage + python3.11 unpacked + the aarch64 wheels, ~90 s and ~375 MB on a fresh machine (needs root, as
CI here is, and apt's mirror and PyPI). Each check then spends most of its time importing numpy and
onnxruntime under emulation.

The tiny checkpoint has its q and k projections scaled by 6: make_tiny's random weights give attention
scores of ~0.1, so softmax is nearly uniform and what q holds hardly reaches the logits (a permuted q row
moved the tiny model's KL by <1%). Sharpened, one swapped q row raises the fp32 artifact's KL to the float
reference from 0 to ~9e-5, and the rotary pair order of one layer's q rows (llama.cpp's permutation, the
bug test_gguf.py plants) triples the int4 artifact's KL; a single swapped row stays inside int4's own noise
(+10%), so the int4 artifact is broken with the whole layer.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.check_arm import chat_agreement, check_arm, format_report, record
from edgepack.errors import IntegrityError
from edgepack.export import TARGETS, export
from edgepack.formats.manifest import read_manifest, verify_files

ROOT = Path(__file__).resolve().parent.parent
QK_SCALE = 6.0
TINY_MARGIN = 0.25  # tiny logits spread by ~0.2 (median top-1/top-2 gap ~0.9); arm64 vs x86 moved them by <= 0.02
TOKENS, N_NEW = 128, 8


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from safetensors.torch import load_file, save_file

    from edgepack.model.testmodels import make_tiny

    base = tmp_path_factory.mktemp("arm")
    ckpt = make_tiny(base / "tiny-sharp")
    t = load_file(str(ckpt / "model.safetensors"))
    save_file({k: v * QK_SCALE if ("q_proj" in k or "k_proj" in k) else v for k, v in t.items()},
              str(ckpt / "model.safetensors"))
    arts = {dtype: export(model=str(ckpt), out=base / dtype, formats=("onnx",), dtype=dtype, threads=2,
                          fidelity_tokens=TOKENS, **({"method": "rtn"} if dtype == "int4" else {}))
            for dtype in ("fp32", "int4")}
    arts["int4-phone"] = export(model=str(ckpt), out=base / "int4-phone", formats=("onnx",), threads=2,
                                fidelity_tokens=TOKENS, method="rtn", target="phone")
    arts["gguf"] = export(model=str(ckpt), out=base / "gguf", formats=("gguf",), threads=2, fidelity_tokens=TOKENS,
                          method="rtn")
    return arts


def graph_accuracy_levels(art):
    import onnx

    m = onnx.load(str(art / "onnx" / "model.onnx"), load_external_data=False)
    return {onnx.helper.get_attribute_value(a) for n in m.graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "accuracy_level"}


def test_export_records_its_kernels_and_the_phone_target_in_the_graph(artifacts):
    from edgepack.bench.machine import cpu_info

    assert TARGETS["desktop"] == 4 and TARGETS["phone"] != 4
    for name, level in (("int4", TARGETS["desktop"]), ("int4-phone", TARGETS["phone"]), ("fp32", None)):
        entry = read_manifest(artifacts[name])["artifacts"][0]
        k = entry["fidelity"]["kernels"]
        assert k["arch"] == os.uname().machine and k["flags"] == cpu_info()["flags"] and k["cpu"] == cpu_info()["cpu"]
        assert k["engine"].startswith("onnxruntime 1.")
        assert k.get("accuracy_level") == level and entry["quantization"].get("accuracy_level") == level
        assert graph_accuracy_levels(artifacts[name]) == ({level} if level is not None else set())
    assert read_manifest(artifacts["int4-phone"])["artifacts"][0]["target"] == "phone"


def test_record_adds_arm64_figures_and_refuses_modified_files(artifacts, tmp_path):
    """check-arm --record on the phone target: fidelity_arm64 beside fidelity, only edgepack.json rewritten."""
    art = tmp_path / "phone"
    shutil.copytree(artifacts["int4-phone"], art)
    before = {p.name: p.read_bytes() for p in (art / "onnx").iterdir()}
    r = subprocess.run([sys.executable, "-m", "edgepack", "check-arm", str(art), "--tokens", str(TOKENS), "--record",
                        "--json"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    m = read_manifest(art)
    entry = m["artifacts"][0]
    arm = entry["fidelity_arm64"]
    assert arm["tokens"] == entry["fidelity"]["tokens"] == TOKENS and arm["ok"] and arm["failures"] == []
    assert arm["ppl_increase_pct"] == report["fidelity"]["arm64"]["ppl_increase_pct"]
    assert arm["kernels"]["arch"] == "aarch64" and "i8mm" in arm["kernels"]["flags"]
    assert arm["kernels"]["engine"] == "onnxruntime 1.29.0" and arm["kernels"]["accuracy_level"] == TARGETS["phone"]
    assert arm["x86_64"]["kernels"]["arch"] == os.uname().machine and arm["x86_64"]["tokens"] == TOKENS
    assert abs(arm["ppl_increase_pct"] - arm["x86_64"]["ppl_increase_pct"]) <= 0.5
    verify_files(art, entry["files"])  # the files' sha256s still hold: untouched
    assert before == {p.name: p.read_bytes() for p in (art / "onnx").iterdir()}
    assert not list(art.glob("*.tmp"))
    manifest = (art / "edgepack.json").read_bytes()
    (art / "onnx" / "genai_config.json").write_text("{}")  # a file that no longer matches its manifest
    with pytest.raises(IntegrityError, match="genai_config.json"):
        record(art, report)
    assert (art / "edgepack.json").read_bytes() == manifest


def permute_q(src, dst, all_rows):
    """A copy of the artifact with layer 0's q rows permuted (one pair, or llama.cpp's rotary pair order for
    all of them) in the ONNX weights, the manifest's sha256s updated: broken on purpose, not corrupted."""
    import onnx
    from onnx import numpy_helper

    from edgepack.formats.gguf_writer import permute_qk

    shutil.copytree(src, dst)
    m = json.loads((dst / "edgepack.json").read_text())
    cfg, entry = m["model"]["config"], next(a for a in m["artifacts"] if a["format"] == "onnx")
    nq, hd = cfg["num_attention_heads"] * cfg["head_dim"], cfg["head_dim"]
    order = np.arange(nq)
    if all_rows:
        order = permute_qk(order, cfg["num_attention_heads"])
    else:
        order[[0, hd // 2]] = order[[hd // 2, 0]]  # rotary partners in head 0
    path = dst / entry["path"] / "model.onnx"
    model = onnx.load(str(path))
    prefix = "model.layers.0.attn.qkv_proj.MatMul.weight"
    touched = 0
    for init in model.graph.initializer:
        if init.name.startswith(prefix):  # float: w.T (K, N); int4: codes (N, blocks, 8) and scales (N, blocks)
            w, axis = numpy_helper.to_array(init), 1 if init.name == prefix else 0
            rows = np.arange(w.shape[axis])
            rows[:nq] = order
            init.CopyFrom(numpy_helper.from_array(np.take(w, rows, axis=axis), init.name))
            touched += 1
    assert touched in (1, 2)
    (path.parent / "model.onnx.data").unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
    for f in entry["files"]:
        data = (dst / f["path"]).read_bytes()
        f["bytes"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (dst / "edgepack.json").write_text(json.dumps(m, indent=2))
    return dst


@pytest.mark.parametrize("dtype", ["fp32", "int4"])
def test_tiny_artifact_agrees_on_arm64_kernels(artifacts, dtype):
    r = check_arm(artifacts[dtype], tokens=TOKENS, n_new=N_NEW, margin=TINY_MARGIN)
    print(format_report(r))
    assert r["ok"], r["failures"]
    assert r["onnxruntime"] == r["host_onnxruntime"] == "1.29.0"  # same release: only the CPU kernels differ
    assert r["cpu"]["machine"] == "aarch64"
    assert {"asimddp", "i8mm", "fphp", "sve"} <= set(r["cpu"]["features"]) and "sme" not in r["cpu"]["features"]
    recorded, arm, x86 = (r["fidelity"][k] for k in ("manifest", "arm64", "x86_64"))
    assert recorded["tokens"] == arm["tokens"] == TOKENS
    assert arm["float_ppl"] == pytest.approx(recorded["float_ppl"], rel=1e-4)  # the same windows, the same reference
    assert abs(arm["ppl_increase_pct"] - x86["ppl_increase_pct"]) <= 0.5
    w = r["windows"]
    assert w["positions"] == TOKENS and w["clear"] >= w["positions"] // 2 and w["clear_disagreements"] == 0
    if dtype == "fp32":  # float kernels: the two CPUs differ by rounding only
        assert w["max_abs_err"] < 1e-3 and arm["mean_kl"] < 1e-6
    for c in r["chat"]:
        assert c["tokens"] == N_NEW and c["clear"] >= 1 and c["clear_disagreements"] == 0 and c["free_running_ok"]
    assert "tok/s" not in json.dumps(r) and "no speed figures" in r["speed"]


def test_one_swapped_q_row_fails_the_fp32_check(artifacts, tmp_path):
    broken = permute_q(artifacts["fp32"], tmp_path / "broken-fp32", all_rows=False)
    r = check_arm(broken, tokens=TOKENS, n_new=N_NEW, margin=TINY_MARGIN)
    assert not r["ok"]
    assert any(f.startswith("mean KL") and f.endswith("in the manifest: more than 1.5x + 1e-05") for f in r["failures"]), r["failures"]
    assert r["windows"]["clear_disagreements"] == 0  # both CPUs run the same broken graph alike


def test_permuted_q_rows_fail_the_int4_check_through_the_command(artifacts, tmp_path):
    """Exit 3, one error line naming the figure that left its bound."""
    broken = permute_q(artifacts["int4"], tmp_path / "broken-int4", all_rows=True)
    r = subprocess.run([sys.executable, "-m", "edgepack", "check-arm", str(broken), "--tokens", str(TOKENS)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "FAIL: mean KL" in r.stdout
    assert r.stderr.splitlines()[-1].startswith(f"edgepack: error: {broken}: arm64 left the bounds: ")


def test_chat_agreement_counts_only_clear_disagreements():
    z = np.array([[0.0, 3.0, 0.0], [1.0, 1.1, 0.0], [0.0, 0.0, 5.0]])  # margins 3, 0.1, 5
    c = chat_agreement([1, 0, 2], z, [1, 0, 2], margin=1.0)
    assert (c["clear"], c["clear_disagreements"], c["first_unclear"], c["free_running_split"]) == (2, 0, 1, None)
    c = chat_agreement([1, 0, 1], z, [1, 1, 2], margin=1.0)  # a clear position disagrees; own answer forks at 1
    assert (c["clear_disagreements"], c["free_running_split"], c["free_running_ok"]) == (1, 1, True)
    c = chat_agreement([0, 1, 2], z, [1, 1, 2], margin=1.0)  # forks at 0, before the first unclear position
    assert not c["free_running_ok"]


def test_unknown_cpu_is_one_error_line(artifacts):
    r = subprocess.run([sys.executable, "-m", "edgepack", "check-arm", str(artifacts["fp32"]), "--cpu", "x86"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("edgepack: error: ") and len(r.stderr.splitlines()) == 1


def test_gguf_on_llama_cpp_arm64_build_and_recorded(artifacts, tmp_path):
    """The GGUF on llama.cpp cross-built for aarch64 (arm64root.ensure_llama) against the host's llama-cpp-python."""
    art = tmp_path / "gguf"
    shutil.copytree(artifacts["gguf"], art)
    r = check_arm(art, fmt="gguf", tokens=TOKENS, n_new=N_NEW, margin=TINY_MARGIN)
    print(format_report(r))
    assert r["ok"], r["failures"]
    assert r["format"] == "gguf" and r["engine"] == r["host_engine"] and r["engine"].startswith("llama.cpp (llama-cpp-python")
    assert r["cpu"]["machine"] == "aarch64" and r["windows"]["clear_disagreements"] == 0
    arm = record(art, r)
    entry = read_manifest(art)["artifacts"][0]
    assert entry["format"] == "gguf" and entry["fidelity_arm64"] == arm
    assert arm["kernels"]["arch"] == "aarch64" and arm["kernels"]["engine"] == r["engine"] and arm["tokens"] == TOKENS
    verify_files(art, entry["files"])
