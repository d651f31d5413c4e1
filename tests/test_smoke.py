"""The smoke run before the rename (issue 34): every export runs each artifact it wrote in edgepack's runtime,
a short prompt of prefill and decode, even with --fidelity-tokens 0; a writer broken on purpose fails the export
with one line, exit 1, and nothing is written."""
import json

import numpy as np
import pytest

from edgepack.model.testmodels import make_tiny

FAST = ["--fidelity-tokens", "0", "--threads", "1"]


def _cli(*args):
    from click.testing import CliRunner

    from edgepack.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _failed_with_one_line(r, tmp_path, *expect):
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edgepack")]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("edgepack: error: "), r.stderr
    for e in expect:
        assert e in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "left behind"  # no artifact, no temp folder
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("src") / "m")


def test_every_export_records_its_smoke_run(tiny, tmp_path):
    out = tmp_path / "art"
    r = _cli("export", "--int4", "--model", tiny, "--out", out, "--method", "rtn", *FAST)
    assert r.exit_code == 0, r.stderr
    m = json.loads((out / "edgepack.json").read_text())
    engines = {a["format"]: a["smoke"]["engine"] for a in m["artifacts"]}
    assert engines["onnx"].startswith("onnxruntime 1.") and engines["gguf"].startswith("llama.cpp")
    for a in m["artifacts"]:
        s = a["smoke"]
        assert (s["prompt_tokens"], s["decode_tokens"]) == (4, 3) and 0 < s["seconds"] < 60, s
        assert "fidelity" not in a  # --fidelity-tokens 0: the smoke run is all that ran
    r = _cli("inspect", out)
    assert r.exit_code == 0 and "smoke run: 4 prompt + 3 decode tokens in onnxruntime 1." in r.stdout, r.stdout


def _nan_data(write_onnx):
    def broken(ckpt, out_dir, **kw):  # every initializer byte 0xFF: float32 NaN scales and weights
        entry = write_onnx(ckpt, out_dir, **kw)
        f = out_dir / "model.onnx.data"
        f.write_bytes(b"\xff" * f.stat().st_size)
        return entry
    return broken


def _wide_head(genai_config):
    def broken(cfg, *a, **kw):  # genai_config's head_size 16 wider than the graph's cache
        g = genai_config(cfg, *a, **kw)
        g["model"]["decoder"]["head_size"] += 16
        return g
    return broken


@pytest.mark.parametrize("attr,breaker,expect", [
    ("write_onnx", _nan_data, "logits that are not finite"),
    ("genai_config", _wide_head, "past_key_values.0.key"),
], ids=["corrupted-initializers", "wrong-head-size"])
def test_a_broken_onnx_writer_fails_the_export_and_leaves_nothing(tiny, tmp_path, monkeypatch, attr, breaker, expect):
    from edgepack.formats import onnx_writer

    d = make_tiny(tmp_path / "m")
    monkeypatch.setattr(onnx_writer, attr, breaker(getattr(onnx_writer, attr)))
    r = _cli("export", "--int4", "--model", d, "--out", tmp_path / "art", "--method", "rtn", *FAST)
    line = _failed_with_one_line(r, tmp_path, "the onnx artifact failed its smoke run in onnxruntime 1.", expect)
    print(f"\n  {line}")


def test_a_broken_gguf_writer_fails_the_export_and_leaves_nothing(tmp_path, monkeypatch):
    from edgepack.formats import gguf_writer

    write_gguf = gguf_writer.write_gguf

    def broken(ckpt, out_dir, **kw):  # the tensor data cut off after the header
        entry = write_gguf(ckpt, out_dir, **kw)
        f = out_dir / entry["file"]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return entry

    d = make_tiny(tmp_path / "m")
    monkeypatch.setattr(gguf_writer, "write_gguf", broken)
    r = _cli("export", "--int4", "--model", d, "--out", tmp_path / "art", "--format", "gguf", *FAST)
    line = _failed_with_one_line(r, tmp_path, "the gguf artifact failed its smoke run in llama.cpp")
    print(f"\n  {line}")


def test_the_smoke_run_catches_the_unpadded_mla_head_of_issue_34(tmp_path, monkeypatch):
    """The issue's export (qk_nope 16 + qk_rope 8, --dtype fp32 --format onnx,gguf --fidelity-tokens 0) without
    the ONNX writer's padding (onnx_mla.py): exit 0 before the smoke run, now exit 1 with onnxruntime's message."""
    from edgepack.formats import onnx_mla, onnx_writer

    d = make_tiny(tmp_path / "m", family="minicpm3", qk_nope_head_dim=16, qk_rope_head_dim=8)
    for mod in (onnx_mla, onnx_writer):
        monkeypatch.setattr(mod, "onnx_head_size", lambda c: c.head_dim)
    for mod in (onnx_mla, onnx_writer):
        monkeypatch.setattr(mod, "mla_rotary_dim", lambda c: c.rope_dim)
    monkeypatch.setattr(onnx_mla, "mla_head_order", lambda c: np.arange(c.head_dim))
    r = _cli("export", "--dtype", "fp32", "--model", d, "--out", tmp_path / "art", "--format", "onnx,gguf", *FAST)
    line = _failed_with_one_line(r, tmp_path, "the onnx artifact failed its smoke run",
                                 "head_size shall be a multiple of 16")
    print(f"\n  {line}")


def test_a_minicpm_v_export_smokes_its_text_decoder_and_vision_onnx(tmp_path, monkeypatch):
    """The text decoder (model.onnx, what genai loads) and vision.onnx on one tiny slice; NaN vision weights fail."""
    from edgepack.formats import vision_onnx
    from edgepack.model.testmodels import make_tiny_minicpmv

    d = make_tiny_minicpmv(tmp_path / "m", version="2.0")
    r = _cli("export", "--int4", "--model", d, "--out", tmp_path / "art", "--format", "onnx", "--method", "rtn", *FAST)
    assert r.exit_code == 0, r.stderr
    (a,) = json.loads((tmp_path / "art" / "edgepack.json").read_text())["artifacts"]
    assert a["smoke"]["vision"] == {"slices": 1, "patches": 4} and a["smoke"]["decode_tokens"] == 3
    write = vision_onnx.write_multimodal

    def broken(model, out_dir, *args):  # vision.onnx's weights all NaN (float16 0xFFFF)
        info = write(model, out_dir, *args)
        for f in out_dir.glob("vision.onnx*"):
            if f.stat().st_size > 1 << 16:
                f.write_bytes(b"\xff" * f.stat().st_size)
        return info

    monkeypatch.setattr(vision_onnx, "write_multimodal", broken)
    import shutil

    shutil.rmtree(tmp_path / "art")
    r = _cli("export", "--int4", "--model", d, "--out", tmp_path / "art", "--format", "onnx", "--method", "rtn", *FAST)
    print(f"\n  {r.stderr.strip()}")
    _failed_with_one_line(r, tmp_path, "the onnx artifact failed its smoke run", "vision.onnx gave", "not finite")
