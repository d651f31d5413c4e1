"""The Android demo: the hand-built APK with the real engine, JVM tests of its pure logic, and
`edgepack android push`.

The APK is built once per session (the `apk` fixture in conftest.py; build_apk.sh: ~25 s once the
tools and the engine are here). On
a fresh machine it first installs Debian packages with apt and fetches the engine's two npm
tarballs (250 MB, cached in ~/.cache/edgepack/android); without apt or npm it fails rather than skips.
The static checks read the APK the way a phone would: the dex (dexdump) and the native libraries
(readelf) it actually carries.
"""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.android import DEVICE_DIR, adb_commands, android
from edgepack.errors import EdgepackError

DEMO = Path(__file__).resolve().parent.parent / "android_demo"
ABIS = ("arm64-v8a", "x86_64")
ENGINE_LIBS = {"libonnxruntime-genai-jni.so", "libonnxruntime-genai.so", "libmat.so", "libonnxruntime.so",
               "libonnxruntime4j_jni.so"}  # the last: onnxruntime's own Java API (test_android_ort.py)
LICENSES = {"assets/licenses/onnxruntime-genai/LICENSE", "assets/licenses/onnxruntime-genai/ThirdPartyNotices.txt",
            "assets/licenses/onnxruntime-genai/LICENSE-1DS-ORTGENAI",
            "assets/licenses/onnxruntime/LICENSE", "assets/licenses/onnxruntime/ThirdPartyNotices.txt"}


def _run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=DEMO.parent)


def test_build_script_makes_a_signed_launchable_apk(apk):
    verify = _run(["apksigner", "verify", "--verbose", str(apk)], timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in verify.stdout

    badging = _run(["aapt", "dump", "badging", str(apk)], timeout=120)
    assert badging.returncode == 0, badging.stderr
    assert "package: name='org.edgepack.demo'" in badging.stdout
    assert "launchable-activity: name='org.edgepack.demo.MainActivity'" in badging.stdout
    min_sdk = int(re.search(r"^sdkVersion:'(\d+)'", badging.stdout, re.M).group(1))
    assert min_sdk >= 24  # what both engine AARs declare
    assert "native-code: 'arm64-v8a' 'x86_64'" in badging.stdout


def _apk_entries(apk):
    with zipfile.ZipFile(apk) as z:
        return {i.filename: i for i in z.infolist()}


def test_each_abi_carries_the_five_engine_libraries_compressed(apk):
    entries = _apk_entries(apk)
    libs = {n for n in entries if n.startswith("lib/")}
    assert libs == {f"lib/{abi}/{lib}" for abi in ABIS for lib in ENGINE_LIBS}
    # Stored compressed and unpacked at install: the manifest must say so, or the phone will not.
    assert all(entries[n].compress_type == zipfile.ZIP_DEFLATED for n in libs)
    tree = _run(["aapt", "dump", "xmltree", str(apk), "AndroidManifest.xml"], timeout=60).stdout
    assert re.search(r"android:extractNativeLibs\(0x010104ea\)=\(type 0x12\)0xffffffff", tree), tree


def test_engine_versions_are_the_ones_tested_on_the_desktop(apk_files):
    """onnxruntime-genai 0.15.2 and onnxruntime 1.29.0: the pair tests/test_genai_phone_engine.py runs."""
    for abi in ABIS:
        genai = apk_files[f"lib/{abi}/libonnxruntime-genai.so"].read_bytes()
        ort = apk_files[f"lib/{abi}/libonnxruntime.so"].read_bytes()
        assert b"\x000.15.2\x00" in genai
        assert b"1.29.0" in ort and b"OrtGetApiBase" in ort
        assert b"libonnxruntime.so" in genai  # genai dlopens it by this name, from the app's lib dir


def _dex_natives(dex):
    """(class, method, signature) of every native method in the dex, from dexdump's listing."""
    out = _run(["dexdump", str(dex)], timeout=120)
    assert out.returncode == 0, out.stderr
    natives, cls, name, sig = [], None, None, None
    for line in out.stdout.splitlines():
        if m := re.match(r"\s*Class descriptor\s*:\s*'L(.+);'", line):
            cls = m.group(1)
        elif m := re.match(r"\s*name\s*:\s*'(.+)'", line):
            name = m.group(1)
        elif m := re.match(r"\s*type\s*:\s*'(.+)'", line):
            sig = m.group(1)
        elif re.match(r"\s*access\s*:.*\bNATIVE\b", line):
            natives.append((cls, name, sig))
    return natives


def _jni_escape(text):
    """The JNI spec's name mangling: '/' -> '_', '_' -> '_1', ';' -> '_2', '[' -> '_3', else _0xxxx."""
    out = []
    for ch in text:
        if ch == "/":
            out.append("_")
        elif ch in "_;[":
            out.append({"_": "_1", ";": "_2", "[": "_3"}[ch])
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"_0{ord(ch):04x}")
    return "".join(out)


def test_jni_mangling_follows_the_spec():
    assert _jni_escape("ai/onnxruntime/genai/Model") == "ai_onnxruntime_genai_Model"
    assert _jni_escape("my_method") == "my_1method"
    assert _jni_escape("Ljava/lang/String;[I") == "Ljava_lang_String_2_3I"
    assert _jni_escape("Outer$Inner") == "Outer_00024Inner"


def _dynamic_symbols(lib):
    out = _run(["readelf", "--dyn-syms", "-W", str(lib)], timeout=60)
    assert out.returncode == 0, out.stderr
    # Defined (not UND) symbols only: a library that merely imports a name does not provide it.
    return {f[7].split("@")[0] for f in (line.split() for line in out.stdout.splitlines())
            if len(f) >= 8 and f[6] != "UND"}


def test_every_native_method_in_the_dex_has_its_jni_symbol(apk_files):
    natives = _dex_natives(apk_files["classes.dex"])
    genai = [n for n in natives if n[0].startswith("ai/onnxruntime/genai/")]
    assert len(genai) >= 70, natives
    used = {"Config.createConfig", "Config.overlay", "Model.createModelFromConfig", "Tokenizer.createTokenizer",
            "Tokenizer.tokenizerApplyChatTemplate", "Tokenizer.tokenizerEncode", "Generator.createGenerator",
            "Generator.generateNextTokenNative", "Generator.getSequenceLastToken",
            "TokenizerStream.tokenizerStreamDecode", "GenAI.setTelemetryNative", "Generator.appendTokens",
            "Tokenizer.tokenizerGetBosTokenId"}
    assert used <= {f"{c.rsplit('/', 1)[1]}.{m}" for c, m, _ in genai}  # what GenAiRunner calls
    assert not [n for n in natives if n[0].startswith("org/edgepack/")]
    for abi in ABIS:
        provided = set()
        for lib in ENGINE_LIBS:
            provided |= _dynamic_symbols(apk_files[f"lib/{abi}/{lib}"])
        jni_lib = _dynamic_symbols(apk_files[f"lib/{abi}/libonnxruntime-genai-jni.so"])
        ort4j = _dynamic_symbols(apk_files[f"lib/{abi}/libonnxruntime4j_jni.so"])
        missing = []
        for cls, name, sig in natives:
            short = f"Java_{_jni_escape(cls)}_{_jni_escape(name)}"
            long = f"{short}__{_jni_escape(sig[1:sig.index(')')])}"
            where = (jni_lib if cls.startswith("ai/onnxruntime/genai/") else provided if "/telemetry/" in cls
                     else ort4j if cls.startswith("ai/onnxruntime/") else provided)
            if short not in where and long not in where:
                missing.append((cls, name, sig))
        assert not missing, (abi, missing)


def test_dex_holds_the_app_and_the_real_genai_classes(apk_files):
    out = _run(["dexdump", "-h", str(apk_files["classes.dex"])], timeout=120).stdout
    classes = set(re.findall(r"Class descriptor\s*:\s*'L(.+);'", out))
    assert {"org/edgepack/demo/MainActivity", "org/edgepack/demo/GenAiRunner",
            "org/edgepack/demo/core/EngineSetup"} <= classes
    assert {"ai/onnxruntime/genai/Model", "ai/onnxruntime/genai/Config", "ai/onnxruntime/genai/Generator",
            "ai/onnxruntime/genai/Tokenizer", "ai/onnxruntime/genai/TokenizerStream",
            "ai/onnxruntime/genai/GenAI"} <= classes
    # libmat.so calls back into its Java HTTP client by name: those classes must be there too.
    assert "com/microsoft/applications/events/HttpClient" in classes
    assert not (DEMO / "stubs").exists()


def test_licenses_of_both_engine_packages_are_inside(apk):
    entries = _apk_entries(apk)
    assert LICENSES <= set(entries)
    with zipfile.ZipFile(apk) as z:
        assert b"Copyright (c) Microsoft Corporation" in z.read("assets/licenses/onnxruntime-genai/LICENSE")
        assert b"MIT License" in z.read("assets/licenses/onnxruntime/LICENSE")
        assert b"Apache License" in z.read("assets/licenses/onnxruntime-genai/LICENSE-1DS-ORTGENAI")


def _load_alignments(lib):
    out = _run(["readelf", "-l", "-W", str(lib)], timeout=60).stdout
    return {int(line.split()[-1], 16) for line in out.splitlines() if line.split()[:1] == ["LOAD"]}


def test_which_arm64_libraries_have_4k_load_segments(apk_files):
    """A phone with 16 KB pages cannot map a 4 KB-aligned segment (Android 15+ devices may run such
    an app in a page-size compatibility mode, or not at all); README.md says what that means."""
    four_k = {lib for lib in ENGINE_LIBS if min(_load_alignments(apk_files[f"lib/arm64-v8a/{lib}"])) < 0x4000}
    assert four_k == {"libmat.so"}  # upstream's build; the others are 16 KB-aligned


def test_gradle_uses_the_same_aars_the_fetch_script_unpacked(apk):
    gradle = (DEMO / "app" / "build.gradle").read_text()
    aars = re.findall(r"'libs/([\w.-]+\.aar)'", gradle)
    assert sorted(aars) == ["onnxruntime-genai.aar", "onnxruntime.aar"]
    assert "implementation files(engineAars)" in gradle and "com.microsoft.onnxruntime:" not in gradle
    assert re.search(r"^\s*minSdk 24\b", gradle, re.M) and "useLegacyPackaging true" in gradle
    # The APK's libraries are the AARs' own bytes.
    with zipfile.ZipFile(apk) as z_apk:
        for aar, lib in (("onnxruntime-genai.aar", "libmat.so"), ("onnxruntime.aar", "libonnxruntime.so"),
                         ("onnxruntime.aar", "libonnxruntime4j_jni.so")):
            with zipfile.ZipFile(DEMO / "app" / "libs" / aar) as z_aar:
                for abi in ABIS:
                    assert (hashlib.sha256(z_aar.read(f"jni/{abi}/{lib}")).digest()
                            == hashlib.sha256(z_apk.read(f"lib/{abi}/{lib}")).digest())


def test_no_engine_binary_is_tracked_by_git(apk):
    tracked = _run(["git", "ls-files", "android_demo"], timeout=60).stdout.splitlines()
    assert tracked and not [t for t in tracked if re.search(r"\.(so|aar|jar|apk|dex|tgz)$", t)]
    ignored = _run(["git", "check-ignore", "android_demo/app/libs/onnxruntime.aar",
                    "android_demo/app/src/main/assets/licenses/onnxruntime/LICENSE", str(apk)], timeout=60)
    assert len(ignored.stdout.splitlines()) == 3, ignored.stdout + ignored.stderr


def test_fetch_refuses_a_cached_tarball_with_the_wrong_sha256(tmp_path):
    """The pins are enforced on every run, before anything in app/ is replaced."""
    (tmp_path / "android").mkdir()
    (tmp_path / "android" / "com.github.asus4.onnxruntime-genai-0.4.9.tgz").write_bytes(b"not the engine")
    libs_before = sorted((DEMO / "app" / "libs").iterdir()) if (DEMO / "app" / "libs").exists() else []
    result = subprocess.run(["bash", str(DEMO / "fetch_engine.sh")], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, EDGEPACK_CACHE=str(tmp_path)))
    assert result.returncode != 0
    assert "com.github.asus4.onnxruntime-genai-0.4.9.tgz has sha256 " in result.stderr
    assert "expected 80d03d6afe24dbf6bcde5bfcf424b26c9a2a4161a495e2dc71ac2e08288e7af4" in result.stderr
    after = sorted((DEMO / "app" / "libs").iterdir()) if (DEMO / "app" / "libs").exists() else []
    assert after == libs_before


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


def test_dry_run_with_the_built_apk_and_start(apk, tmp_path, fake_adb):
    """What the README tells a phone owner to run, with the APK build_apk.sh made."""
    art = _artifact(tmp_path)
    result = CliRunner().invoke(android, ["push", str(art), "--install", str(apk), "--start", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"adb install -r {apk}",
        "adb shell mkdir -p /sdcard/Android/data/org.edgepack.demo/files",
        f"adb push {art} /sdcard/Android/data/org.edgepack.demo/files/",
        "adb shell am start -S -n org.edgepack.demo/.MainActivity",
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


# `edgepack android bench`: push, the bench intent, wait for the app's JSON, pull it, check it.
RUN = "demo-int4-20261204T190000"
RESULT = f"{DEVICE_DIR}/bench/{RUN}.json"


def _bench_json(**changes):
    """A result as the app writes it (BenchReport.success): every key of BENCH_KEYS."""
    from edgepack.android import BENCH_PROMPT

    data = {"schema": 1, "run": RUN, "prompt": BENCH_PROMPT, "prompt_tokens": 31, "max_new_tokens": 128,
            "tokens": 128, "ttft_s": 0.42, "decode_tok_s": 24.5, "decode_s": 5.18, "speech_ratio": 7.1,
            "speech_units_per_s": 17.8, "speech_unit": "words", "peak_rss_bytes": 412 * 2**20, "rss_bytes": 380 * 2**20,
            "load_s": 1.9, "threads": 4, "artifact": "demo-int4", "model": "SmolLM2-135M-Instruct (MiniCPM form)",
            "device": {"manufacturer": "Google", "model": "Pixel 8", "abi": "arm64-v8a", "sdk": 34, "cores": 9},
            "engine": {"onnxruntime_genai": "0.15.2", "onnxruntime": "1.29.0"}, "text": "Once upon a time", "error": None,
            "image": None, "slices": None, "encode_ms": None, "encode_ms_per_slice": None, "ttft_after_encode_s": None}
    data.update(changes)
    return data


@pytest.fixture
def bench_adb(tmp_path, monkeypatch, fake_adb):
    """fake_adb, plus: `pull SRC DST` writes $FAKE_ADB_RESULT to DST; the wait hangs if FAKE_ADB_HANG is set."""
    adb = tmp_path / "bin" / "adb"
    adb.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, sys, time\n"
        "with open(os.environ['FAKE_ADB_LOG'], 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if 'pull' in sys.argv and os.environ.get('FAKE_ADB_RESULT'):\n"
        "    shutil.copy(os.environ['FAKE_ADB_RESULT'], sys.argv[-1])\n"
        "if os.environ.get('FAKE_ADB_HANG') and any(a.startswith('until ') for a in sys.argv):\n"
        "    time.sleep(30)\n")
    monkeypatch.setattr("edgepack.android.time.strftime", lambda fmt: "20261204T190000")

    def result(data):
        path = tmp_path / "phone-result.json"
        path.write_text(json.dumps(data) if not isinstance(data, str) else data)
        monkeypatch.setenv("FAKE_ADB_RESULT", str(path))
    return fake_adb, result


def test_bench_dry_run_prints_the_exact_adb_commands(tmp_path, bench_adb):
    calls, _ = bench_adb
    art = _artifact(tmp_path)
    apk_file = tmp_path / "app.apk"
    apk_file.write_bytes(b"PK")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(android, ["bench", str(art), "--install", str(apk_file), "-s", "R58M", "--tokens", "64",
                                          "--out", str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"adb -s R58M install -r {apk_file}",
        f"adb -s R58M shell mkdir -p {DEVICE_DIR}",
        f"adb -s R58M push {art} {DEVICE_DIR}/",
        f"adb -s R58M shell rm -f {RESULT}",
        f"adb -s R58M shell am start -S -W -n org.edgepack.demo/.MainActivity --es org.edgepack.demo.BENCH {RUN} "
        "--ei org.edgepack.demo.BENCH_TOKENS 64 --es org.edgepack.demo.BENCH_ARTIFACT demo-int4",
        f"adb -s R58M shell 'until [ -f {RESULT} ]; do sleep 1; done'",
        f"adb -s R58M pull {RESULT} {out}",
    ]
    assert calls() == [] and not out.exists()


def test_bench_runs_the_commands_and_prints_a_readme_row(tmp_path, bench_adb, monkeypatch):
    calls, result = bench_adb
    result(_bench_json())
    monkeypatch.chdir(tmp_path)
    art = _artifact(tmp_path)
    r = CliRunner().invoke(android, ["bench", str(art)])
    assert r.exit_code == 0, r.output
    assert [c[:2] for c in calls()] == [["shell", "mkdir"], ["push", str(art)], ["shell", "rm"], ["shell", "am"],
                                        ["shell", f"until [ -f {RESULT} ]; do sleep 1; done"], ["pull", RESULT]]
    assert json.loads((tmp_path / f"{RUN}.json").read_text())["decode_tok_s"] == 24.5
    assert r.stdout.splitlines()[-1] == ("| Google Pixel 8 (arm64-v8a, 4 threads) | SmolLM2-135M-Instruct (MiniCPM form) "
                                         "| 0.42 s | 24.5 tok/s | 7.1x | 412 MiB | 128 tokens |")


@pytest.mark.parametrize("data, message", [
    (_bench_json(error="No artifact found in /sdcard/Android/data/org.edgepack.demo/files/demo-int4."),
     "the app could not run the benchmark: No artifact found"),
    ({k: v for k, v in _bench_json().items() if k != "peak_rss_bytes"}, "missing peak_rss_bytes"),
    (_bench_json(schema=2), "schema 2"),
    (_bench_json(decode_tok_s=None), "decode_tok_s is None"),
    ("{", "cannot read the pulled result"),
])
def test_bench_refuses_a_result_it_cannot_trust(tmp_path, bench_adb, monkeypatch, data, message):
    _, result = bench_adb
    result(data)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(android, ["bench", str(_artifact(tmp_path))])
    assert isinstance(r.exception, EdgepackError) and r.exception.exit_code == 2, r.output
    assert message in str(r.exception)


def test_bench_gives_up_waiting_with_the_logcat_hint(tmp_path, bench_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_HANG", "1")
    r = CliRunner().invoke(android, ["bench", str(_artifact(tmp_path)), "--timeout", "1"])
    assert isinstance(r.exception, EdgepackError)
    assert "no result after 1 s" in str(r.exception) and "adb logcat -s edgepack" in str(r.exception)


def test_bench_refuses_a_folder_name_adb_shell_would_split(tmp_path, bench_adb):
    calls, _ = bench_adb
    r = CliRunner().invoke(android, ["bench", str(_artifact(tmp_path, name="my model")), "--dry-run"])
    assert isinstance(r.exception, EdgepackError) and "folder name" in str(r.exception)
    assert calls() == []


def test_bench_names_and_keys_are_the_apps():
    """The intent extras, the prompt and the report's keys, as the app's Java sources spell them."""
    from edgepack.android import (BENCH_ARTIFACT_EXTRA, BENCH_EXTRA, BENCH_IMAGE_EXTRA, BENCH_IMAGE_PROMPT, BENCH_KEYS,
                                  BENCH_PROMPT, BENCH_TOKENS_EXTRA)

    core = DEMO / "app" / "src" / "main" / "java" / "org" / "edgepack" / "demo" / "core"
    request, report = (core / "BenchRequest.java").read_text(), (core / "BenchReport.java").read_text()
    consts = dict(re.findall(r'public static final String (\w+) = "([^"]*)";', request))
    assert (consts["EXTRA_RUN"], consts["EXTRA_TOKENS"], consts["EXTRA_ARTIFACT"], consts["PROMPT"]) == (
        BENCH_EXTRA, BENCH_TOKENS_EXTRA, BENCH_ARTIFACT_EXTRA, BENCH_PROMPT)
    assert (consts["EXTRA_IMAGE"], consts["IMAGE_PROMPT"]) == (BENCH_IMAGE_EXTRA, BENCH_IMAGE_PROMPT)
    keys = re.search(r"KEYS = \{(.*?)\};", report, re.S).group(1)
    assert tuple(re.findall(r'"(\w+)"', keys)) == BENCH_KEYS

