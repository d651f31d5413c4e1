"""Bounded fuzzing of the strict readers: any input ends in success or edgepack's own clear error."""
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.errors import EdgepackError, IntegrityError
from edgepack.formats.gguf_reader import read_gguf_header
from edgepack.formats.manifest import read_manifest

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    w = gguf.GGUFWriter(str(path), "minicpm")
    w.add_block_count(1)
    w.add_token_list([b"<unk>", b"<s>", b"</s>", b"a"])
    w.add_chat_template("{{ messages }}")
    w.add_tensor("token_embd.weight", gguf.quants.quantize(np.ones((4, 32), np.float32), gguf.GGMLQuantizationType.Q4_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_the_valid_file_reads(small_gguf, tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(small_gguf)
    h = read_gguf_header(p)
    assert [t["name"] for t in h["tensors"]] == ["token_embd.weight", "output_norm.weight"]
    assert h["tensors"][0]["shape"] == [32, 4] and h["tensors"][0]["type"] == "Q4_0"


@pytest.mark.parametrize("cut", [3, 10, 30, 100, -1])
def test_truncated_gguf(small_gguf, tmp_path, cut):
    p = tmp_path / "t.gguf"
    p.write_bytes(small_gguf[:cut])
    with pytest.raises(IntegrityError, match="GGUF"):
        read_gguf_header(p)


def test_absurd_counts_and_dims(small_gguf, tmp_path):
    p = tmp_path / "a.gguf"
    p.write_bytes(small_gguf[:8] + struct.pack("<Q", 1 << 60) + small_gguf[16:])
    with pytest.raises(IntegrityError, match="absurd counts"):
        read_gguf_header(p)
    p.write_bytes(small_gguf[:16] + struct.pack("<Q", 1 << 62) + small_gguf[24:])
    with pytest.raises(IntegrityError, match="absurd counts"):
        read_gguf_header(p)
    i = small_gguf.index(b"token_embd.weight") + len(b"token_embd.weight")  # then n_dims, dims...
    p.write_bytes(small_gguf[: i + 4] + struct.pack("<Q", 1 << 50) + small_gguf[i + 12 :])
    with pytest.raises(IntegrityError, match="token_embd.weight"):
        read_gguf_header(p)


@FUZZ
@given(data=st.data())
def test_fuzz_gguf_mutations(small_gguf, tmp_path, data):
    buf = bytearray(small_gguf)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    p = tmp_path / "f.gguf"
    p.write_bytes(bytes(buf))
    try:
        read_gguf_header(p)
    except IntegrityError as e:
        assert str(p) in str(e) and "\n" not in str(e)


@FUZZ
@given(blob=st.binary(max_size=256))
def test_fuzz_gguf_random_bytes(tmp_path, blob):
    p = tmp_path / "r.gguf"
    p.write_bytes(b"GGUF" + blob)
    try:
        read_gguf_header(p)
    except IntegrityError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
manifest_like = st.fixed_dictionaries({}, optional={
    "schema": st.integers(-1, 3) | json_values, "edgepack_version": json_values, "model": json_values,
    "tokenizer": st.fixed_dictionaries({}, optional={"files": json_values, "kind": json_values}) | json_values,
    "artifacts": st.lists(st.fixed_dictionaries({}, optional={
        "format": st.sampled_from(["onnx", "gguf", "x"]) | json_values, "path": json_values,
        "files": st.lists(st.fixed_dictionaries({}, optional={
            "path": st.sampled_from(["onnx/model.onnx", "../etc/passwd", "/abs"]) | json_values,
            "bytes": json_values, "sha256": json_values}), max_size=3)}), max_size=3) | json_values})


@FUZZ
@given(m=manifest_like)
def test_fuzz_manifest_reader(tmp_path, m):
    (tmp_path / "edgepack.json").write_text(json.dumps(m))
    try:
        out = read_manifest(tmp_path)
    except EdgepackError as e:
        assert "edgepack.json" in str(e) and "\n" not in str(e)
    else:  # accepted: then it is structurally sound
        assert isinstance(out["schema"], int) and out["artifacts"]
        for a in out["artifacts"]:
            assert all(".." not in f["path"] and not f["path"].startswith("/") for f in a["files"])


@FUZZ
@given(blob=st.binary(max_size=200))
def test_fuzz_manifest_bytes(tmp_path, blob):
    (tmp_path / "edgepack.json").write_bytes(blob)
    with pytest.raises(EdgepackError):
        read_manifest(tmp_path)
