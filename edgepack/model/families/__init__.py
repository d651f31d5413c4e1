"""Model families as small registered adapters: config.json -> one canonical DecoderConfig.

A family is a module with NAME, MODELS (what it covers, for `inspect` and the README),
`recognises(raw) -> bool` and `parse(raw, path) -> DecoderConfig`. The first registered family
that recognises a config parses it (parse_config, read_config); everything downstream (reference, quant, writers, runtime)
reads only the DecoderConfig. Adding a family is one module here plus its tests.
"""
import json
from pathlib import Path

from ...errors import BadInput, NotSupported
from . import minicpm, minicpm3, minicpm4, minicpm5, minicpmv

# most specific first: MiniCPM4 is a `minicpm` config with LongRoPE
FAMILIES = (minicpm4, minicpm, minicpm5, minicpm3, minicpmv)


def recognise(raw):
    """The family module that recognises a config dict, or None."""
    return next((f for f in FAMILIES if f.recognises(raw)), None)


def parse_config(raw, path="config.json"):
    """A Hugging Face config dict -> the canonical DecoderConfig, through the family that recognises it."""
    fam = recognise(raw)
    if fam is None:
        kinds = ", ".join(f"{f.NAME} ({f.CONFIG})" for f in FAMILIES)
        model_type = raw.get("model_type")
        raise NotSupported(f"{path}: model_type '{model_type}' is not a MiniCPM family edgepack knows ({kinds})")
    return fam.parse(raw, path)


def by_name(name):
    return next(f for f in FAMILIES if f.NAME == name)


def read_config(path):
    """config.json -> the canonical DecoderConfig."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: config.json not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a JSON object at the top level")
    return parse_config(raw, path)
