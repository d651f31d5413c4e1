"""Expected outputs of MiniCPM-V's image preprocessing, from edgepack.model.image, for the Android app's
Java copy of it (android_demo/.../core/ImageSlicer and friends; ImageFixturesTest reads this folder).

    python tests/android_image_fixtures.py OUTDIR       (android_demo/run_jvm_tests.sh runs it)

Images are drawn here, deterministically (numpy RNG + PIL), written as files into OUTDIR/files, then read
back as the app would see them: the decoded, un-rotated pixels as ARGB (so JPEG decoders do not enter)
and the file's first 64 KiB (for Exif.orientation). The expected side is read_image (EXIF rotation, any
mode -> RGB) and slice_image for a 4.0 and a 2.0 VisionConfig, placeholder_parts, and the position
inputs of each slice shape. Everything little-endian:

    index.json            {"pillow": version, "visions": {name: VisionConfig as in a manifest}, "cases": [...], "sizes": ...}
    <case>.argb           int32 ARGB per pixel, row-major (the decoded picture, before EXIF rotation)
    <case>.head           the file's first 64 KiB
    <case>.rgb            uint8 RGB after read_image (small cases only)
    <case>.<v>.u8         the slices' pixels (case[v]["pixels"] names the file: 2.0 slices as 4.0 does) as uint8, (3, h, w) each, overview first: slice_image's
                          floats mapped back through <v>.table (each must be an exact table entry)
    <v>.table             float32 (3, 256): normalize() of every uint8 value per channel
    pos/...               position inputs (int64 / float32) for the slice shapes met
    resize/<k>.in|.out    RGB before and after Image.resize(BICUBIC) alone (index "resizes": W, H, w, h)
"""
import json
import math
import struct
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from edgepack.model.config import VisionConfig
from edgepack.model.image import (ImageError, aa_bicubic_matrix, bucketed_ids, find_best_resize,
                                  get_refine_size, get_sliced_grid, normalize, placeholder_parts,
                                  read_image, sincos_2d, slice_image)

HEAD = 64 * 1024
VISIONS = {
    "4.0": VisionConfig(version="4.0", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                        num_attention_heads=16, embed_dim=2560, resampler_heads=20, position="bucketed",
                        position_grid=70, layout="4.0", use_image_id=True, minicpmv_version=5),
    "2.0": VisionConfig(version="2.0", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                        num_attention_heads=16, embed_dim=2304, resampler_heads=18, position="interpolated",
                        position_grid=27, layout="2.0", use_image_id=False, query_pos=True),
}


def _picture(rng, w, h):
    """A smooth picture with edges and noise: what a photo asks of a bicubic kernel, cheaply."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([127 + 120 * np.sin(x / max(w, 1) * 7 + c) * np.cos(y / max(h, 1) * 5 - c) for c in range(3)], -1)
    a[(x.astype(np.int64) // 37 + y.astype(np.int64) // 23) % 5 == 0] = (250, 10, 40)
    a += rng.normal(0, 18, a.shape).astype(np.float32)
    return np.clip(a, 0, 255).astype(np.uint8)


def _png_header_only(path, w, h):
    """A PNG whose IHDR says w×h and that holds no pixels: refused before decoding, or too small."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _images(files, rng):
    """(name, path) of every picture, written into files/."""
    out = []

    def save(name, im, ext="png", **kw):
        p = files / f"{name}.{ext}"
        if ext == "png":
            kw.setdefault("compress_level", 1)
        im.save(p, **kw)
        out.append((name, p))

    def rgb(name, w, h, **kw):
        save(name, Image.fromarray(_picture(rng, w, h), "RGB"), **kw)

    for w, h in ((2, 2), (3, 2), (2, 5), (13, 7), (64, 48), (448, 448), (449, 448), (500, 402)):
        rgb(f"rgb_{w}x{h}", w, h)
    rgb("big_4000x3000", 4000, 3000)
    rgb("portrait_1200x1600", 1200, 1600)
    rgb("pano_4000x300", 4000, 300)
    rgb("pano_300x4000", 300, 4000)
    rgb("tall_2x300", 2, 300)          # taller than 100× its width: Pillow resizes vertically first
    rgb("tall_20x2500", 20, 2500)
    rgb("wide_2500x20", 2500, 20)
    # one image per grid get_sliced_grid picks among sizes near the cell-count boundaries
    for w, h in _grid_cases():
        rgb(f"grid_{w}x{h}", w, h)
    a = _picture(rng, 640, 480)
    alpha = np.tile(np.linspace(0, 255, 640).astype(np.uint8), (480, 1))
    alpha[:40] = 0
    alpha[-40:] = 255
    save("rgba_640x480", Image.fromarray(np.dstack([a, alpha]), "RGBA"))
    save("la_300x200", Image.fromarray(np.dstack([a[:200, :300, 0], alpha[:200, :300]]), "LA"))
    save("grey_500x400", Image.fromarray(_picture(rng, 500, 400)[..., 1], "L"))
    pal = Image.fromarray(_picture(rng, 600, 450), "RGB").quantize(64, dither=Image.Dither.NONE)
    save("palette_600x450", pal)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    save("palette_alpha_600x450", pal_t, transparency=3)
    for o in range(1, 9):  # JPEGs with EXIF orientation 1..8; non-square so rotation changes the grid
        ex = Image.Exif()
        ex[0x0112] = o
        save(f"jpeg_exif{o}_620x380", Image.fromarray(_picture(rng, 620, 380), "RGB"), "jpg", exif=ex, quality=90)
    ex = Image.Exif()
    ex[0x0112] = 6
    save("png_exif6_300x500", Image.fromarray(_picture(rng, 300, 500), "RGB"), exif=ex)
    ex = Image.Exif()
    ex[0x0112] = 8
    save("webp_exif8_200x120", Image.fromarray(_picture(rng, 200, 120), "RGB"), "webp", exif=ex, lossless=True)
    save("jpeg_noexif_700x300", Image.fromarray(_picture(rng, 700, 300), "RGB"), "jpg", quality=85)
    return out


def _grid_cases():
    seen, picks = set(), []
    S = 448
    for k in range(2, 5):  # areas just under and over k·448², over a range of aspects (more in _size_sweep)
        for aspect in (0.12, 0.3, 0.5, 0.75, 1.0, 1.33, 2.0, 3.5, 8.0):
            for dk in (-0.02, 0.02):
                area = (k + dk) * S * S
                w = max(2, int(math.sqrt(area * aspect)))
                h = max(2, int(area / w))
                g = get_sliced_grid((w, h), S, 9)
                if g is not None and g not in seen and w * h < 700_000:
                    seen.add(g)
                    picks.append((w, h))
    return picks


def _size_sweep():
    """Many (w, h): the grid and the resize sizes each vision gives them, without pixels."""
    rng = np.random.default_rng(7)
    sizes = {(w, h) for w in (2, 3, 14, 27, 100, 447, 448, 449, 896, 897, 1344, 4000) for h in (2, 5, 448, 449, 3000)}
    S = 448
    for k in range(1, 12):  # around every cell-count boundary
        for _ in range(60):
            aspect = math.exp(rng.uniform(-3, 3))
            area = k * S * S + rng.integers(-3, 4)
            w = max(2, int(round(math.sqrt(area * aspect))))
            sizes.add((w, max(2, int(round(area / w)))))
    sizes |= {(int(w), int(h)) for w, h in rng.integers(2, 5000, (600, 2))}
    out = []
    for w, h in sorted(sizes):
        row = {"size": [w, h]}
        for name, v in VISIONS.items():
            g = get_sliced_grid((w, h), v.slice_size, v.max_slices)
            over = find_best_resize((w, h), v.slice_size, v.patch_size, allow_upscale=g is None)
            row[name] = {"grid": list(g) if g else None, "overview": list(over),
                         "refine": list(get_refine_size((w, h), g, v.slice_size, v.patch_size, True)) if g else None}
        out.append(row)
    return out


def _table(v):
    """normalize() of every uint8 value, per channel: (3, 256) float32."""
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, 2), "RGB")
    return normalize(ramp, v.image_mean, v.image_std)[:, 0, :]


def _to_u8(a, table):
    """(3, h, w) normalized floats -> the uint8 values they came from (each must be in the table)."""
    out = np.empty(a.shape, np.uint8)
    for c in range(3):
        idx = np.searchsorted(table[c], a[c])
        idx = np.clip(idx, 0, 255)
        if not np.array_equal(table[c][idx], a[c]):
            raise AssertionError("slice_image gave a value that is not normalize() of a uint8")
        out[c] = idx
    return out


def main(outdir):
    outdir = Path(outdir)
    files = outdir / "files"
    (outdir / "pos").mkdir(parents=True, exist_ok=True)
    files.mkdir(exist_ok=True)
    rng = np.random.default_rng(33)
    tables = {name: _table(v) for name, v in VISIONS.items()}
    for name, t in tables.items():
        (outdir / f"{name}.table").write_bytes(t.astype("<f4").tobytes())
    cases, shapes = [], set()
    for name, path in _images(files, rng):
        raw = Image.open(path)
        raw.load()
        argb = np.asarray(raw.convert("RGBA"), np.uint32)
        argb = (argb[..., 3] << 24) | (argb[..., 0] << 16) | (argb[..., 1] << 8) | argb[..., 2]
        (outdir / f"{name}.argb").write_bytes(argb.astype("<u4").tobytes())
        (outdir / f"{name}.head").write_bytes(path.read_bytes()[:HEAD])
        case = {"name": name, "width": raw.size[0], "height": raw.size[1], "mode": raw.mode,
                "orientation": int(raw.getexif().get(0x0112, 1))}
        im, _ = read_image(path)
        case["rgb_size"] = list(im.size)
        if im.size[0] * im.size[1] <= 1_000_000:
            (outdir / f"{name}.rgb").write_bytes(np.asarray(im, np.uint8).tobytes())
            case["rgb"] = True
        for vname, v in VISIONS.items():
            s = slice_image(im, v)
            u8 = b"".join(_to_u8(a, tables[vname]).tobytes() for a in s.all)
            if vname == "2.0" and u8 == first_u8:  # same slicing as 4.0's (448², 9 slices): stored once
                case[vname] = {"pixels": "4.0"}
            else:
                (outdir / f"{name}.{vname}.u8").write_bytes(u8)
                case[vname] = {"pixels": vname}
            first_u8 = u8
            case[vname].update({"grid": list(s.grid) if s.grid else None,
                           "sizes": [[a.shape[1], a.shape[2]] for a in s.all],
                           "parts": [placeholder_parts(v, s.grid, k) for k in (0, 3)]})
            shapes |= {(a.shape[1] // v.patch_size, a.shape[2] // v.patch_size) for a in s.all}
        cases.append(case)
        path.unlink()
    refused = []
    for w, h in ((1, 1), (1, 500), (8001, 8000), (64_000_001, 1), (8500, 8500)):
        p = files / f"refused_{w}x{h}.png"
        _png_header_only(p, w, h)
        try:
            read_image(p)
        except ImageError as e:
            refused.append({"size": [w, h], "message": str(e).split(": ", 1)[1]})
        else:
            raise AssertionError(f"{w}x{h} was not refused")
        p.unlink()
    pos = _positions(outdir / "pos", sorted(shapes))
    resizes = _resizes(outdir / "resize", rng)
    index = {"pillow": PIL.__version__, "visions": {n: {**asdict(v), "image_mean": list(v.image_mean), "image_std": list(v.image_std)}
                         for n, v in VISIONS.items()},
             "cases": cases, "refused": refused, "sizes": _size_sweep(), "positions": pos,
             "resizes": resizes}
    (outdir / "index.json").write_text(json.dumps(index))
    return index


def _resizes(folder, rng):
    """Pillow's bicubic resize alone on small pictures: both pass orders (and the rule's boundary, where the
    height shrinks by exactly twice the width's pixels), up- and downscales, one-pixel outputs."""
    folder.mkdir(exist_ok=True)
    jobs = [(40, 60, 30, 40), (40, 61, 30, 40), (40, 62, 30, 41), (41, 100, 30, 78), (10, 500, 12, 20),
            (2, 300, 42, 5488), (3, 7, 1, 1), (7, 3, 1, 2), (50, 50, 50, 13), (50, 50, 13, 50), (5, 5, 97, 3),
            (300, 40, 1000, 39), (64, 48, 448, 336), (255, 3, 17, 3)]
    jobs += [tuple(int(x) for x in rng.integers(2, 90, 4)) for _ in range(30)]
    out = []
    for k, (W, H, w, h) in enumerate(jobs):
        src = _picture(rng, W, H)
        got = np.asarray(Image.fromarray(src, "RGB").resize((w, h), Image.Resampling.BICUBIC))
        (folder / f"{k}.in").write_bytes(src.tobytes())
        (folder / f"{k}.out").write_bytes(got.tobytes())
        out.append([W, H, w, h])
    return out


def _positions(folder, shapes):
    """The position feeds for each (h, w) patch shape met (key_pos at a narrow dim: its rows depend only
    on (r, c, dim)), one wide key_pos, and every bucket row of bucketed_ids for 1..400 patches."""
    out = []
    for h, w in shapes:
        tag = f"{h}x{w}"
        (folder / f"key16_{tag}.f32").write_bytes(sincos_2d(16, h, w).astype("<f4").tobytes())
        (folder / f"ids70_{tag}.i64").write_bytes(bucketed_ids(h, w, 70).astype("<i8").tobytes())
        (folder / f"rows27_{tag}.f32").write_bytes(aa_bicubic_matrix(h, 27).astype("<f4").tobytes())
        (folder / f"cols27_{tag}.f32").write_bytes(aa_bicubic_matrix(w, 27).astype("<f4").tobytes())
        out.append([h, w])
    (folder / "key2560_16x24.f32").write_bytes(sincos_2d(2560, 16, 24).astype("<f4").tobytes())
    (folder / "key2304_9x31.f32").write_bytes(sincos_2d(2304, 9, 31).astype("<f4").tobytes())
    col = np.concatenate([bucketed_ids(n, 1, g) for g in (27, 70) for n in range(1, 401)])
    (folder / "ids_sweep.i64").write_bytes(col.astype("<i8").tobytes())
    mats = np.concatenate([aa_bicubic_matrix(n, g).reshape(-1) for g in (27, 70) for n in range(1, 121)])
    (folder / "aa_sweep.f32").write_bytes(mats.astype("<f4").tobytes())
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/android_image_fixtures.py OUTDIR")
    main(sys.argv[1])
