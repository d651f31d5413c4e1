"""Images people actually pass: each bad one is one `edgepack: error:` line and exit 2; odd but valid ones
(RGBA, gray, CMYK, palette, 16-bit, EXIF-rotated, animated) are converted and said, not refused."""
import io
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgepack.cli import main
from edgepack.export import export
from edgepack.model import image as img
from edgepack.model.testmodels import make_tiny, make_tiny_minicpmv


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgin")
    v = export(str(make_tiny_minicpmv(d / "v", "4.0")), out=d / "v-art", formats=("gguf",), dtype="fp32", fidelity_tokens=0)
    t = export(str(make_tiny(d / "t")), out=d / "t-art", formats=("gguf",), dtype="fp32", fidelity_tokens=0)
    return v, t, d


def run(art, image, *extra):
    r = CliRunner().invoke(main, ["run", str(art), "--image", str(image), "-p", "What is this?", "--max-tokens", "2", *extra])
    return r.exit_code, r.stdout, r.stderr


def one_error(code, out, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("edgepack: error:"), err
    return lines[0]


def png_header_only(path, w, h):
    """A PNG whose header claims w×h and whose pixel data is a few bytes: decoding it would need w·h·3 bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_not_an_image(arts, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not pixels")
    assert "not an image" in one_error(*run(arts[0], p))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(arts, tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated or corrupt" in one_error(*run(arts[0], p))


def test_one_pixel_image(arts, tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(p)
    assert "too small" in one_error(*run(arts[0], p))


@pytest.mark.parametrize("w,h", [(10_000, 8_000), (40_000, 40_000)])
def test_decompression_bomb_refused_before_decoding(arts, tmp_path, w, h):
    """80 Mpx passes Pillow's own limit (89.5 Mpx) and hits edgepack's; 1600 Mpx hits Pillow's at open.
    Both files hold a few bytes of pixel data: refusing after decoding would have failed differently."""
    p = png_header_only(tmp_path / f"bomb{w}.png", w, h)
    line = one_error(*run(arts[0], p))
    assert "refused" in line and "truncated" not in line


def test_image_on_a_text_only_artifact(arts, tmp_path):
    p = tmp_path / "ok.png"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(p)
    assert "no vision half" in one_error(*run(arts[1], p))


def test_missing_image_file(arts, tmp_path):
    assert "not found" in one_error(*run(arts[0], tmp_path / "nope.png"))


def test_rgba_runs_and_says_converted(arts, tmp_path):
    p = tmp_path / "alpha.png"
    Image.new("RGBA", (300, 200), (0, 0, 0, 0)).save(p)
    code, out, err = run(arts[0], p)
    assert code == 0 and "converted from RGBA" in err and "image tokens" in err


def test_animated_gif_first_frame_said(arts, tmp_path):
    p = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (80, 60), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, out, err = run(arts[0], p)
    assert code == 0 and "first frame of 2" in err
    im, notes = img.read_image(p)
    r, g, b = np.asarray(im)[30, 40]
    assert r > 200 and b < 50  # the red first frame, not the blue second


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_modes_convert_to_rgb(tmp_path, mode):
    a = np.random.default_rng(1).random((20, 30))
    if mode == "I;16":
        im = Image.fromarray((a * 65535).astype(np.uint16))  # mode I;16
    elif mode == "CMYK":
        im = Image.new("CMYK", (30, 20), (0, 255, 255, 0))  # pure red in CMYK
    else:
        im = Image.fromarray((a * 255).astype(np.uint8), "L").convert(mode)
    p = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png" if mode != "1" else "x.bmp")
    im.save(p)
    out, notes = img.read_image(p)
    assert out.mode == "RGB" and out.size == (30, 20) and any("converted from" in n for n in notes)
    rgb = np.asarray(out)
    if mode == "CMYK":
        assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60
    if mode == "I;16":  # 16-bit gray scaled by its full range, not clipped at 255
        assert abs(rgb[..., 0].astype(float).mean() - a.mean() * 255) < 2
    if mode in ("RGBA", "LA"):  # opaque input stays as it was
        assert abs(rgb[..., 0].astype(float) - (a * 255)).max() <= 1


def test_transparent_pixels_go_white(tmp_path):
    p = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(p)
    out, _ = img.read_image(p)
    assert (np.asarray(out) == 255).all()


def test_exif_rotation_applied(tmp_path):
    """A 40x20 JPEG tagged orientation 6 (stored rotated) is 20x40 once read, its left column on top."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = (255, 0, 0)  # the stored image's left quarter is red
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    out, notes = img.read_image(p)
    assert out.size == (20, 40) and any("EXIF orientation 6" in n for n in notes)
    top = np.asarray(out)[:5].reshape(-1, 3).mean(0)  # orientation 6: rotate 90° clockwise to view
    assert top[0] > 200 and top[2] < 60
