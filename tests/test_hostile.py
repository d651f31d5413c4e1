"""Hostile inputs and faults: each ends in one clear error line, a non-zero exit, no traceback and
nothing half-written (no output folder, no temp files) — across export, run, verify, inspect, bench."""
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgepack.model.testmodels import make_tiny


def edgepack(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_error(r, code, *needles):
    lines = r.stderr.splitlines()
    assert r.returncode == code, r.stderr
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])


def assert_clean(parent, out_name="out"):
    """No output folder and no temp leftovers beside it."""
    left = [p.name for p in Path(parent).iterdir() if p.name.startswith((out_name, f".{out_name}"))]
    assert left == [], left


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from edgepack.export import export

    root = tmp_path_factory.mktemp("hostile")
    return export(model=make_tiny(root / "model"), out=root / "art", fidelity_tokens=16)


@pytest.fixture
def art(tiny_artifact, tmp_path):
    """A private copy to damage."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "art"))


def _model(tmp_path, **kw):
    return make_tiny(tmp_path / "m", **kw)


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def _export(tmp_path, d, *extra):
    return edgepack("export", "--int4", "--model", d, "--out", tmp_path / "out", "--fidelity-tokens", "8", *extra)


# --------------------------------------------------------------------------------------- export
CONFIG_CASES = {
    "config missing a field": ({"num_hidden_layers": None}, "field 'num_hidden_layers' is missing"),
    "config field with a wrong type": ({"hidden_size": "sixty-four"}, "field 'hidden_size' must be an integer"),
    "hidden size not divisible by heads": ({"num_attention_heads": 5}, "must divide hidden_size"),
    "unsupported RoPE scaling": ({"rope_scaling": {"type": "yarn", "factor": 4}}, "rope_scaling type 'yarn' is not supported"),
    "tensor shape not matching config": ({"intermediate_size": 128}, "has shape [160, 64], but"),
    "config not JSON": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_export_bad_config(tmp_path, case):
    changes, needle = CONFIG_CASES[case]
    d = _model(tmp_path)
    if changes is None:
        (d / "config.json").write_text("{ not json")
    else:
        _edit_config(d, **changes)
    r = _export(tmp_path, d)
    assert_one_error(r, 2, needle, "config.json" if "shape" not in needle else "model.safetensors")
    assert_clean(tmp_path)


def test_export_missing_and_unexpected_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    d = _model(tmp_path)
    sd = load_file(d / "model.safetensors")
    save_file({k: v for k, v in sd.items() if "layers.1.mlp.up_proj" not in k}, d / "model.safetensors")
    assert_one_error(_export(tmp_path, d), 2, "tensor model.layers.1.mlp.up_proj.weight is missing", d)
    save_file(dict(sd, **{"model.layers.0.mlp.extra_proj.weight": torch.zeros(2, 2)}), d / "model.safetensors")
    assert_one_error(_export(tmp_path, d), 2, "unexpected tensor model.layers.0.mlp.extra_proj.weight", "model.safetensors")
    assert_clean(tmp_path)


def test_export_truncated_safetensors(tmp_path):
    d = _model(tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-4096])
    assert_one_error(_export(tmp_path, d), 2, "truncated or corrupt safetensors", f)
    assert_clean(tmp_path)


def test_export_corrupted_safetensors_header(tmp_path):
    d = _model(tmp_path)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"\x00garbage!!\xff\xfe"
    f.write_bytes(bytes(data))
    assert_one_error(_export(tmp_path, d), 2, "corrupt safetensors header", f)
    assert_clean(tmp_path)


def test_export_pickle_with_non_tensor_objects(tmp_path):
    d = _model(tmp_path, fmt="bin")
    marker = tmp_path / "EXECUTED"
    (tmp_path / "evil.py").write_text(
        "import os, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'model.embed_tokens.weight': Evil()}}, {str(d / 'pytorch_model.bin')!r})\n")
    subprocess.run([sys.executable, str(tmp_path / "evil.py")], check=True)
    assert_one_error(_export(tmp_path, d), 2, "weights-only", "pytorch_model.bin")
    assert not marker.exists()
    assert_clean(tmp_path)


def test_export_model_dir_carrying_modeling_code_is_never_executed(tmp_path):
    d = _model(tmp_path)
    marker = tmp_path / "EXECUTED"
    for f in ("modeling_minicpm.py", "configuration_minicpm.py", "tokenization_minicpm.py"):
        (d / f).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    _edit_config(d, auto_map={"AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"})
    r = _export(tmp_path, d, "--format", "onnx")
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_export_missing_tokenizer(tmp_path):
    d = _model(tmp_path)
    (d / "tokenizer.model").unlink()
    assert_one_error(_export(tmp_path, d), 2, "no tokenizer found", d)
    assert_clean(tmp_path)


def test_export_tokenizer_vocab_larger_than_embedding(tmp_path):
    d = _model(tmp_path)
    _edit_config(d, vocab_size=600)
    from safetensors.torch import load_file, save_file

    sd = load_file(d / "model.safetensors")
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:600].contiguous()
    save_file(sd, d / "model.safetensors")
    assert_one_error(_export(tmp_path, d), 2, "tokenizer has 800 tokens but the embedding only 600 rows")
    assert_clean(tmp_path)


@pytest.mark.parametrize("family,bad", [("minicpm", "--context=8"), ("minicpm4", "--context=4096"),
                                        ("minicpm4", "--rope-string")])
def test_export_bad_context_or_longrope_config(tmp_path, family, bad):
    """An exported context outside 16..max_position_embeddings, or a rope_scaling that is not an
    object: one error line, nothing written."""
    d = _model(tmp_path, family=family)
    if bad == "--rope-string":
        _edit_config(d, rope_scaling="longrope")
        r = _export(tmp_path, d)
        assert_one_error(r, 2, "field 'rope_scaling' must be an object", "config.json")
    else:
        r = _export(tmp_path, d, bad)
        assert_one_error(r, 2, f"--context {bad.split('=')[1]} must lie between 16 and the model's")
    assert_clean(tmp_path)


def test_export_block_size_that_does_not_divide_the_model(tmp_path, monkeypatch):
    """MatMulNBits blocks must tile every weight's input dimension: one error line, nothing written, and
    refused before the quantization stage runs (calibration is minutes on a real model)."""
    from edgepack import export
    from edgepack.errors import NotSupported
    from edgepack.quant import methods

    d = _model(tmp_path)
    hidden = json.loads((d / "config.json").read_text())["hidden_size"]
    assert hidden % 256
    r = _export(tmp_path, d, "--block-size=256", "--format=onnx")
    assert_one_error(r, 2, f"dimension {hidden} is not a multiple of the int4 block size 256")
    assert_clean(tmp_path)

    def never(*a, **k):
        raise AssertionError("quantized before the block size was checked")
    monkeypatch.setattr(methods, "quantize_model", never)
    with pytest.raises(NotSupported, match="block size 256"):
        export.export(model=str(d), out=tmp_path / "out", formats=("onnx",), block_size=256, fidelity_tokens=0)
    assert_clean(tmp_path)


def test_export_existing_output_is_refused(tmp_path):
    d = _model(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_one_error(_export(tmp_path, d), 2, "already exists", "--force")
    assert (out / "precious.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_export_disk_full(tmp_path):
    d = _model(tmp_path)
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], check=True)
    try:
        r = edgepack("export", "--int4", "--model", d, "--out", mnt / "out", "--fidelity-tokens", "8")
        assert_one_error(r, 2, "no space left on device")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ------------------------------------------------------------------------------------ artifacts
def _rewrite_manifest_entry(art, rel):
    """Make the manifest agree with a damaged file, so the format's own reader must catch it."""
    from edgepack.formats.manifest import file_entries

    m = json.loads((art / "edgepack.json").read_text())
    for a in m["artifacts"]:
        a["files"] = [file_entries(art, [f["path"]])[0] if f["path"] == rel else f for f in a["files"]]
    (art / "edgepack.json").write_text(json.dumps(m))


def _gguf(art):
    return next((art / "gguf").glob("*.gguf"))


def test_run_artifact_modified_after_export(art):
    f = art / "onnx" / "model.onnx.data"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "onnx"), 2, "sha256", f)


def test_run_missing_artifact_file(art):
    (art / "onnx" / "genai_config.json").unlink()
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "onnx"), 2, "missing", "genai_config.json")


def test_run_truncated_gguf(art):
    g = _gguf(art)
    g.write_bytes(g.read_bytes()[:-5000])
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "gguf"), 2, g)  # size/sha mismatch
    _rewrite_manifest_entry(art, str(g.relative_to(art)))
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "gguf"), 2, "truncated GGUF", g)


def test_run_gguf_with_absurd_counts_and_dims(art):
    g = _gguf(art)
    data = g.read_bytes()
    g.write_bytes(data[:8] + struct.pack("<Q", 1 << 61) + data[16:])
    _rewrite_manifest_entry(art, str(g.relative_to(art)))
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "gguf"), 2, "absurd counts", g)
    i = data.index(b"token_embd.weight") + len(b"token_embd.weight")
    g.write_bytes(data[: i + 4] + struct.pack("<Q", 1 << 45) + data[i + 12:])
    _rewrite_manifest_entry(art, str(g.relative_to(art)))
    assert_one_error(edgepack("run", art, "--prompt", "hi", "--backend", "gguf"), 2, "token_embd.weight", g)


@pytest.mark.parametrize("command", ["run", "inspect", "verify"])
def test_manifest_not_json(art, command):
    (art / "edgepack.json").write_text('{"schema": 1, "artifacts": [')
    args = ["--prompt", "hi"] if command == "run" else []
    assert_one_error(edgepack(command, art, *args), 2, "not valid JSON", "edgepack.json")


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_manifest_future_schema(art, command):
    m = json.loads((art / "edgepack.json").read_text())
    m["schema"] = 99
    (art / "edgepack.json").write_text(json.dumps(m))
    args = ["--prompt", "hi"] if command == "run" else []
    assert_one_error(edgepack(command, art, *args), 2, "schema 99 is newer", "upgrade edgepack")


@pytest.mark.parametrize("backend", ["onnx", "gguf"])
def test_prompt_longer_than_the_context(tiny_artifact, backend):
    r = edgepack("run", tiny_artifact, "--prompt", "word " * 400, "--backend", backend)
    assert_one_error(r, 2, "context")


@pytest.mark.parametrize("flag,value,needle", [
    ("--temperature", "-1", "temperature"), ("--top-p", "1.5", "top_p"), ("--top-k", "-3", "top_k"),
    ("--repetition-penalty", "0", "repetition"), ("--max-tokens", "0", "max-tokens"),
])
def test_invalid_sampling_parameters(tiny_artifact, flag, value, needle):
    assert_one_error(edgepack("run", tiny_artifact, "--prompt", "hi", flag, value), 2, needle)


def test_verify_without_the_source_checkpoint(art):
    m = json.loads((art / "edgepack.json").read_text())
    m["model"]["source_path"] = "/nonexistent/model"
    (art / "edgepack.json").write_text(json.dumps(m))
    assert_one_error(edgepack("verify", art), 2, "/nonexistent/model", "--model")


def test_verify_with_other_weights(art, tmp_path):
    other = make_tiny(tmp_path / "other", seed=1)
    assert_one_error(edgepack("verify", art, "--model", other), 2, "weights differ")


def test_manifest_path_escaping_the_artifact(art):
    m = json.loads((art / "edgepack.json").read_text())
    m["artifacts"][0]["files"][0]["path"] = "../../etc/passwd"
    (art / "edgepack.json").write_text(json.dumps(m))
    assert_one_error(edgepack("run", art, "--prompt", "hi"), 2, "escapes the artifact folder")


def test_inspect_and_run_of_missing_paths(tmp_path):
    assert_one_error(edgepack("inspect", tmp_path / "nope"), 2, "not found")
    assert_one_error(edgepack("run", tmp_path / "nope", "--prompt", "hi"), 2, "not found")



def test_bench_unsupported_device(tiny_artifact):
    assert_one_error(edgepack("bench", tiny_artifact, "--device", "gpu"), 2, "gpu", "cpu")
