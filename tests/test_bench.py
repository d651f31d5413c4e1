"""`edgepack bench`: one run on a tiny artifact through the CLI; the JSON schema, the PNG, --device errors."""
import json
import math
import subprocess
import sys

import pytest

from edgepack.model.testmodels import make_tiny

ENGINES = {("edgepack", "onnx"), ("edgepack", "gguf"), ("onnxruntime-genai", "onnx"), ("llama.cpp", "gguf"),
           ("torch-reference", "fp32"), ("edgepack+lookup", "onnx"), ("edgepack+lookup", "gguf"), ("llama.cpp+lookup", "gguf")}
PROMPTS = {"en-short", "en-long", "zh-short", "zh-long", "en-rewrite", "en-extract", "en-code", "zh-rewrite", "zh-extract"}
POSITIVE = ("prompt_tokens", "load_s", "ttft_s", "prefill_tok_s", "peak_rss_bytes", "artifact_bytes", "speech_ratio")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from edgepack.export import export

    d = tmp_path_factory.mktemp("bench")
    return export(model=str(make_tiny(d / "tiny")), out=d / "art", fidelity_tokens=16)


@pytest.fixture(scope="module")
def run(artifact, tmp_path_factory):
    d = tmp_path_factory.mktemp("bench-out")
    r = cli("bench", str(artifact), "--device", "cpu", "--runs", "1", "--tokens", "8",
            "--json", str(d / "out.json"), "--plot", str(d / "out.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    return r, json.loads((d / "out.json").read_text()), d / "out.png"


def test_every_engine_and_prompt_has_positive_finite_figures(run):
    _, report, _ = run
    assert report["skipped"] == []
    got = {(r["engine"], r["backend"], r["prompt"]) for r in report["results"]}
    assert got == {(e, b, p) for e, b in ENGINES for p in PROMPTS}
    for r in report["results"]:
        for key in POSITIVE:
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, (r["engine"], key, r[key])
        d = r["decode_tok_s"]
        assert len(d["samples"]) == 1  # --runs 1: the warm-up is not recorded
        for key in ("median", "min", "max"):
            assert math.isfinite(d[key]) and d[key] > 0
        assert d["min"] <= d["median"] <= d["max"]
        assert r["new_tokens"] == 8 and r["label"] == f"pp{r['prompt_tokens']}+tg8"


def test_machine_settings_and_ratios_are_recorded(run):
    _, report, _ = run
    m = report["machine"]
    assert m["cpu"] and m["cores_logical"] >= 1 and m["ram_bytes"] > 0 and m["python"]
    assert m["libraries"]["onnxruntime"] and m["libraries"]["llama_cpp_python"] and m["libraries"]["torch"]
    s = report["settings"]
    assert s["runs"] == 1 and s["warmup_runs"] == 1 and s["device"] == "cpu" and "Not timed" in s["timed"]
    for r in report["results"]:
        v = r["vs_edgepack"]
        assert v is not None and all(math.isfinite(x) and x > 0 for k, x in v.items() if k != "against")
        if r["engine"] == "edgepack":
            assert v["decode_tok_s"] == 1.0


def test_table_on_stdout_progress_on_stderr(run):
    r, _, _ = run
    assert "llama.cpp" in r.stdout and "onnxruntime-genai" in r.stdout and "decode tok/s" in r.stdout
    assert "run 1 of 2 (warm-up, not recorded)" in r.stderr and "run 2 of 2" in r.stderr


def test_plot_is_a_png(run):
    _, _, png = run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_measured_runtime_overhead_recorded_for_inspect(run, artifact):
    from edgepack.formats.manifest import _measured_overhead

    over = _measured_overhead(artifact)
    assert set(over) == {"onnx", "gguf"}
    for o in over.values():
        assert 0 < o["runtime_overhead_bytes"] < o["peak_rss_bytes"]


def test_no_reference_is_said_in_the_output(artifact, tmp_path):
    r = cli("bench", str(artifact), "--runs", "1", "--tokens", "4", "--prompts", "en-short", "--engines",
            "edgepack/gguf,torch-reference", "--no-reference", "--json", str(tmp_path / "o.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "o.json").read_text())
    assert [(x["engine"], x["backend"]) for x in report["results"]] == [("edgepack", "gguf")]
    assert report["skipped"][0]["engine"] == "torch-reference" and "--no-reference" in report["skipped"][0]["reason"]
    assert "skipped torch-reference/fp32: --no-reference" in " ".join(r.stdout.split())


@pytest.mark.parametrize("device", ["gpu", "cuda", "npu"])
def test_other_devices_are_one_clear_error(artifact, device):
    r = cli("bench", str(artifact), "--device", device)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgepack: error:")
    assert f"--device {device} is not supported" in lines[0] and "cpu" in lines[0]


def test_worker_peak_rss_is_its_own_not_its_parents():
    """ru_maxrss survives fork+exec on Linux; a worker must not report the parent's high-water mark."""
    import subprocess
    import sys

    big = bytearray(400 * 2**20)  # the parent peaks above 400 MB
    big[:: 4096] = b"x" * len(big[:: 4096])
    out = subprocess.run([sys.executable, "-c", "from edgepack.bench.worker import _peak_rss; print(_peak_rss())"],
                         capture_output=True, text=True, check=True)
    del big
    assert 0 < int(out.stdout) < 200 * 2**20


def test_lookup_rows_report_acceptance_and_speedup(run):
    _, report, _ = run
    rows = {(r["engine"], r["backend"], r["prompt"]): r for r in report["results"]}
    for (e, b, p), r in rows.items():
        assert r["prompt_kind"] == ("open-ended" if p in ("en-short", "zh-short") else "grounded")
        if e.endswith("+lookup"):
            assert r["drafted_tokens"] >= r["accepted_tokens"] >= 0 and 0 <= r["acceptance_rate"] <= 1
            plain = rows[(e[: -len("+lookup")], b, p)]
            assert r["speedup_vs_plain"] == r["decode_tok_s"]["median"] / plain["decode_tok_s"]["median"]
        else:
            assert r["drafted_tokens"] is None and r["speedup_vs_plain"] is None


def test_no_speculate_leaves_the_lookup_engines_out(artifact, tmp_path):
    r = cli("bench", str(artifact), "--runs", "1", "--tokens", "4", "--prompts", "en-rewrite", "--engines",
            "edgepack/onnx,edgepack+lookup/onnx", "--no-speculate", "--no-reference", "--json", str(tmp_path / "o.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "o.json").read_text())
    assert [(x["engine"], x["backend"]) for x in report["results"]] == [("edgepack", "onnx")]
    assert report["settings"]["speculate"] is False


def test_decode_is_reported_against_the_read_bandwidth_bound_probed_in_the_run(run, artifact):
    """bound = probed bandwidth ÷ (the engine's weight file + KV bytes per token × tokens at mid-decode),
    with the float16 ONNX cache and llama.cpp's f16 one counted at 2 bytes an element."""
    from edgepack.formats.manifest import kv_cache_bytes, read_manifest

    r, report, _ = run
    bw = report["read_bandwidth"]
    assert len(bw["probes"]) == 2 and bw["bytes_per_s"] == max(p["read_bytes_per_s"] for p in bw["probes"]) > 1e8
    assert report["settings"]["threads"] == bw["probes"][0]["threads"]
    m = read_manifest(artifact)
    weights = {a["format"]: sum(f["bytes"] for f in a["files"] if f["path"].endswith((".onnx.data", ".gguf")))
               for a in m["artifacts"]}
    per_token = kv_cache_bytes(m["model"]["config"], 1, 2)
    for x in report["results"]:
        if x["backend"] == "fp32":
            assert x["decode_bound_tok_s"] is None
            continue
        n = x["prompt_tokens"] + x["new_tokens"] // 2
        assert x["decode_bound_tok_s"] == pytest.approx(bw["bytes_per_s"] / (weights[x["backend"]] + per_token * n))
        assert x["decode_fraction_of_bound"] == pytest.approx(x["decode_tok_s"]["median"] / x["decode_bound_tok_s"])
    assert "read-bandwidth bound" in " ".join(r.stdout.split()) and "% of " in r.stdout
