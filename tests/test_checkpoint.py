"""Checkpoint loading: formats, dtypes, validation, and never executing code from the model dir."""
import json
import shutil

import pytest
import torch

from edgepack.model.checkpoint import Checkpoint
from edgepack.model.families import read_config
from edgepack.errors import BadInput, ConfigError, IntegrityError, NotSupported
from edgepack.model.testmodels import make_tiny, tiny_config


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "bin", "sharded-bin"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_weight_formats_and_dtypes_load_the_same_tensors(tmp_path, fmt, dtype):
    ref = make_tiny(tmp_path / "ref", dtype=dtype, tokenizer=False)
    d = make_tiny(tmp_path / "x", dtype=dtype, fmt=fmt, tokenizer=False)
    a, b = Checkpoint(ref), Checkpoint(d)
    assert a.names == b.names
    for n in a.names:
        assert b.dtype(n) == dtype
        assert torch.equal(a.torch(n), b.torch(n)), n
        assert b.torch(n).dtype == torch.float32


@pytest.mark.parametrize("shape", ["mha", "gqa", "untied"])
def test_minicpm_shapes_load(tiny_dir, tiny_gqa_dir, tiny_untied_dir, shape):
    d = {"mha": tiny_dir, "gqa": tiny_gqa_dir, "untied": tiny_untied_dir}[shape]
    ck = Checkpoint(d)
    c = ck.config
    assert (c.num_key_value_heads < c.num_attention_heads) == (shape != "mha")
    assert c.tie_word_embeddings == (shape != "untied")
    assert ("lm_head.weight" in ck.names) == (shape == "untied")


def test_modeling_code_in_the_model_dir_is_never_executed(tmp_path, monkeypatch):
    from edgepack.model.reference import load_reference
    from edgepack.model.tokenizer import load_tokenizer

    d = make_tiny(tmp_path / "m")
    marker = tmp_path / "EXECUTED"
    code = f"open({str(marker)!r}, 'w').write('pwned')\n"
    for f in ("modeling_minicpm.py", "configuration_minicpm.py", "tokenization_minicpm.py", "__init__.py"):
        (d / f).write_text(code)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    monkeypatch.syspath_prepend(str(d))  # even with the directory importable
    model = load_reference(d)
    load_tokenizer(d).encode("hello")
    model(torch.tensor([[1, 5, 7]]))
    assert not marker.exists()


def _cfg_file(tmp_path, **changes):
    raw = tiny_config()
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    p = tmp_path / "config.json"
    p.write_text(json.dumps(raw))
    return p


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"])
def test_missing_config_field_is_one_clear_error(tmp_path, field):
    p = _cfg_file(tmp_path, **{field: None})
    with pytest.raises(ConfigError) as e:
        read_config(p)
    assert str(e.value) == f"{p}: field '{field}' is missing"


@pytest.mark.parametrize("changes,needle", [
    ({"hidden_size": "64"}, "field 'hidden_size' must be an integer"),
    ({"num_attention_heads": 5}, "field 'num_attention_heads' (5) must divide hidden_size (64)"),
    ({"num_key_value_heads": 3}, "field 'num_key_value_heads' (3) must divide num_attention_heads (4)"),
    ({"scale_emb": -1}, "field 'scale_emb' must be positive"),
    ({"tie_word_embeddings": "yes"}, "field 'tie_word_embeddings' must be true or false"),
    ({"eos_token_id": 5000}, "field 'eos_token_id' [5000] is outside the vocabulary"),
])
def test_inconsistent_config_names_the_field(tmp_path, changes, needle):
    p = _cfg_file(tmp_path, **changes)
    with pytest.raises(ConfigError) as e:
        read_config(p)
    assert needle in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("scaling", [{"type": "linear", "factor": 2.0}, {"type": "yarn", "factor": 4.0}])  # dynamic: test_minicpm_128k.py
def test_unimplemented_rope_scaling_is_not_supported(tmp_path, scaling):
    p = _cfg_file(tmp_path, rope_scaling=scaling)
    with pytest.raises(NotSupported, match="rope_scaling type .* is not supported"):
        read_config(p)


def test_tensor_shape_must_match_config(tmp_path):
    d = make_tiny(tmp_path / "m", tokenizer=False)
    raw = json.loads((d / "config.json").read_text())
    raw["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(BadInput, match=r"mlp.gate_proj.weight has shape \[160, 64\], but .*config.json implies \[96, 64\]"):
        Checkpoint(d)


def test_missing_and_unexpected_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    d = make_tiny(tmp_path / "m", tokenizer=False)
    sd = load_file(d / "model.safetensors")
    save_file({k: v for k, v in sd.items() if k != "model.norm.weight"}, d / "model.safetensors")
    with pytest.raises(BadInput, match="tensor model.norm.weight is missing"):
        Checkpoint(d)
    save_file(dict(sd, **{"model.extra.weight": torch.zeros(3)}), d / "model.safetensors")
    with pytest.raises(BadInput, match="unexpected tensor model.extra.weight"):
        Checkpoint(d)


def test_truncated_and_corrupt_safetensors(tmp_path):
    d = make_tiny(tmp_path / "m", tokenizer=False)
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(IntegrityError, match="truncated or corrupt safetensors"):
        Checkpoint(d)
    f.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(IntegrityError, match="corrupt safetensors header"):
        Checkpoint(d)


def test_pickle_with_code_is_refused(tmp_path):
    import os

    d = make_tiny(tmp_path / "m", fmt="bin", tokenizer=False)
    marker = tmp_path / "EXECUTED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model.embed_tokens.weight": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(IntegrityError, match="weights-only"):
        Checkpoint(d)
    assert not marker.exists()


def test_sharded_bin_index_names_missing_or_duplicate_shards(tmp_path):
    """pytorch_model.bin.index.json (transformers' layout for large .bin checkpoints): a shard it names must
    exist beside it, and a tensor may live in one shard only."""
    d = make_tiny(tmp_path / "m", fmt="sharded-bin", tokenizer=False)
    first, second = sorted(d.glob("pytorch_model-*.bin"))
    torch.save(dict(torch.load(first, weights_only=True), **torch.load(second, weights_only=True)), first)
    with pytest.raises(IntegrityError, match="appears in two shards"):
        Checkpoint(d)
    second.unlink()
    with pytest.raises(BadInput, match=f"shard {second.name} is missing"):
        Checkpoint(d)
    (d / "pytorch_model.bin.index.json").write_text("{not json")
    with pytest.raises(BadInput, match="not a valid PyTorch index"):
        Checkpoint(d)


def test_no_weights_and_no_dir(tmp_path):
    d = make_tiny(tmp_path / "m", tokenizer=False)
    (d / "model.safetensors").unlink()
    with pytest.raises(BadInput, match="no weights found"):
        Checkpoint(d)
    with pytest.raises(BadInput, match="model directory not found"):
        Checkpoint(tmp_path / "nope")
    shutil.rmtree(d)
