"""What a family adapter does with a key config.json leaves out (issue 24): it uses what the model's own
config class would (MiniCPM's remote MiniCPMConfig, transformers' LlamaConfig for MiniCPM5), or refuses.
MiniCPM's μP scalars are refused when missing: the model's own default (1) differs from every
published value, and a guess changes what the model computes without a word."""
import json
import subprocess
import sys

import pytest

from edgepack.errors import ConfigError, NotSupported
from edgepack.model.families import minicpm, minicpm3, minicpm5, parse_config
from edgepack.model.testmodels import make_tiny, tiny_config

# MiniCPMConfig.__init__'s defaults in the remote code MiniCPM checkpoints ship
# (github.com/OpenBMB/MiniCPM, model/configuration_minicpm.py): not importable here (remote code is
# never executed), so its values are written out; scale_emb, dim_model_base and scale_depth are 1 there.
MINICPM_CONFIG_DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                           "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True}

# each defaulted key -> the DecoderConfig field it fills
FIELD = {"max_position_embeddings": "max_position_embeddings", "rms_norm_eps": "rms_norm_eps",
         "rope_theta": "rope_theta", "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_ids",
         "tie_word_embeddings": "tie_word_embeddings"}


def _field(cfg, key):
    v = getattr(cfg, FIELD[key])
    return v[0] if key == "eos_token_id" else v


def test_every_default_is_listed():
    assert set(minicpm.DEFAULTS) == set(FIELD) == set(minicpm5.DEFAULTS) == set(minicpm3.DEFAULTS)


def test_minicpm3_defaults_are_minicpm3_configs():
    from transformers import MiniCPM3Config

    c = MiniCPM3Config()
    theirs = {k: getattr(c, k) for k in FIELD if k != "rope_theta"}
    theirs["rope_theta"] = c.rope_parameters["rope_theta"]
    assert minicpm3.DEFAULTS == theirs


def test_minicpm_defaults_are_minicpm_configs():
    assert minicpm.DEFAULTS == MINICPM_CONFIG_DEFAULTS


def test_minicpm5_defaults_are_llama_configs():
    from transformers import LlamaConfig

    c = LlamaConfig()
    theirs = {k: getattr(c, k) for k in FIELD if k != "rope_theta"}
    theirs["rope_theta"] = c.rope_parameters["rope_theta"]
    assert minicpm5.DEFAULTS == theirs


@pytest.mark.parametrize("family,module", [("minicpm", minicpm), ("minicpm4", minicpm), ("minicpm5", minicpm5),
                                           ("minicpm3", minicpm3)])
@pytest.mark.parametrize("key", sorted(FIELD))
def test_a_missing_key_takes_the_model_classs_default(family, module, key):
    raw = tiny_config(family=family, vocab_size=4096)
    raw.pop(key, None)
    if family == "minicpm4" and key == "max_position_embeddings":
        raw["rope_scaling"]["original_max_position_embeddings"] = 256
    assert _field(parse_config(raw), key) == module.DEFAULTS[key]


@pytest.mark.parametrize("family", ["minicpm", "minicpm4"])
@pytest.mark.parametrize("key", ["scale_emb", "dim_model_base", "scale_depth"])
def test_a_missing_mup_scalar_is_refused(family, key):
    raw = tiny_config(family=family)
    del raw[key]
    with pytest.raises(ConfigError, match=key):
        parse_config(raw)
    cfg = parse_config({**raw, "use_mup": False})  # without μP the scalars are unused: no need for them
    assert (cfg.embedding_scale, cfg.residual_scale, cfg.logit_scale) == (1.0, 1.0, 1.0)


def test_llama_rope_theta_in_rope_parameters():
    """transformers 5 saves RoPE as rope_parameters {rope_type, rope_theta} (no top-level rope_theta);
    LlamaConfig reads it there, and so must edgepack (it silently took 10000 before)."""
    raw = tiny_config(family="minicpm5")
    del raw["rope_theta"], raw["rope_scaling"]
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e6}
    assert parse_config(raw).rope.theta == 5e6
    raw["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e6, "factor": 8.0}
    with pytest.raises(NotSupported, match="llama3"):
        parse_config(raw)


def test_export_without_scale_emb_is_one_line_and_writes_nothing(tmp_path):
    d = tmp_path / "m"
    make_tiny(d)
    raw = json.loads((d / "config.json").read_text())
    del raw["scale_emb"]
    (d / "config.json").write_text(json.dumps(raw))
    r = subprocess.run([sys.executable, "-m", "edgepack", "export", "--int4", "--model", str(d), "--out",
                        str(tmp_path / "out"), "--fidelity-tokens", "8"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [f"edgepack: error: {d / 'config.json'}: field 'scale_emb' is missing "
                                     "(one of MiniCPM's three μP scalars; use_mup is on)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
