"""The CLI skeleton: commands listed, inspect is real, errors are one line."""
import json
import subprocess
import sys


def edgepack(*args):
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True)


def test_help_lists_the_six_commands():
    r = edgepack("--help")
    assert r.returncode == 0
    for cmd in ("export", "run", "chat", "bench", "verify", "inspect"):
        assert f"\n  {cmd} " in r.stdout, cmd


def test_inspect_demo_json_reports_about_134_5m_parameters(demo_dir):
    r = edgepack("inspect", "demo", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert round(info["parameters"] / 1e6, 1) == 134.5
    assert info["embedding_parameters"] + info["non_embedding_parameters"] == info["parameters"]
    assert info["bytes_by_dtype"] == {"float32": 4 * info["parameters"]}
    assert 0.12 < info["int4_bytes_estimate"] / info["bytes_by_dtype"]["float32"] < 0.16


def test_inspect_checkpoint_text(tiny_gqa_dir):
    r = edgepack("inspect", str(tiny_gqa_dir))
    assert r.returncode == 0, r.stderr
    assert "GQA (2 KV heads)" in r.stdout and "parameters" in r.stdout


def test_missing_config_field_is_one_error_line(tmp_path, tiny_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["vocab_size"]
    (d / "config.json").write_text(json.dumps(cfg))
    r = edgepack("inspect", str(d))
    assert r.returncode == 2
    assert r.stderr == f"edgepack: error: {d / 'config.json'}: field 'vocab_size' is missing\n"
    assert "Traceback" not in r.stderr


def test_debug_adds_the_traceback(tmp_path):
    r = edgepack("--debug", "inspect", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" in r.stderr and "edgepack: error:" in r.stderr


def test_usage_errors_use_the_same_line_format():
    r = edgepack("inspect")
    assert r.returncode == 2 and r.stderr.startswith("edgepack: error: Missing argument")
