"""The Android demo: hand-built APK, JVM tests of its pure logic, and `edgepack android push`.

The build and JVM tests install Debian packages with apt on first use (minutes); without apt
they fail rather than skip.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.android import DEVICE_DIR, adb_commands, android
from edgepack.errors import EdgepackError

DEMO = Path(__file__).resolve().parent.parent / "android_demo"
APK = DEMO / "build" / "edgepack-demo-debug.apk"


def _run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=DEMO.parent)


@pytest.fixture(scope="module")
def apk():
    result = _run(["bash", str(DEMO / "build_apk.sh")], timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert APK.is_file()
    return APK


def test_build_script_makes_a_signed_launchable_apk(apk):
    verify = _run(["apksigner", "verify", "--verbose", str(apk)], timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in verify.stdout

    badging = _run(["aapt", "dump", "badging", str(apk)], timeout=120)
    assert badging.returncode == 0, badging.stderr
    assert "package: name='org.edgepack.demo'" in badging.stdout
    assert "launchable-activity: name='org.edgepack.demo.MainActivity'" in badging.stdout
    assert "sdkVersion:'23'" in badging.stdout


def test_apk_carries_no_onnxruntime_genai_stubs(apk):
    classes = DEMO / "build" / "apk" / "classes"
    names = {p.relative_to(classes).parts[0] for p in classes.iterdir()}
    assert names == {"org"}
    listing = _run(["unzip", "-l", str(apk)], timeout=60).stdout
    assert "classes.dex" in listing and "ai/onnxruntime" not in listing


def test_jvm_unit_tests_pass():
    result = _run(["bash", str(DEMO / "run_jvm_tests.sh")], timeout=1800)
    lines = re.findall(r"^(\d+) passed, (\d+) failed$", result.stdout, re.M)
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    passed, failed = map(int, lines[-1])
    assert failed == 0, result.stdout[-5000:]
    assert passed >= 20
    assert result.returncode == 0


def _artifact(tmp_path, name="demo-int4", formats=("onnx", "gguf")):
    root = tmp_path / name
    (root / "onnx").mkdir(parents=True)
    entries = [{"format": f, "path": "onnx" if f == "onnx" else "gguf/model-Q4_0.gguf", "files": []}
               for f in formats]
    (root / "edgepack.json").write_text(json.dumps({"schema": 1, "artifacts": entries}))
    return root


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """An `adb` first on PATH that appends its arguments (one JSON list per call) to a log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "adb.log"
    adb = bin_dir / "adb"
    adb.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['FAKE_ADB_LOG'], 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(3 if os.environ.get('FAKE_ADB_FAIL') in sys.argv[1:] else 0)\n")
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


def test_dry_run_prints_the_exact_adb_commands(tmp_path, fake_adb):
    art = _artifact(tmp_path)
    apk_file = tmp_path / "my app.apk"
    apk_file.write_bytes(b"PK")
    result = CliRunner().invoke(android, ["push", str(art), "--install", str(apk_file),
                                          "--serial", "emulator-5554", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"adb -s emulator-5554 install -r '{apk_file}'",
        "adb -s emulator-5554 shell mkdir -p /sdcard/Android/data/org.edgepack.demo/files",
        f"adb -s emulator-5554 push {art} /sdcard/Android/data/org.edgepack.demo/files/",
    ]
    assert fake_adb() == []


def test_push_runs_adb_with_the_printed_arguments(tmp_path, fake_adb):
    art = _artifact(tmp_path)
    result = CliRunner().invoke(android, ["push", str(art) + "/"])
    assert result.exit_code == 0, result.output
    expected = [["shell", "mkdir", "-p", DEVICE_DIR], ["push", str(art), DEVICE_DIR + "/"]]
    assert fake_adb() == expected
    assert result.stdout.splitlines() == [shlex.join(["adb"] + args) for args in expected]
    assert adb_commands(art) == [["adb"] + args for args in expected]


def test_push_stops_at_a_failing_adb_command(tmp_path, fake_adb, monkeypatch):
    art = _artifact(tmp_path)
    apk_file = tmp_path / "app.apk"
    apk_file.write_bytes(b"PK")
    monkeypatch.setenv("FAKE_ADB_FAIL", "install")
    result = CliRunner().invoke(android, ["push", str(art), "--install", str(apk_file)])
    assert isinstance(result.exception, EdgepackError)
    assert "failed with exit code 3" in str(result.exception)
    assert fake_adb() == [["install", "-r", str(apk_file)]]


@pytest.mark.parametrize("break_it, message", [
    ("no-manifest", "has no edgepack.json"),
    ("not-json", "not a valid manifest"),
    ("gguf-only", "has no onnx artifact"),
    ("missing", "no such artifact folder"),
])
def test_push_refuses_what_is_not_an_onnx_artifact(tmp_path, fake_adb, break_it, message):
    art = _artifact(tmp_path, formats=("gguf",) if break_it == "gguf-only" else ("onnx",))
    if break_it == "no-manifest":
        (art / "edgepack.json").unlink()
    elif break_it == "not-json":
        (art / "edgepack.json").write_text("{")
    elif break_it == "missing":
        art = tmp_path / "nowhere"
    result = CliRunner().invoke(android, ["push", str(art), "--dry-run"])
    assert isinstance(result.exception, EdgepackError), result.output
    assert result.exception.exit_code == 2
    assert message in str(result.exception)
    assert fake_adb() == []


def test_push_says_when_adb_is_missing(tmp_path, monkeypatch):
    art = _artifact(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = CliRunner().invoke(android, ["push", str(art)])
    assert isinstance(result.exception, EdgepackError)
    assert "adb not found on PATH" in str(result.exception)


def test_edgepack_cli_has_the_android_group(tmp_path):
    """Through the main `edgepack` command: commands on stdout, errors as one line with exit 2."""
    art = _artifact(tmp_path)
    cli = [sys.executable, "-c", "from edgepack.cli import main; main()", "android", "push"]
    ok = _run(cli + [str(art), "--dry-run"], timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == f"adb push {art} {DEVICE_DIR}/"

    bad = _run(cli + [str(tmp_path / "nowhere"), "--dry-run"], timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == f"edgepack: error: {tmp_path / 'nowhere'}: no such artifact folder\n"
