"""Images for MiniCPM-V, without torch: read a file safely, slice it the way MiniCPM-V's processor does.

    file ─ read (size checked before decoding, EXIF rotation, first frame, any mode -> RGB uint8)
         ─ slice: one overview resized to ~slice_size² (aspect kept, sides multiples of the patch),
                  plus, when the image is larger than one slice, a cols×rows grid of slices of the image
                  resized so each cell is ~slice_size² (at most max_slices cells; the grid whose aspect is
                  closest to the image's, among cell counts ceil(area/slice²) - 1, +0, +1)
         ─ normalize: (x/255 - mean) / std, channels first

The arithmetic (find_best_resize, get_refine_size, get_sliced_grid) and the resampling (Pillow bicubic on
uint8) are MiniCPM-V's image processor's, so its slices come out pixel for pixel. The prompt text that
stands for one image (placeholder) is also the processor's: `<image_id>N</image_id>` (when the model uses
image ids), `<image>` + query_num `<unk>` + `</image>` for the overview, then the slices' rows, each a run
of `<slice>` + query_num `<unk>` + `</slice>`, joined by newlines (2.0: rows of `<image>…</image>` inside one
`<slice>…</slice>`).
"""
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput

MAX_PIXELS = 64_000_000  # larger images are refused before decoding (Pillow's bomb limit is 89.5 Mpx)
MIN_SIDE = 2  # a 1×1 image carries nothing to look at


class ImageError(BadInput):
    """An image edgepack cannot use (message: one line, names the file)."""


@dataclass
class Sliced:
    overview: np.ndarray          # (3, H, W) float32, normalized
    slices: list                  # [(3, h, w) float32], row-major
    grid: tuple                   # (cols, rows), or None without slices
    source_size: tuple            # (width, height) after EXIF rotation
    notes: list                   # what was done to the file (converted mode, first frame of N, rotation)

    @property
    def all(self):
        return [self.overview, *self.slices]


def read_image(path, max_pixels=MAX_PIXELS):
    """An RGB uint8 PIL image from a file, or ImageError. The header's size is checked before any pixel
    is decoded; EXIF orientation is applied; animated images give their first frame; every mode
    (RGBA, LA, P, L, I;16, I, F, CMYK, YCbCr, 1) is converted to RGB (alpha over white)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes = []
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels ({e})") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot open the image ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"{path}: refused before decoding: {w}x{h} is {w * h / 1e6:.0f} Mpx, more than the "
                         f"{max_pixels / 1e6:.0f} Mpx limit")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: {w}x{h} is too small to describe (at least {MIN_SIDE}x{MIN_SIDE} pixels)")
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.seek(0)
        notes.append(f"first frame of {frames}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: truncated or corrupt image ({str(e).splitlines()[0][:120]})") from None
    orientation = _exif_orientation(im)
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    if im.mode != "RGB":
        notes.append(f"converted from {im.mode}")
        im = to_rgb(im)
    return im, notes


def _exif_orientation(im):
    try:
        return im.getexif().get(0x0112)
    except Exception:
        return None


def to_rgb(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit gray: scale to 8 bits by the full range
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


# -- MiniCPM-V's slicing arithmetic -----------------------------------------------------------------
def ensure_divide(length, patch):
    return max(round(length / patch) * patch, patch)


def find_best_resize(size, scale, patch, allow_upscale=False):
    w, h = size
    if w * h > scale * scale or allow_upscale:
        r = w / h
        h = int(scale / math.sqrt(r))
        w = int(h * r)
    return ensure_divide(w, patch), ensure_divide(h, patch)


def get_refine_size(size, grid, scale, patch, allow_upscale=False):
    w, h = size
    gx, gy = grid
    rw, rh = ensure_divide(w, gx), ensure_divide(h, gy)
    bw, bh = find_best_resize((rw / gx, rh / gy), scale, patch, allow_upscale)
    return bw * gx, bh * gy


def get_sliced_grid(size, scale, max_slices):
    """(cols, rows) or None: the cell count near area/scale² whose grid aspect is closest to the image's."""
    w, h = size
    log_ratio = math.log(w / h)
    multiple = min(math.ceil(w * h / (scale * scale)), max_slices)
    if multiple <= 1:
        return None
    best, err = [1, 1], float("inf")
    for n in (multiple - 1, multiple, multiple + 1):
        if n == 1 or n > max_slices:
            continue
        for m in range(1, n + 1):
            if n % m == 0:
                e = abs(log_ratio - math.log(m / (n // m)))
                if e < err:
                    best, err = [m, n // m], e
    return tuple(best)


def normalize(im, mean, std):
    a = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def slice_image(im, v, notes=()):
    """An RGB PIL image -> Sliced, for the vision description v (slice_size, max_slices, patch, mean/std)."""
    from PIL import Image

    bicubic = Image.Resampling.BICUBIC
    size, S, p = im.size, v.slice_size, v.patch_size
    grid = get_sliced_grid(size, S, v.max_slices) if v.slice_mode else None
    slices = []
    if grid is None:
        overview = im.resize(find_best_resize(size, S, p, allow_upscale=True), resample=bicubic)
    else:
        overview = im.resize(find_best_resize(size, S, p), resample=bicubic)
        refine = im.resize(get_refine_size(size, grid, S, p, allow_upscale=True), resample=bicubic)
        cw, ch = refine.size[0] // grid[0], refine.size[1] // grid[1]
        for r in range(grid[1]):
            for c in range(grid[0]):
                slices.append(normalize(refine.crop((c * cw, r * ch, (c + 1) * cw, (r + 1) * ch)), v.image_mean, v.image_std))
    return Sliced(normalize(overview, v.image_mean, v.image_std), slices, grid, size, list(notes))


def load(path, v):
    im, notes = read_image(path)
    return slice_image(im, v, notes)


# -- the text that stands for an image ------------------------------------------------------------
IMAGE, IMAGE_END, SLICE, SLICE_END = "<image>", "</image>", "<slice>", "</slice>"
IMAGE_ID, IMAGE_ID_END, UNK = "<image_id>", "</image_id>", "<unk>"


def placeholder_parts(v, grid, index=0):
    """The image's prompt as a list of text pieces and integers k (= image embedding k, query_num rows):
    0 is the overview, 1.. the slices in row-major order."""
    parts = []
    if v.use_image_id:
        parts.append(f"{IMAGE_ID}{index}{IMAGE_ID_END}")
    parts += [IMAGE, 0, IMAGE_END]
    if grid is None:
        return parts
    cols, rows = grid
    if v.layout == "2.0":  # <slice><image>s</image><image>s</image>\n<image>s</image>...</slice>
        parts.append(SLICE)
        for r in range(rows):
            if r:
                parts.append("\n")
            for c in range(cols):
                parts += [IMAGE, 1 + r * cols + c, IMAGE_END]
        parts.append(SLICE_END)
        return parts
    for r in range(rows):  # 2.6 / 4.0: <slice>s</slice><slice>s</slice>\n<slice>s</slice>...
        if r:
            parts.append("\n")
        for c in range(cols):
            parts += [SLICE, 1 + r * cols + c, SLICE_END]
    return parts


def placeholder_text(v, grid, index=0):
    """The processor's own placeholder string (each embedding as query_num `<unk>`)."""
    return "".join(p if isinstance(p, str) else UNK * v.query_num for p in placeholder_parts(v, grid, index))


# -- position inputs of the vision graph (numpy: the runtime computes them) ------------------------
def sincos_2d(dim, h, w):
    """(h·w, dim) float32: row r·w+c = [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)], ω_k = 10000^(-k/(dim/4)).
    Computed in float64 (the same table on every CPU)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")

    def one(p):
        a = p.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(a), np.cos(a)], 1)

    return np.concatenate([one(cols), one(rows)], 1).astype(np.float32)


def bucketed_ids(h, w, grid):
    """Idefics2's NaViT bucket ids, in float32 exactly as torch computes them."""
    boundaries = (np.arange(1, grid, dtype=np.float64) / grid).astype(np.float32)
    bh = np.searchsorted(boundaries, np.minimum(np.arange(h, dtype=np.float32) * np.float32(1.0 / h), np.float32(1 - 1e-6)), side="right")
    bw = np.searchsorted(boundaries, np.minimum(np.arange(w, dtype=np.float32) * np.float32(1.0 / w), np.float32(1 - 1e-6)), side="right")
    return (bh[:, None] * grid + bw[None, :]).reshape(-1).astype(np.int64)


def aa_bicubic_matrix(n_out, n_in):
    """(n_out, n_in) weights of PyTorch's antialiased bicubic resize along one axis (a = -0.5, the kernel
    widened by the scale when shrinking, weights normalized per output), as F.interpolate(antialias=True)."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)

    def cubic(x, a=-0.5):
        x = abs(x)
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        ws = [cubic((j - center + 0.5) * inv) for j in range(lo, hi)]
        tot = sum(ws)
        for j, wgt in zip(range(lo, hi), ws):
            m[i, j] = wgt / tot if tot else 0.0
    return m.astype(np.float32)
