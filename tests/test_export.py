"""Export orchestration: manifest lists every file, verify recomputes fidelity, --force replaces."""
import json
import subprocess
import sys

import pytest

from edgepack.quant import methods
from edgepack.model.files import file_sha256
from edgepack.export import export
from edgepack.model.testmodels import make_tiny


def edgepack(*args):
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return export(model=make_tiny(root / "model", gqa=True), out=root / "art", fidelity_tokens=64)


def test_manifest_lists_every_file_with_bytes_and_sha256(artifact):
    m = json.loads((artifact / "edgepack.json").read_text())
    listed = {f["path"]: f for a in m["artifacts"] for f in a["files"]} | {f["path"]: f for f in m["tokenizer"]["files"]}
    on_disk = {str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file()} - {"edgepack.json"}
    assert set(listed) == on_disk
    for path, f in listed.items():
        assert f["bytes"] == (artifact / path).stat().st_size and f["sha256"] == file_sha256(artifact / path)
    assert [a["format"] for a in m["artifacts"]] == ["onnx", "gguf"]
    for a in m["artifacts"]:
        fid = a["fidelity"]
        assert fid["tokens"] == 64 and fid["float_ppl"] > 1 and 0 <= fid["top1_agreement"] <= 1 and fid["mean_kl"] >= 0
        assert {"scheme", "bits", "block_size", "method", "bits_per_weight"} <= set(a["quantization"])
    onnx, gguf = (a["quantization"]["calibration"] for a in m["artifacts"])
    assert onnx == gguf and onnx["tokens"] > 0  # one calibration, shared by both formats
    assert methods._SHARED is None  # and let go of when the export ended


def test_verify_recomputes_the_recorded_fidelity_and_enforces_the_threshold(artifact):
    r = edgepack("verify", artifact, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for a in report["artifacts"]:
        got, rec = a["fidelity"], a["recorded"]
        assert got["ppl"] == pytest.approx(rec["ppl"], rel=1e-3) and got["top1_agreement"] == pytest.approx(rec["top1_agreement"], abs=0.02)
    worst = max(a["fidelity"]["ppl_increase_pct"] for a in report["artifacts"])
    assert edgepack("verify", artifact, "--max-ppl-increase", worst + 1).returncode == 0
    r = edgepack("verify", artifact, "--max-ppl-increase", worst - 1)
    assert r.returncode == 3 and r.stderr.splitlines()[-1].startswith("edgepack: error:")
    assert "exceeds --max-ppl-increase" in r.stderr


def test_force_replaces_an_existing_output(tmp_path):
    d = make_tiny(tmp_path / "m")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    r = edgepack("export", "--int4", "--model", d, "--out", out, "--format", "gguf", "--fidelity-tokens", "0", "--force")
    assert r.returncode == 0, r.stderr
    assert not (out / "old.txt").exists() and (out / "edgepack.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "out"]  # no temp or old folders left


@pytest.mark.parametrize("kw, msg", [({"method": "awq_gtpq"}, "unknown int4 method"),
                                     ({"method": "awq", "dtype": "fp32"}, "applies to int4"),
                                     ({"calibration_tokens": 1000}, "positive multiple of 512"),
                                     ({"calibration_tokens": 1024, "method": "rtn"}, "not to --method rtn"),
                                     ({"calibration_tokens": 1024, "dtype": "fp32"}, "not to --dtype fp32"),
                                     ({"method": "awq_gptq_sym_ao", "gguf_type": "q4_k_m"}, "act-order applies to ONNX"),
                                     ({"method": "awq_gptq_sym_ft", "gguf_type": "q5_k_m"}, "applies to ONNX int4 and GGUF q4_0")])
def test_bad_method_fails_before_writing_anything(tmp_path, kw, msg):
    from edgepack.errors import BadInput

    with pytest.raises(BadInput, match=msg):
        export(model=make_tiny(tmp_path / "model"), out=tmp_path / "art", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no artifact, no temp folder


def test_calibration_tokens_reach_both_formats_calibration(tmp_path):
    art = export(model=make_tiny(tmp_path / "model"), out=tmp_path / "art", fidelity_tokens=0, calibration_tokens=1024)
    for a in json.loads((art / "edgepack.json").read_text())["artifacts"]:
        assert a["quantization"]["calibration"]["tokens"] == 1024, a["format"]
        assert a["quantization"]["calibration"]["sequences"] == 2, a["format"]


def test_each_format_calibrates_with_its_default_method(tmp_path):
    """ONNX and GGUF q4_0 default to act-order (gptq.AO_DAMP) on the model's default token count; the K types,
    whose GPTQ runs in file order, to DEFAULT_KQUANT_METHOD at gptq.DAMP."""
    from edgepack.export import quantize_for
    from edgepack.model.checkpoint import load
    from edgepack.quant import calibrate, gptq

    ckpt = load(make_tiny(tmp_path / "model", gqa=True))
    want = {("onnx", None): methods.DEFAULT_METHOD, ("gguf", "q4_0"): methods.DEFAULT_GGUF_METHOD,
            ("gguf", "q4_k_m"): methods.DEFAULT_KQUANT_METHOD}
    for (fmt, gguf_type), name in want.items():
        q = quantize_for(fmt, ckpt, "int4", gguf_type, n_tokens=512)
        assert q.method.name == name, (fmt, gguf_type)
        assert q.method.gptq_damp == (gptq.DAMP if gguf_type == "q4_k_m" else gptq.AO_DAMP), (fmt, gguf_type)
    assert methods.method(methods.DEFAULT_METHOD).act_order and not methods.method(methods.DEFAULT_KQUANT_METHOD).act_order
    assert quantize_for("onnx", ckpt, "int4").info["calibration"]["tokens"] == calibrate.default_tokens(ckpt)


def test_a_short_context_model_exports_with_the_default_fidelity_evaluation(tmp_path):
    """max_position_embeddings 256 < the 2048 evaluation tokens: evaluated in windows of 256, as
    llama.cpp's perplexity tool chunks a text, and the window is recorded (it once failed with
    'context full: 0 + 2048 tokens exceed n_ctx 256')."""
    d = make_tiny(tmp_path / "model", gqa=True)
    assert json.loads((d / "config.json").read_text())["max_position_embeddings"] == 256
    art = export(model=d, out=tmp_path / "art", method="rtn")
    for a in json.loads((art / "edgepack.json").read_text())["artifacts"]:
        assert (a["fidelity"]["tokens"], a["fidelity"]["window"]) == (2048, 256), a["format"]
        assert a["fidelity"]["float_ppl"] > 1
    r = edgepack("verify", art, "--json")  # verify evaluates the same windows
    assert r.returncode == 0, r.stderr
    for a in json.loads(r.stdout)["artifacts"]:
        assert a["fidelity"] == a["recorded"] | {k: pytest.approx(v, rel=1e-3) for k, v in a["recorded"].items()
                                                   if isinstance(v, float)}


def test_more_fidelity_tokens_than_the_text_holds_is_one_clear_error(tmp_path):
    d = make_tiny(tmp_path / "model")
    r = edgepack("export", "--int4", "--model", d, "--out", tmp_path / "art", "--method", "rtn",
                 "--fidelity-tokens", 10 ** 6)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("edgepack: error: --fidelity-tokens 1000000 is more than the evaluation text holds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # checked before anything is written
