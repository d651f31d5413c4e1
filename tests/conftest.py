"""Shared fixtures: tiny random MiniCPMs (built in ~1 s) and the demo checkpoint (cached after first use)."""
import os

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
