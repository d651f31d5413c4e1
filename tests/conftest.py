"""Shared fixtures: tiny random MiniCPMs (built in ~1 s), the demo checkpoint (cached after first use), and
the Android demo's APK (built once per session, for test_android.py and test_android_ort.py)."""
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from edgepack.model.testmodels import make_tiny


def pytest_report_header(config):
    """Which CPU ran the suite: torch, onnxruntime and llama.cpp pick kernels (and so roundings) by it."""
    from edgepack.bench.machine import cpu_info

    c = cpu_info()
    return f"cpu: {c['cpu']} ({c['vendor']}, {os.cpu_count()} logical cores); flags: {' '.join(c['flags']) or 'none of note'}"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """MiniCPM-2B-like shape in miniature: MHA, tied head, sentencepiece tokenizer."""
    return make_tiny(tmp_path_factory.mktemp("tiny-mha"))


@pytest.fixture(scope="session")
def tiny_gqa_dir(tmp_path_factory):
    """MiniCPM-1B-like: GQA (4 heads, 2 KV heads)."""
    return make_tiny(tmp_path_factory.mktemp("tiny-gqa"), gqa=True)


@pytest.fixture(scope="session")
def tiny_untied_dir(tmp_path_factory):
    """MiniCPM-2B-128k-like: untied lm_head."""
    return make_tiny(tmp_path_factory.mktemp("tiny-untied"), tied=False, gqa=True)


@pytest.fixture(scope="session")
def demo_dir():
    from edgepack.model.demo import demo_checkpoint_dir

    return demo_checkpoint_dir()


@pytest.fixture(scope="session")
def demo_art(tmp_path_factory):
    """The demo model as an int4 artifact (ONNX + GGUF, default method, no fidelity report), exported once
    for test_runtime.py and test_speculate.py."""
    from edgepack.export import export

    return export("demo", out=tmp_path_factory.mktemp("art") / "demo", formats=("onnx", "gguf"),
                  fidelity_tokens=0, threads=2)


ANDROID_DEMO = Path(__file__).resolve().parent.parent / "android_demo"


@pytest.fixture(scope="session")
def apk():
    """android_demo/build/edgepack-demo-debug.apk, built by build_apk.sh."""
    result = subprocess.run(["bash", str(ANDROID_DEMO / "build_apk.sh")], capture_output=True, text=True,
                            timeout=1800, cwd=ANDROID_DEMO.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    path = ANDROID_DEMO / "build" / "edgepack-demo-debug.apk"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def apk_files(apk, tmp_path_factory):
    """classes.dex and lib/<abi>/*.so as the APK holds them, extracted once."""
    dest = tmp_path_factory.mktemp("apk")
    out = {}
    with zipfile.ZipFile(apk) as z:
        for name in z.namelist():
            if name == "classes.dex" or name.startswith("lib/"):
                out[name] = dest / name
                out[name].parent.mkdir(parents=True, exist_ok=True)
                out[name].write_bytes(z.read(name))
    return out
