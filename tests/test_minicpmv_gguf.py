"""MiniCPM-V 4.0 through llama.cpp: LLM GGUF + mmproj against the float reference (tiny random checkpoints).

- mtmd's image embeddings (f32 mmproj, llama-cpp-python's bindings) equal the reference's within 1e-3
  relative, slice by slice, for images whose slices mtmd and MiniCPM-V's processor cut alike;
- teacher-forced logits of an image prompt (f32 GGUF + mmproj) agree with the reference within 1e-3 of
  the logit range, and the same comparison fails when the resampler's sin-cos table is transposed or the
  image rows are spliced one position late (the check can fail);
- arch `minicpm` with μP scales every input embedding: the mmproj divides proj by scale_emb (shown by
  the same comparison, and by its failure without the compensation);
- int4 (Q4_0 + f16 mmproj): llama-cpp-python's own MiniCPMv26ChatHandler answers an image prompt, and
  `edgepack run --image` streams from the GGUF backend.
"""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from edgepack.cli import main
from edgepack.export import export
from edgepack.model import image as img
from edgepack.model import vision as vref
from edgepack.model.checkpoint import load
from edgepack.model.reference import MiniCPM
from edgepack.model.rope import llama_cpp_n_ctx
from edgepack.model.testmodels import make_tiny_minicpmv
from edgepack.runtime.gguf_backend import GGUFBackend
from edgepack.runtime.vision import EncodedImage, WithImages, prompt_with_images, user_content
from edgepack.model.tokenizer import load_tokenizer


def picture(path, w, h, seed=0):
    """A smooth random picture (bilinear-upsampled noise), saved as PNG."""
    a = (np.random.default_rng(seed).random((max(2, h // 8), max(2, w // 8), 3)) * 255).astype(np.uint8)
    Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcv")
    out = {}
    for ver in ("4.0", "4.0-mup"):
        src = make_tiny_minicpmv(d / f"src-{ver}", ver)
        art = export(str(src), out=d / f"art-{ver}", formats=("gguf",), dtype="fp32", fidelity_tokens=0, mmproj_type="f32")
        out[ver] = (src, art)
    out["pics"] = {(w, h): picture(d / f"p{w}x{h}.png", w, h, seed=w + h) for w, h in ((448, 448), (896, 448), (1344, 896))}
    return out


def reference_image(ckpt, path):
    """The reference's EncodedImage (MiniCPM-V's slicing in numpy/Pillow, the torch tower and resampler)."""
    v = ckpt.config.vision
    s = img.load(path, v)
    enc = vref.ImageEncoder.from_weights(v, ckpt.vision)
    return EncodedImage(enc([torch.from_numpy(x) for x in s.all]).numpy(), s.grid, 0.0)


def open_gguf(art, cfg, n=512, mmproj=None):
    m = json.loads((art / "edgepack.json").read_text())["artifacts"][0]
    return GGUFBackend(art / m["path"], threads=2, n_ctx=llama_cpp_n_ctx(cfg, n), mmproj=mmproj or art / m["mmproj"]["path"],
                       kv_f32=True)


@pytest.mark.parametrize("size", [(448, 448), (896, 448), (1344, 896)])
def test_mtmd_embeddings_match_reference(tiny, size):
    src, art = tiny["4.0"]
    ckpt = load(src)
    ref = reference_image(ckpt, tiny["pics"][size])
    with open_gguf(art, ckpt.config) as be:
        emb, grid = be.image_encoder.encode(np.asarray(Image.open(tiny["pics"][size]).convert("RGB")))
    assert grid == ref.grid and emb.shape == ref.embeds.shape
    for k in range(len(emb)):  # overview and every slice
        rel = np.abs(emb[k] - ref.embeds[k]).max() / np.abs(ref.embeds[k]).max()
        print(f"{size} slice {k}: max |mtmd - ref| / max |ref| = {rel:.2e}")
        assert rel <= 1e-3, (size, k, rel)


def teacher_forced(src, art, pic, mutate=None, mmproj=None):
    """(max |GGUF - reference| / reference logit range) over an image prompt."""
    ckpt = load(src)
    tok = load_tokenizer(src, bos_id=ckpt.config.bos_token_id, eos_ids=ckpt.config.eos_token_ids)
    v = ckpt.config.vision
    ref_img = reference_image(ckpt, pic)
    messages = [{"role": "user", "content": user_content("What is in this picture?")}]
    ids, rows = prompt_with_images(tok, v, messages, [ref_img])
    model = MiniCPM.from_checkpoint(ckpt)
    x = model.embed(ids, rows)
    if mutate == "splice+1":  # the image rows land one position late
        pos = [k for k, i in enumerate(ids) if i < 0]
        x0 = model.embed([max(i, 0) for i in ids])
        x = x0.clone()
        x[0, [p + 1 for p in pos]] = torch.from_numpy(rows)
    ref = model(None, x=x)[0].numpy()
    with open_gguf(art, ckpt.config, mmproj=mmproj) as be:
        emb, grid = be.image_encoder.encode(np.asarray(Image.open(pic).convert("RGB")))
        ids2, rows2 = prompt_with_images(tok, v, messages, [EncodedImage(emb, grid, 0.0)])
        assert ids2 == ids
        got = WithImages(be, rows2).forward(ids, all_logits=True)
    return float(np.abs(got - ref).max() / (ref.max() - ref.min())), len(ids)


def test_teacher_forced_logits_image_prompt(tiny):
    src, art = tiny["4.0"]
    err, n = teacher_forced(src, art, tiny["pics"][(896, 448)])
    print(f"teacher-forced image prompt ({n} positions): max |gguf - ref| / range = {err:.2e}")
    assert n > 3 * 64 and err <= 1e-3, err


def test_teacher_forced_fails_when_the_pos_table_is_transposed(tiny, monkeypatch):
    src, art = tiny["4.0"]
    good = vref.sincos_2d

    def transposed(dim, h, w):  # row r·w+c gets the entry of (c, r)
        return good(dim, w, h).reshape(w, h, dim).transpose(1, 0, 2).reshape(h * w, dim)

    monkeypatch.setattr(vref, "sincos_2d", transposed)
    err, _ = teacher_forced(src, art, tiny["pics"][(896, 448)])
    print(f"transposed table: {err:.2e}")
    assert err > 1e-2, err


def test_teacher_forced_fails_when_the_splice_is_off_by_one(tiny):
    src, art = tiny["4.0"]
    err, _ = teacher_forced(src, art, tiny["pics"][(896, 448)], mutate="splice+1")
    print(f"splice one late: {err:.2e}")
    assert err > 1e-2, err


def test_mup_llm_gguf_scales_inputs_and_the_mmproj_compensates(tiny, tmp_path):
    src, art = tiny["4.0-mup"]
    cfg = load(src).config
    assert cfg.use_mup and cfg.embedding_scale == 12.0
    manifest = json.loads((art / "edgepack.json").read_text())
    assert manifest["artifacts"][0]["mmproj"]["embedding_scale_compensated"] == 12.0
    err, _ = teacher_forced(src, art, tiny["pics"][(448, 448)])
    assert err <= 1e-3, err
    # the same mmproj without the compensation: image rows arrive 12x too large
    from edgepack.formats.mmproj import write_mmproj

    ckpt = load(src)
    mm = tmp_path / "mmproj-uncompensated.gguf"
    write_mmproj(ckpt.config.vision, lambda n: ckpt.vision(n).numpy(), mm, "f32", embedding_scale=1.0)
    err, _ = teacher_forced(src, art, tiny["pics"][(448, 448)], mmproj=mm)
    assert err > 1e-2, err


@pytest.fixture(scope="module")
def int4(tiny, tmp_path_factory):
    src, _ = tiny["4.0"]
    return export(str(src), out=tmp_path_factory.mktemp("int4") / "art", formats=("gguf",), fidelity_tokens=0,
                  method="rtn")


def test_int4_pair_answers_in_llama_cpp_pythons_chat_handler(int4, tiny):
    """llama.cpp's own route: Llama + MiniCPMv26ChatHandler (mtmd) over the exported Q4_0 GGUF and f16 mmproj."""
    import base64

    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MiniCPMv26ChatHandler

    from edgepack.runtime.gguf_backend import llama_class_params

    entry = json.loads((int4 / "edgepack.json").read_text())["artifacts"][0]
    assert entry["quantization"]["bits"] == 4 and entry["mmproj"]["type"] == "f16"
    url = "data:image/png;base64," + base64.b64encode(tiny["pics"][(896, 448)].read_bytes()).decode()
    handler = MiniCPMv26ChatHandler(clip_model_path=str(int4 / entry["mmproj"]["path"]), verbose=False)
    with llama_class_params():  # an AMX CPU: without it ggml's AMX Q4_0 path segfaults in llama_decode
        llm = Llama(model_path=str(int4 / entry["path"]), chat_handler=handler, n_ctx=1024, n_threads=2, verbose=False)
    try:
        r = llm.create_chat_completion(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is in this picture?"}]}],
            max_tokens=6, temperature=0.0)
    finally:
        llm.close()
    assert r["usage"]["prompt_tokens"] > 3 * 64  # the overview and two slices went in as image tokens
    assert r["usage"]["completion_tokens"] >= 1 and isinstance(r["choices"][0]["message"]["content"], str)


def test_int4_edgepack_run_image_streams_on_gguf(int4, tiny):
    r = CliRunner().invoke(main, ["run", str(int4), "--backend", "gguf", "--image", str(tiny["pics"][(896, 448)]),
                                  "-p", "What is in this picture?", "--max-tokens", "5", "--json"])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["backend"] == "gguf" and s["tokens"] >= 1 and s["image_slices"] == 3 and s["image_tokens"] == 192
    assert s["encode_ms"] > 0 and "2x1 slices + overview" in r.stderr


@pytest.mark.parametrize("mtype,tol", [("f16", 5e-3), ("q8_0", 3e-2)])
def test_smaller_mmproj_types_load_and_stay_close(tiny, tmp_path, mtype, tol):
    from edgepack.formats.mmproj import write_mmproj

    src, art = tiny["4.0"]
    ckpt = load(src)
    mm = tmp_path / f"mmproj-{mtype}.gguf"
    write_mmproj(ckpt.config.vision, lambda n: ckpt.vision(n).numpy(), mm, mtype)
    ref = reference_image(ckpt, tiny["pics"][(896, 448)])
    with open_gguf(art, ckpt.config, mmproj=mm) as be:
        emb, _ = be.image_encoder.encode(np.asarray(Image.open(tiny["pics"][(896, 448)]).convert("RGB")))
    rel = max(np.abs(emb[k] - ref.embeds[k]).max() / np.abs(ref.embeds[k]).max() for k in range(len(emb)))
    print(f"mmproj {mtype}: max rel {rel:.2e}, {mm.stat().st_size} bytes")
    assert rel <= tol
