"""Hugging Face hub ids (`org/name`) as checkpoints, through huggingface_hub's cache.

`--model openbmb/MiniCPM5-2B` (export, inspect, verify) comes here when no local directory of that
name exists. With the hub reachable, only the files edgepack reads are downloaded: config, tokenizer
and one set of weights, never a `.py` (MiniCPM repos ship modeling_minicpm.py; edgepack never runs
model code). With HF_HUB_OFFLINE=1, or when the hub does not answer within a few seconds, the cached
snapshot is used; if there is none, one BadInput says how to get it. The cache is huggingface_hub's
own (HF_HUB_CACHE / HF_HOME), shared with transformers and `hf download`.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

# The non-weight files edgepack reads (config, generation defaults, tokenizer, chat template).
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja")
# Never fetched, whatever a listing holds (belt and braces: the allow list already names only data files).
NEVER = ["*.py", "*.pyc", "*.so", "*.sh"]
# Seconds to wait for the hub's first answer before falling back to the cache (huggingface_hub's own
# knob for metadata requests; its default is 10 s, and its HTTP client has no timeout at all).
DEFAULT_TIMEOUT = 5.0

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Snapshot:
    repo_id: str
    revision: str  # the commit hash of the snapshot (its folder name in the cache)
    path: Path


def is_hub_id(model):
    """True for `org/name` when no local path of that name exists (a local directory always wins)."""
    s = str(model)
    return bool(_ID.fullmatch(s)) and ".." not in s and not s.endswith(".git") and not Path(s).exists()


def wanted_files(names):
    """What to download from a repo listing: the config and tokenizer files it has plus one set of
    weights, in edgepack.model.checkpoint's order of preference (a repo with both safetensors and
    pytorch_model.bin gets only the safetensors). Top-level files only; None if no readable weights."""
    top = {n for n in names if "/" not in n}
    if "model.safetensors" in top:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in top:
        weights = ["model.safetensors.index.json"] + sorted(n for n in top if n.endswith(".safetensors"))
    elif "pytorch_model.bin" in top:
        weights = ["pytorch_model.bin"]
    elif "pytorch_model.bin.index.json" in top:
        weights = ["pytorch_model.bin.index.json"] + sorted(n for n in top if n.startswith("pytorch_model-") and n.endswith(".bin"))
    else:
        return None
    return [n for n in CONFIG_FILES if n in top] + weights


def resolve(repo_id, revision=None):
    """The local snapshot of `repo_id` (downloaded now if the hub is reachable) as a Snapshot."""
    import huggingface_hub as hf
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    at = f"@{revision}" if revision else ""
    fix = f"run once with network access, or fetch it with `hf download {repo_id}`"
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        try:
            info = hf.HfApi().repo_info(repo_id, revision=revision, timeout=_timeout())
        except GatedRepoError:
            why, fix = "the model is gated on the hub", "accept its terms on huggingface.co, then `hf auth login`"
        except RepositoryNotFoundError:
            why, fix = "the Hugging Face hub has no such model", "check the id (a private model needs `hf auth login`)"
        except RevisionNotFoundError:
            why, fix = f"the Hugging Face hub has no revision {revision}", "pass --model with the checkpoint's directory"
        except Exception as e:  # no network, DNS, timeout, proxy, 5xx: the cache decides
            why = f"the Hugging Face hub is unreachable ({type(e).__name__})"
        else:
            files = wanted_files([s.rfilename for s in (info.siblings or [])])
            if files is None:
                raise BadInput(f"{repo_id}{at}: no weights edgepack reads on the hub "
                               "(model.safetensors, a safetensors index, pytorch_model.bin or a .bin index)")
            try:
                path = hf.snapshot_download(repo_id, revision=revision, allow_patterns=files, ignore_patterns=NEVER)
            except Exception as e:
                raise BadInput(f"{repo_id}: download failed ({type(e).__name__}: {_short(e)}); "
                               "run the command again to resume it") from None
            return Snapshot(repo_id, Path(path).name, Path(path))
    try:  # the cache: find the snapshot (config.json must be there); Checkpoint checks the rest
        path = hf.snapshot_download(repo_id, revision=revision, local_files_only=True,
                                    allow_patterns=["config.json"], ignore_patterns=NEVER)
    except Exception:
        raise BadInput(f"{repo_id}{at}: no such directory, and not in the Hugging Face cache "
                       f"({constants.HF_HUB_CACHE}); {why}: {fix}") from None
    return Snapshot(repo_id, Path(path).name, Path(path))


def _timeout():
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT


def _short(e):
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
