"""The Android app's picture loop (core/MultimodalChat) against `edgepack run --image`, on the desktop.

The JVM runs core's Java as the app does (ImageSlicer, MultimodalChat: vision.onnx per slice, the prompt
with its placeholder, embedding.onnx for text runs, decoder_embeds.onnx with the KV cache, greedy decode),
with its OnnxEngine and PromptTokenizer bridged to a Python process (tests/android_mm_bridge.py) that runs
onnxruntime 1.29.0, the version the app packages, and edgepack's tokenizer. The reference is edgepack's own
runtime (`edgepack run ... --json --no-speculate`, backend onnx) on the same onnxruntime 1.29.0 in the same
venv, so the greedy tokens must be equal one for one (no margin rule): the runtime shares the KV buffer
through IOBinding, the Java side feeds each run's presents back as pasts, and both give the same logits.

The venv ($EDGEPACK_CACHE or ~/.cache/edgepack, venv-ort-1.29.0-runtime; ~20 s to create) holds
onnxruntime 1.29.0 and the runtime's other imports at the main environment's versions; it is not
test_genai_phone_engine's venv, which stays exactly the phone's genai + onnxruntime pair.
Models: the tiny MiniCPM-V 4.0 and 2.0, int4 (rtn; float16 KV cache, as exports default to).
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgepack.export import export
from edgepack.model.testmodels import make_tiny, make_tiny_minicpmv

ROOT = Path(__file__).resolve().parent.parent
ANDROID = ROOT / "android_demo"
BRIDGE = Path(__file__).resolve().parent / "android_mm_bridge.py"
CACHE = Path(os.environ.get("EDGEPACK_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepack")
VENV = CACHE / "venv-ort-1.29.0-runtime"
ORT = "onnxruntime==1.29.0"
SAME_AS_HERE = ("numpy", "pillow", "tokenizers", "sentencepiece", "jinja2", "click", "onnx")
QUESTION = "What is in this picture?"
N_NEW = 12
THREADS = 2
LOGIT_TOL = 1e-3  # step logits vs one teacher-forced forward (other run shapes: other summation order)


def runtime_python():
    """The venv's python, created under a lock and marked ready only once pip succeeded."""
    pins = [ORT] + [f"{p}=={version(p)}" for p in SAME_AS_HERE]
    python, ready = VENV / "bin" / "python", VENV / ".edgepack-ready"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "venv-ort-1.29.0-runtime.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ready.is_file() and ready.read_text() == " ".join(pins) and python.exists()):
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
            pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                                 capture_output=True, text=True, timeout=1200)
            assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
            ready.write_text(" ".join(pins))
    return python


def compile_java(out, core=None):
    """core/ + the test bridge (app/src/test/java/.../bridge) with javac -source 8; returns the classpath."""
    core = core or ANDROID / "app/src/main/java/org/edgepack/demo/core"
    bridge = ANDROID / "app/src/test/java/org/edgepack/demo/bridge"
    script = f"""set -e
. "{ANDROID}/tools.sh"; ensure_tools >&2
F="-source 8 -target 8 -encoding UTF-8 -Xlint:-options -nowarn"
javac $F -classpath "$ORG_JSON" -d "{out}/main" "{core}"/*.java
javac $F -classpath "{out}/main:$ORG_JSON" -d "{out}/test" "{bridge}"/*.java
echo "{out}/test:{out}/main:$ORG_JSON"
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def picture(path, w, h, seed, orientation=None):
    """A drawn picture (gradients + blocks + noise), PNG; with an EXIF orientation when given."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.int32)
    for _ in range(6):
        x0, y0 = rng.integers(0, w - 50), rng.integers(0, h - 50)
        a[y0:y0 + rng.integers(20, h // 2), x0:x0 + rng.integers(20, w // 2)] = rng.integers(0, 256, 3)
    a = np.clip(a + rng.integers(-12, 13, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a, "RGB")
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)
    else:
        im.save(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("amm")
    arts = {}
    for ver in ("4.0", "2.0"):
        src = make_tiny_minicpmv(d / f"src-{ver}", ver)
        arts[ver] = export(str(src), out=d / f"art-{ver}", formats=("onnx",), method="rtn", fidelity_tokens=0,
                           threads=THREADS)
    pics = {"4.0": picture(d / "wide.png", 900, 600, seed=1),
            "2.0": picture(d / "turned.png", 900, 600, seed=2, orientation=6)}  # 600x900 once turned
    return {"arts": arts, "pics": pics, "dir": d, "python": runtime_python(), "cp": compile_java(d / "java"), "refs": {}}


def run_java(setup, artifact, image, cp=None, n_new=N_NEW, *more):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(["java", "-cp", cp or setup["cp"], "org.edgepack.demo.bridge.MultimodalMain", str(artifact),
                        str(image), QUESTION, str(n_new), str(setup["python"]), str(BRIDGE), str(THREADS), *more],
                       capture_output=True, text=True, timeout=600, env=env)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


REFERENCE = """
import json, sys
from edgepack.runtime import load
from edgepack.runtime.vision import WithImages
art, pic, q, n = sys.argv[1:5]
with load(art, backend="onnx") as m:
    ids = m.prompt_ids(q, images=[pic])
    s = m.complete(q, images=[pic], max_new_tokens=int(n), speculate=False)
    # teacher-forced: the logits each generated token was picked from, in one forward over the sequence
    m.backend.reset()
    lg = WithImages(m.backend, m._rows).forward(ids + list(s.ids)[:-1], all_logits=True)[len(ids) - 1:]
    print(json.dumps({"prompt_ids": ids, "ids": list(s.ids), "text": s.text, "grid": m.image.grid,
                      "logits": lg.tolist()}))
"""


def reference(setup, ver):
    """edgepack's runtime on onnxruntime 1.29.0: `edgepack run --json --no-speculate`, and its ids (once per version)."""
    if ver not in setup["refs"]:
        setup["refs"][ver] = _reference(setup, ver)
    return setup["refs"][ver]


def _reference(setup, ver):
    art, pic = setup["arts"][ver], setup["pics"][ver]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    py = str(setup["python"])
    cli = subprocess.run([py, "-m", "edgepack", "run", str(art), "--backend", "onnx", "--image", str(pic),
                          "--prompt", QUESTION, "--max-tokens", str(N_NEW), "--json", "--no-speculate"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert cli.returncode == 0, cli.stderr[-3000:]
    api = subprocess.run([py, "-c", REFERENCE, str(art), str(pic), QUESTION, str(N_NEW)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert api.returncode == 0, api.stderr[-3000:]
    return json.loads(cli.stdout), json.loads(api.stdout)


@pytest.mark.parametrize("ver", ["4.0", "2.0"])
def test_java_picture_loop_gives_edgepack_runs_greedy_tokens(setup, ver):
    cli, ref = reference(setup, ver)
    r, got = run_java(setup, setup["arts"][ver], setup["pics"][ver])
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"{ver}: grid {got['grid']}, {got['slices']} slices, {len(got['ids'])} tokens, {got['meter']}")
    assert tuple(got["grid"]) == tuple(ref["grid"]) and got["slices"] == cli["image_slices"] > 1
    assert got["prompt_ids"] == ref["prompt_ids"]  # same ids, image rows as the same negative ids
    assert got["ids"] == ref["ids"] and len(got["ids"]) == cli["tokens"] >= 1
    assert got["text"] == cli["text"] == ref["text"]
    err = logit_error(got, ref)  # the tiny models' answers can be one token repeated: the logits say more
    print(f"{ver}: max |java - runtime| logits / range = {err:.1e}")
    assert err <= LOGIT_TOL
    # the call sequence: vision.onnx once per slice first, then only embedding/decoder runs
    runs = got["bridge_before_close"]["runs"]
    assert [g for g, _ in runs[:got["slices"]]] == ["vision.onnx"] * got["slices"]
    assert {g for g, _ in runs[got["slices"]:]} == {"embedding.onnx", "decoder_embeds.onnx"}
    decode_runs = sum(g == "decoder_embeds.onnx" for g, _ in runs)
    pieces = decode_runs - (len(got["ids"]) - 1)  # prefill runs: text/image runs cut into 128-row pieces
    assert pieces >= 3  # text, image rows, text at least
    # everything handed back: no value or graph left in the engine after close
    assert got["bridge_after_close"]["live_values"] == 0 and got["bridge_after_close"]["graphs"] == 0


def test_float16_kv_cache(setup):
    """The int4 export's cache is float16, and the Java loop fed it back as such."""
    entry = json.loads((setup["arts"]["4.0"] / "edgepack.json").read_text())["artifacts"][0]
    assert entry["kv_cache"]["dtype"] == "float16"


CHAT = """
import json, sys
from edgepack.runtime import load
from edgepack.runtime.vision import user_content
art, pic, q, q2, n = sys.argv[1:6]
with load(art, backend="onnx") as m:
    a = m.complete(q, images=[pic], max_new_tokens=int(n), speculate=False)
    history = [{"role": "user", "content": user_content(q)}, {"role": "assistant", "content": a.text},
               {"role": "user", "content": q2}]
    s = m.complete(messages=history, images=[pic], max_new_tokens=int(n), speculate=False)
    print(json.dumps({"ids": list(s.ids), "text": s.text, "prompt_tokens": s.prompt_tokens,
                      "prefill_tokens": s.prefill_tokens}))
"""


def test_second_turn_of_a_chat_about_the_picture(setup):
    """The history re-rendered with the answer, the cache reused as far as the Python runtime reuses it."""
    art, pic, q2 = setup["arts"]["4.0"], setup["pics"]["4.0"], "And the colours?"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    py = subprocess.run([str(setup["python"]), "-c", CHAT, str(art), str(pic), QUESTION, q2, str(N_NEW)],
                        capture_output=True, text=True, timeout=600, env=env)
    assert py.returncode == 0, py.stderr[-3000:]
    ref = json.loads(py.stdout)
    r, got = run_java(setup, art, pic, None, N_NEW, q2)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"turn 2: {ref['prompt_tokens']} prompt tokens, {ref['prefill_tokens']} prefilled; java {got['turn2']}")
    assert got["turn2"]["ids"] == ref["ids"] and got["turn2"]["text"] == ref["text"]
    assert got["turn2"]["prompt_tokens"] == ref["prompt_tokens"]
    assert got["turn2"]["prefill_tokens"] == ref["prefill_tokens"]


def logit_error(got, ref):
    """Largest |Java step logits - the runtime's teacher-forced logits| over the steps both have, / their range."""
    n = min(len(got["logits"]), len(ref["logits"]))
    a, b = np.asarray(got["logits"][:n]), np.asarray(ref["logits"][:n])
    return float(np.abs(a - b).max() / (b.max() - b.min()))


@pytest.fixture(scope="module")
def broken(setup):
    """core compiled with the splice skipped: the image rows go into the decoder as zeros."""
    core = setup["dir"] / "broken-core"
    shutil.copytree(ANDROID / "app/src/main/java/org/edgepack/demo/core", core)
    f = core / "MultimodalChat.java"
    good = "System.arraycopy(src, (r % q) * d, x, (k - i) * d, d);"
    src = f.read_text()
    assert src.count(good) == 1
    f.write_text(src.replace(good, "// splice skipped"))
    return compile_java(setup["dir"] / "broken-java", core=core)


@pytest.mark.parametrize("ver", ["4.0", "2.0"])
def test_equivalence_catches_a_skipped_splice(setup, broken, ver):
    _, ref = reference(setup, ver)
    r, got = run_java(setup, setup["arts"][ver], setup["pics"][ver], cp=broken)
    assert r.returncode == 0, r.stderr[-3000:]
    err = logit_error(got, ref)
    print(f"{ver}, splice skipped: ids equal {got['ids'] == ref['ids']}, logits / range = {err:.1e}")
    assert got["prompt_ids"] == ref["prompt_ids"] and err > 10 * LOGIT_TOL
    if ver == "4.0":
        assert got["ids"] != ref["ids"]


def one_error_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgepack: error: "), r.stderr
    return lines[0]


def test_text_artifact_asked_about_a_picture(setup):
    d = setup["dir"]
    art = export(str(make_tiny(d / "text-src")), out=d / "text-art", formats=("onnx",), dtype="fp32",
                 fidelity_tokens=0, threads=THREADS)
    r, got = run_java(setup, art, setup["pics"]["4.0"])
    line = one_error_line(r)
    assert "text model" in line and "cannot answer about a picture" in line
    assert got["bridge_before_close"]["graphs"] == 0 and not got["bridge_before_close"]["runs"]  # nothing loaded


def test_minicpmv_artifact_without_vision_onnx(setup, tmp_path):
    art = tmp_path / "novision"
    shutil.copytree(setup["arts"]["4.0"], art)
    (art / "onnx" / "vision.onnx").unlink()
    r, got = run_java(setup, art, setup["pics"]["4.0"])
    line = one_error_line(r)
    assert "MiniCPM-V" in line and "vision.onnx is not in onnx/" in line
    assert got["bridge_before_close"]["graphs"] == 0  # found before any graph was loaded
    m = json.loads((art / "edgepack.json").read_text())
    del m["artifacts"][0]["multimodal"]["vision"]  # exported without the vision half
    (art / "edgepack.json").write_text(json.dumps(m))
    line = one_error_line(run_java(setup, art, setup["pics"]["4.0"])[0])
    assert "without its vision half" in line
