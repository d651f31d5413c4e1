"""MiniCPM-V: the family adapter, the float reference of the image path, and MiniCPM-V's slicing and prompt.

The reference vision tower is checked against transformers' own Idefics2VisionTransformer (MiniCPM-V 4.0's
NaViT tower) with the same weights, on a padded batch of slices of different sizes."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgepack.errors import ConfigError, NotSupported
from edgepack.model import image as img
from edgepack.model import vision as vref
from edgepack.model.checkpoint import load
from edgepack.model.config import DecoderConfig, vision_shapes
from edgepack.model.families import parse_config
from edgepack.model.reference import MiniCPM
from edgepack.model.testmodels import make_tiny_minicpmv, tiny_minicpmv_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcv")
    return {v: make_tiny_minicpmv(d / v, v) for v in ("4.0", "2.0")}


# -- family -----------------------------------------------------------------------------------------
def test_4_0_config_maps_to_llama_longrope_and_navit():
    c = parse_config(tiny_minicpmv_config("4.0"))
    v = c.vision
    assert c.family == "minicpmv" and not c.use_mup and c.rope.kind == "longrope" and c.gguf_arch == "minicpm"
    assert not c.tie_word_embeddings and c.head_dim == 64 and c.embedding_scale == 1.0
    assert (v.version, v.position, v.position_grid, v.layout, v.use_image_id, v.query_pos) == ("4.0", "bucketed", 70, "4.0", True, False)
    assert (v.query_num, v.resampler_heads, v.embed_dim, v.minicpmv_version, v.slice_size, v.max_slices) == (64, 2, 256, 5, 448, 9)


def test_2_0_config_maps_to_minicpm_mup_and_timm_tower():
    c = parse_config(tiny_minicpmv_config("2.0"))
    v = c.vision
    assert c.use_mup and c.embedding_scale == 12.0 and c.tie_word_embeddings and c.rope.kind == "default"
    assert (v.version, v.position, v.position_grid, v.layout, v.use_image_id, v.query_pos) == ("2.0", "interpolated", 27, "2.0", False, True)
    assert v.num_hidden_layers == 2 and v.minicpmv_version == 0  # 3 blocks, drop_vision_last_layer


def test_real_2_0_config_without_vision_config_takes_timm_so400m():
    raw = tiny_minicpmv_config("2.0")
    del raw["vision_config"]
    raw.update(hidden_size=2304, num_attention_heads=36, num_key_value_heads=36, intermediate_size=5760, vocab_size=122753)
    v = parse_config(raw).vision
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.position_grid, v.resampler_heads) == (1152, 26, 16, 27, 18)


@pytest.mark.parametrize("change,needle", [
    ({"version": 2.6}, "MiniCPM-V 4.0"), ({"version": 4.5}, "MiniCPM-V 2.0"),
    ({"vision_config": None}, "not supported"), ({"vision_config": {"model_type": "clip_vision_model"}}, "SigLIP"),
])
def test_other_minicpmv_configs_refused_naming_what_is_supported(change, needle):
    raw = {**tiny_minicpmv_config("4.0"), **change}
    with pytest.raises(NotSupported, match=needle):
        parse_config(raw)


def test_resampler_width_must_be_128_wide_heads():
    with pytest.raises(ConfigError, match="multiple of 128"):
        parse_config({**tiny_minicpmv_config("4.0"), "hidden_size": 192})


def test_config_round_trips_through_the_manifest():
    c = parse_config(tiny_minicpmv_config("4.0"))
    back = DecoderConfig.from_manifest(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.vision == c.vision


def test_checkpoint_reads_llm_under_prefix_and_timm_names(tiny):
    ck = load(tiny["2.0"])
    assert "model.embed_tokens.weight" in ck.names and not any(n.startswith("llm.") for n in ck.names)
    v = ck.config.vision
    for name, shape in vision_shapes(v).items():
        assert tuple(ck.vision(name).shape) == shape, name


# -- reference ----------------------------------------------------------------------------------------
def test_reference_tower_equals_transformers_idefics2(tiny):
    from transformers import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    ck = load(tiny["4.0"])
    v = ck.config.vision
    hc = Idefics2VisionConfig(hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                              num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                              patch_size=v.patch_size, image_size=v.position_grid * v.patch_size,
                              layer_norm_eps=v.layer_norm_eps, hidden_act="gelu_pytorch_tanh")
    hc._attn_implementation = "eager"
    hf = Idefics2VisionTransformer(hc).eval()
    hf.load_state_dict({k[4:]: ck.vision(k) for k in vision_shapes(v) if k.startswith("vpm.")}, strict=True)
    enc = vref.ImageEncoder.from_weights(v, ck.vision)
    g = torch.Generator().manual_seed(1)
    sizes = [(32, 32), (23, 45), (10, 61), (25, 3)]  # 25 rows: one of the heights llama.cpp buckets differently
    slices = [torch.randn(3, h * 14, w * 14, generator=g) for h, w in sizes]
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    px, pm = torch.zeros(len(sizes), 3, H * 14, W * 14), torch.zeros(len(sizes), H, W, dtype=torch.bool)
    for b, (s, (h, w)) in enumerate(zip(slices, sizes)):
        px[b, :, : h * 14, : w * 14], pm[b, :h, :w] = s, True
    with torch.no_grad():
        ref, mask, _ = enc.vpm(slices)
        out = hf(px, patch_attention_mask=pm).last_hidden_state
    for b, (h, w) in enumerate(sizes):
        o, r = out[b][pm[b].reshape(-1)], ref[b, : h * w]
        assert float((o - r).abs().max() / r.abs().max()) <= 1e-5, (h, w)


def test_masked_batch_equals_each_slice_alone(tiny):
    """A padded batch changes nothing: what the ONNX graph (one slice per run) relies on."""
    for ver in ("4.0", "2.0"):
        ck = load(tiny[ver])
        enc = vref.ImageEncoder.from_weights(ck.config.vision, ck.vision)
        g = torch.Generator().manual_seed(2)
        slices = [torch.randn(3, h * 14, w * 14, generator=g) for h, w in ((12, 30), (20, 9))]
        both = enc(slices)
        for k, s in enumerate(slices):
            assert torch.allclose(enc([s])[0], both[k], atol=1e-5, rtol=1e-5), ver


def test_numpy_position_ids_equal_torch_for_every_grid():
    for h in range(1, 80):
        for w in (1, 13, 32, 45, 70, 99):
            assert np.array_equal(img.bucketed_ids(h, w, 70), vref.bucketed_position_ids(h, w, 70).numpy()), (h, w)


@pytest.mark.parametrize("h,w", [(32, 32), (23, 45), (10, 61), (1, 27), (27, 27), (45, 7)])
def test_resize_matrices_equal_torch_antialiased_bicubic(h, w):
    """2.0's table resize (timm: bicubic, antialias) as R · T · Cᵀ, the form the ONNX graph computes."""
    t = torch.randn(1, 1, 27, 27, dtype=torch.float64)
    want = F.interpolate(t, size=(h, w), mode="bicubic", antialias=True, align_corners=False)[0, 0].numpy()
    got = img.aa_bicubic_matrix(h, 27).astype(np.float64) @ t[0, 0].numpy() @ img.aa_bicubic_matrix(w, 27).astype(np.float64).T
    assert np.abs(got - want).max() < 1e-6


def test_sincos_table_layout():
    """Row r·w + c: first half encodes the column, second half the row (OpenBMB's get_2d_sincos_pos_embed)."""
    t = img.sincos_2d(16, 3, 5)
    assert t.shape == (15, 16)
    r, c = 2, 4
    assert np.allclose(t[r * 5 + c, 0], np.sin(c)) and np.allclose(t[r * 5 + c, 8], np.sin(r))
    assert np.allclose(t[r * 5 + c, 4], np.cos(c)) and np.allclose(t[r * 5 + c, 12], np.cos(r))


def test_2_0_splice_scales_text_not_image(tiny):
    ck = load(tiny["2.0"])
    m = MiniCPM.from_checkpoint(ck)
    rows = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    x = m.embed([5, -1, -2, -3, 7], rows)[0]
    table = ck.torch("model.embed_tokens.weight")
    assert torch.allclose(x[0], table[5] * 12.0) and torch.allclose(x[4], table[7] * 12.0)
    assert torch.equal(x[1:4], torch.from_numpy(rows))  # unscaled


# -- slicing and the prompt --------------------------------------------------------------------------------
@pytest.mark.parametrize("size,grid", [((448, 448), None), ((300, 200), None), ((896, 448), (2, 1)), ((1344, 896), (3, 2)),
                                       ((448, 1792), (1, 4)), ((4000, 300), (7, 1)), ((2000, 2000), (3, 3))])
def test_slice_grid(size, grid):
    assert img.get_sliced_grid(size, 448, 9) == grid


def test_slices_are_patch_multiples_and_normalized(tiny):
    from PIL import Image

    v = load(tiny["4.0"]).config.vision
    s = img.slice_image(Image.new("RGB", (1000, 700), (255, 0, 128)), v)
    assert s.grid == (2, 2) and len(s.slices) == 4
    for a in s.all:
        assert a.dtype == np.float32 and a.shape[0] == 3 and a.shape[1] % 14 == 0 and a.shape[2] % 14 == 0
    assert np.allclose(s.overview[0], 1.0) and np.allclose(s.overview[1], -1.0)  # (x/255 - 0.5) / 0.5


def test_placeholder_layouts(tiny):
    v4 = load(tiny["4.0"]).config.vision
    v2 = load(tiny["2.0"]).config.vision
    unk = "<unk>" * 64
    assert img.placeholder_text(v4, (2, 2)) == (f"<image_id>0</image_id><image>{unk}</image>"
                                                f"<slice>{unk}</slice><slice>{unk}</slice>\n<slice>{unk}</slice><slice>{unk}</slice>")
    assert img.placeholder_text(v2, (2, 1)) == f"<image>{unk}</image><slice><image>{unk}</image><image>{unk}</image></slice>"
    assert img.placeholder_text(v2, None) == f"<image>{unk}</image>"


def test_prompt_ids_place_image_rows(tiny):
    from edgepack.model.tokenizer import load_tokenizer
    from edgepack.runtime.vision import EncodedImage, prompt_with_images, user_content

    d = tiny["4.0"]
    ck = load(d)
    tok = load_tokenizer(d, bos_id=1, eos_ids=ck.config.eos_token_ids)
    v = ck.config.vision
    enc = EncodedImage(np.zeros((3, 64, 256), np.float32), (2, 1), 0.0)
    ids, rows = prompt_with_images(tok, v, [{"role": "user", "content": user_content("hi")}], [enc])
    assert rows.shape == (192, 256) and sorted(-1 - i for i in ids if i < 0) == list(range(192))
    first = ids.index(-1)
    assert tok.piece(ids[first - 1]) == "<image>" and tok.piece(ids[first + 64]) == "</image>"
    # <image_id>0</image_id> right before <image>; the digit's own pieces follow the tokenizer's rule for text
    # after a special piece (a dummy-prefix "▁" for sentencepiece, as llama.cpp and genai do)
    k = max(i for i in range(first) if tok.piece(ids[i]) == "<image_id>")
    assert tok.piece(ids[first - 2]) == "</image_id>"
    assert "".join(tok.piece(i) for i in ids[k + 1:first - 2]).lstrip("▁") == "0"
    assert [tok.piece(ids[first + k]) for k in (65, 130, 131)] == ["<slice>", "</slice>", "<slice>"]


def test_inspect_names_the_family_and_the_vision_half(tiny):
    from click.testing import CliRunner

    from edgepack.cli import main

    r = CliRunner().invoke(main, ["inspect", str(tiny["4.0"])])
    assert r.exit_code == 0, r.stderr
    assert "minicpmv" in r.stdout and "MiniCPM-V 4.0: SigLIP 2 layers" in r.stdout and "70x70" in r.stdout
