"""The tokenizer for the app's picture turns: genai 0.15.2's Tokenizer, on a Model whose decoder an overlay
points at MiniCPM-V's small embedding.onnx, on the phone's exact engine (the cached venv of
test_genai_phone_engine.py: genai 0.15.2 + onnxruntime 1.29.0).

The picture loop runs vision.onnx and decoder_embeds.onnx with onnxruntime's own Java API; it still needs
token ids for the prompt text, and genai's Tokenizer only comes from a Model. Loading the Model on
model.onnx would load the decoder's weights a second time; with EMBED_OVERLAY genai loads only the
embedding graph (input_ids -> inputs_embeds; genai checks nothing more at load). Pinned here, for the tiny
MiniCPM-V 4.0 and 2.0 as int4 artifacts: the load works, and genai's ids for the prompt's text pieces
(the chat template's text split at the image mark) and for each placeholder marker equal edgepack's
tokenizer's, which is what edgepack's prompt_with_images builds the picture prompt from.
"""
import json

import pytest
from test_genai_phone_engine import THREADS, run_worker

from edgepack.export import export
from edgepack.model.image import IMAGE, IMAGE_END, IMAGE_ID, IMAGE_ID_END, SLICE, SLICE_END
from edgepack.model.testmodels import make_tiny_minicpmv
from edgepack.runtime import load
from edgepack.runtime.vision import MARK, marker_ids, user_content

EMBED_OVERLAY = '{"model":{"decoder":{"filename":"embedding.onnx"}}}'
QUESTION = "What is in this picture? 图片里有什么 café"
MARKERS = [IMAGE, IMAGE_END, SLICE, SLICE_END, IMAGE_ID, IMAGE_ID_END, "0", "1", "\n"]
MORE = ["Hello world", " leading space", "a\nb  c", "Describe it.\n\n"]


@pytest.fixture(scope="module", params=["4.0", "2.0"])
def art(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"mcv-{request.param}")
    src = make_tiny_minicpmv(d / "src", request.param)
    return export(str(src), out=d / "art", formats=("onnx",), method="rtn+emb8", fidelity_tokens=0, threads=THREADS)


def _edgepack_texts(art):
    with load(art, backend="onnx") as m:
        tk = m.tokenizer
        pieces = tk.render_chat([{"role": "user", "content": user_content(QUESTION)}]).split(MARK)
        texts = pieces + MARKERS + MORE
        return texts, [tk.encode(t, add_bos=False) for t in texts], [marker_ids(tk, s) for s in MARKERS], tk


def test_genai_tokenizer_through_the_embedding_overlay_gives_edgepacks_ids(art, tmp_path):
    texts, ours, markers, tk = _edgepack_texts(art)
    assert len(texts) == 2 + len(MARKERS) + len(MORE)  # one image mark: the text before it and after it
    result, out = run_worker(tmp_path, "tokenize", art, EMBED_OVERLAY, json.dumps(texts))
    assert result.returncode == 0, result.stderr[-4000:]
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert (res["genai"], res["onnxruntime"]) == ("0.15.2", "1.29.0")
    assert res["bos"] == tk.bos_id
    for text, theirs, mine in zip(texts, res["ids"], ours):
        assert theirs == mine, (text, theirs, mine)
    # the markers the placeholder is made of: a special token's own id, as marker_ids takes it
    for text, ids in zip(MARKERS[:6], markers[:6]):
        assert len(ids) == 1 and res["ids"][texts.index(text)] == ids


def test_the_overlay_really_moves_the_decoder(art, tmp_path):
    """The same call with the decoder pointed at a file that is not there fails: genai did open the
    overlay's file above, not model.onnx."""
    result, _ = run_worker(tmp_path, "tokenize", art, EMBED_OVERLAY.replace("embedding.onnx", "no-such.onnx"),
                           json.dumps(["x"]))
    assert result.returncode != 0
    assert "no-such.onnx" in result.stderr


def test_the_overlay_spares_the_decoder_weights_in_memory(tmp_path):
    """The memory cost, at a size where it shows: the demo int4 artifact (SmolLM2-135M, 98 MB of
    model.onnx.data) with an embedding.onnx cut from its model.onnx as a MiniCPM-V export cuts it
    (vision_onnx.split_embedding: the same initializers, in the same model.onnx.data). genai's Model +
    Tokenizer through the overlay must grow VmRSS by less than the model.onnx load does, minus half the
    weights. Measured here: +77 MB against +206 MB."""
    import onnx

    from edgepack.formats.vision_onnx import EMBEDDING_FILE, split_embedding

    art = export(model="demo", out=tmp_path / "demo-int4", formats=("onnx",), method="rtn+emb8", fidelity_tokens=0,
                 threads=THREADS)
    folder = art / "onnx"
    hidden = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["hidden_size"]
    emb, _ = split_embedding(onnx.load(str(folder / "model.onnx"), load_external_data=False), hidden)
    onnx.save_model(emb, str(folder / EMBEDDING_FILE))
    grew = {}
    for name, overlay in (("embedding", EMBED_OVERLAY), ("model", "{}")):
        (tmp_path / name).mkdir()
        result, out = run_worker(tmp_path / name, "tokenize", art, overlay, json.dumps([QUESTION]))
        assert result.returncode == 0, result.stderr[-4000:]
        res = json.loads((out / "result.json").read_text(encoding="utf-8"))
        grew[name] = (res["after_kb"]["VmRSS"] - res["before_kb"]["VmRSS"]) * 1024
        grew[name + "_ids"] = res["ids"]
    assert grew["embedding_ids"] == grew["model_ids"]
    weights = (folder / "model.onnx.data").stat().st_size
    assert grew["embedding"] < grew["model"] - weights // 2, (grew, weights)
