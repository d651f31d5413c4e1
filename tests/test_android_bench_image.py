"""`edgepack android bench --image`: a MiniCPM-V artifact, the picture checked on the desktop first (a picture
Pillow reads within edgepack's limits, in a format every phone's BitmapFactory decodes), pushed beside the
artifact folder under the run's name, named by the intent; the report's encode figures checked. The fake adb
and the report are test_android.py's.
"""
import json

import pytest
from click.testing import CliRunner
from test_android import _artifact, _bench_json, bench_adb, fake_adb  # noqa: F401  (fixtures)

from edgepack.android import DEVICE_DIR, android
from edgepack.errors import EdgepackError

#: a MiniCPM-V artifact, the picture pushed beside it, named by the intent.
def _vision_artifact(tmp_path, name="minicpmv4-int4", drop=None, vision=True):
    """A manifest as edgepack export writes one for MiniCPM-V (model.config.vision, the onnx entry's multimodal)."""
    root = _artifact(tmp_path, name=name, formats=("onnx",))
    files = ["model.onnx", "model.onnx.data", "embedding.onnx", "decoder_embeds.onnx", "vision.onnx", "vision.onnx.data"]
    entry = {"format": "onnx", "path": "onnx", "files": [{"path": f"onnx/{f}", "bytes": 1, "sha256": "0" * 64}
                                                         for f in files if f != drop],
             "multimodal": {"embedding": "embedding.onnx", "decoder": "decoder_embeds.onnx",
                            "vision": {"path": "vision.onnx", "data": "vision.onnx.data", "dtype": "fp16"}}}
    config = {"vision": {"version": "4.0", "layout": "4.0"}} if vision else {}
    (root / "edgepack.json").write_text(json.dumps({"schema": 1, "model": {"name": "MiniCPM-V 4.0", "config": config},
                                                    "artifacts": [entry]}))
    return root


def _picture(tmp_path, name="cat photo.JPG", size=(640, 480), fmt="JPEG"):
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", size, (200, 120, 40)).save(path, fmt)
    return path


def test_bench_image_dry_run_pushes_the_picture_and_names_it_in_the_intent(tmp_path, bench_adb):
    calls, _ = bench_adb
    art, pic = _vision_artifact(tmp_path), _picture(tmp_path)
    run = "minicpmv4-int4-20261204T190000"
    result = f"{DEVICE_DIR}/bench/{run}.json"
    r = CliRunner().invoke(android, ["bench", str(art), "--image", str(pic), "--tokens", "32", "--out", "r.json",
                                     "--dry-run"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"adb shell mkdir -p {DEVICE_DIR}",
        f"adb push {art} {DEVICE_DIR}/",
        f"adb push '{pic}' {DEVICE_DIR}/{run}.jpg",
        f"adb shell rm -f {result}",
        f"adb shell am start -S -W -n org.edgepack.demo/.MainActivity --es org.edgepack.demo.BENCH {run} "
        "--ei org.edgepack.demo.BENCH_TOKENS 32 --es org.edgepack.demo.BENCH_ARTIFACT minicpmv4-int4 "
        f"--es org.edgepack.demo.BENCH_IMAGE {run}.jpg",
        f"adb shell 'until [ -f {result} ]; do sleep 1; done'",
        f"adb pull {result} r.json",
    ]
    assert calls() == []


def test_bench_image_runs_and_prints_the_encode_figures(tmp_path, bench_adb, monkeypatch):
    from edgepack.android import BENCH_IMAGE_PROMPT

    calls, result = bench_adb
    run = "minicpmv4-int4-20261204T190000"
    result(_bench_json(run=run, prompt=BENCH_IMAGE_PROMPT, image=f"{run}.jpg", slices=3, encode_ms=912.0,
                       encode_ms_per_slice=304.0, ttft_after_encode_s=0.31, ttft_s=1.22, model="MiniCPM-V 4.0"))
    monkeypatch.chdir(tmp_path)
    art, pic = _vision_artifact(tmp_path), _picture(tmp_path, "p.png", fmt="PNG")
    r = CliRunner().invoke(android, ["bench", str(art), "--image", str(pic)])
    assert r.exit_code == 0, r.output
    assert ["push", str(pic), f"{DEVICE_DIR}/{run}.png"] in calls()
    assert r.stdout.splitlines()[-1] == ("| Google Pixel 8 (arm64-v8a, 4 threads) | MiniCPM-V 4.0 | 1.22 s | 24.5 tok/s "
                                         "| 7.1x | 412 MiB | 128 tokens | 3 slices | 304 ms/slice "
                                         "| TTFT after encode 0.31 s |")


@pytest.mark.parametrize("data, message", [
    (_bench_json(), "answered without the picture"),
    (_bench_json(image="x.jpg", slices=0, encode_ms=1.0, encode_ms_per_slice=1.0, ttft_after_encode_s=0.1),
     "slices is 0"),
    (_bench_json(image="x.jpg", slices=2, encode_ms=1.0, encode_ms_per_slice=None, ttft_after_encode_s=0.1),
     "encode_ms_per_slice is None"),
    (_bench_json(image="x.jpg", error="x.jpg is not a picture this phone can decode"),
     "the app could not run the benchmark: x.jpg is not a picture"),
])
def test_bench_image_refuses_a_result_without_the_encode(tmp_path, bench_adb, monkeypatch, data, message):
    _, result = bench_adb
    result(data)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(android, ["bench", str(_vision_artifact(tmp_path)), "--image", str(_picture(tmp_path))])
    assert isinstance(r.exception, EdgepackError) and r.exception.exit_code == 2, r.output
    assert message in str(r.exception)


@pytest.mark.parametrize("case, message", [
    ("text", "is a text-only artifact: --image needs a MiniCPM-V artifact"),
    ("no-vision", "lists no vision.onnx"),
    ("not-a-picture", "not an image Pillow can read"),
    ("huge", "refused before decoding: 8001x8000 is 64 Mpx"),
    ("tiff", "a TIFF picture, which Android's BitmapFactory does not decode"),
    ("missing", "file not found"),
])
def test_bench_image_refuses_bad_input_before_any_adb_command(tmp_path, bench_adb, case, message):
    calls, _ = bench_adb
    art = (_artifact(tmp_path) if case == "text" else
           _vision_artifact(tmp_path, drop="vision.onnx" if case == "no-vision" else None))
    pic = _picture(tmp_path)
    if case == "not-a-picture":
        pic.write_text("not a picture")
    elif case == "huge":  # a 2x2 PNG whose header says 8001x8000: refused from the header, never decoded
        import struct
        import zlib

        pic = _picture(tmp_path, "huge.png", size=(2, 2), fmt="PNG")
        b = bytearray(pic.read_bytes())
        b[16:24] = struct.pack(">II", 8001, 8000)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
        pic.write_bytes(bytes(b))
    elif case == "tiff":
        pic = _picture(tmp_path, "p.tif", fmt="TIFF")
    elif case == "missing":
        pic = tmp_path / "nowhere.jpg"
    r = CliRunner().invoke(android, ["bench", str(art), "--image", str(pic), "--dry-run"])
    assert isinstance(r.exception, EdgepackError) and r.exception.exit_code == 2, r.output
    assert message in str(r.exception)
    assert calls() == [] and r.stdout == ""
