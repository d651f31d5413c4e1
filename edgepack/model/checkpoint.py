"""Load a MiniCPM Hugging Face directory without executing anything from it.

config.json is parsed by edgepack.model.config; weights come from model.safetensors, a sharded
safetensors index, pytorch_model.bin or a sharded pytorch_model.bin index (torch.load with
weights_only=True and mmap), one tensor at a time. Python files in the directory (hub checkpoints ship modeling_minicpm.py) are never
imported: nothing here calls transformers' Auto* classes or trust_remote_code.
"""
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import BadInput, IntegrityError
from .config import MiniCPMConfig, vision_shapes
from .families import read_config
from .files import file_sha256

# Buffers some old pytorch_model.bin files carry; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def expected_shapes(cfg: MiniCPMConfig):
    """Every tensor a MiniCPM checkpoint must hold, by Hugging Face name, with its shape."""
    H, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    shapes = {"model.embed_tokens.weight": (V, H)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes.update({p + k: v for k, v in attention_shapes(cfg).items()})
        shapes.update({
            p + "post_attention_layernorm.weight": (H,),
        })
        if cfg.num_experts:  # router, then each expert's gate (w1), down (w2), up (w3): the checkpoint's order
            shapes[p + "mlp.gate.weight"] = (cfg.num_experts, H)
            for j in range(cfg.num_experts):
                e = f"{p}mlp.experts.{j}."
                shapes.update({e + "w1.weight": (F, H), e + "w2.weight": (H, F), e + "w3.weight": (F, H)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
                           p + "mlp.down_proj.weight": (H, F)})
    shapes["model.norm.weight"] = (H,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, H)
    return shapes


def attention_shapes(cfg: MiniCPMConfig):
    """One layer's attention tensors (names under self_attn.), in the order the writers consume them."""
    H, hd, n = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads
    if cfg.attention == "mla":  # MiniCPM3: q and kv through low-rank bottlenecks (edgepack.families.minicpm3)
        r = cfg.rope_dim
        return {
            "self_attn.q_a_proj.weight": (cfg.q_lora_rank, H),
            "self_attn.kv_a_proj_with_mqa.weight": (cfg.kv_lora_rank + r, H),
            "self_attn.q_a_layernorm.weight": (cfg.q_lora_rank,),
            "self_attn.q_b_proj.weight": (n * hd, cfg.q_lora_rank),
            "self_attn.kv_a_layernorm.weight": (cfg.kv_lora_rank,),
            "self_attn.kv_b_proj.weight": (n * (hd - r + cfg.v_head_dim), cfg.kv_lora_rank),
            "self_attn.o_proj.weight": (H, n * cfg.v_head_dim),
        }
    q, kv = n * hd, cfg.num_key_value_heads * hd
    return {"self_attn.q_proj.weight": (q, H), "self_attn.k_proj.weight": (kv, H),
            "self_attn.v_proj.weight": (kv, H), "self_attn.o_proj.weight": (H, q)}


class Checkpoint:
    """A MiniCPM checkpoint directory: config, tokenizer files and lazily read weights."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadInput(f"{self.path}: model directory not found")
        self.config = read_config(self.path / "config.json")
        self._where = {}  # tensor name -> file holding it
        self._shape, self._dtype = {}, {}
        self._open = {}
        self._src = {}  # canonical name -> name in the file, where they differ (MiniCPM-V's `llm.` prefix)
        self._index_weights()
        if self.config.vision is not None:
            self._unprefix("llm.")
        self._check_tensors()

    # -- discovery -------------------------------------------------------------------------
    def _index_weights(self):
        d = self.path
        if (d / "model.safetensors").is_file():
            files = [d / "model.safetensors"]
        elif (d / "model.safetensors.index.json").is_file():
            files = _shards(d / "model.safetensors.index.json", "safetensors")
        elif (d / "pytorch_model.bin").is_file():
            self._index_bin(d / "pytorch_model.bin")
            return
        elif (d / "pytorch_model.bin.index.json").is_file():
            for f in _shards(d / "pytorch_model.bin.index.json", "PyTorch"):
                self._index_bin(f)
            return
        else:
            raise BadInput(f"{d}: no weights found (model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                           "or pytorch_model.bin.index.json)")
        for f in files:
            for name, (dtype, shape) in _safetensors_header(f).items():
                if name in self._where:
                    raise IntegrityError(f"{f}: tensor {name} appears in two shards")
                self._where[name], self._dtype[name], self._shape[name] = f, dtype, tuple(shape)

    def _index_bin(self, f):
        import pickle

        import torch

        try:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old (non-zip) serialization cannot be memory-mapped
            try:
                sd = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:
                raise IntegrityError(f"{f}: cannot be read as a weights-only PyTorch file ({_short(e)})") from None
        except (pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
            raise IntegrityError(f"{f}: cannot be read as a weights-only PyTorch file ({_short(e)})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise IntegrityError(f"{f}: expected a dict of tensors")
        self._bin = getattr(self, "_bin", {})
        for name, t in sd.items():
            if name in self._where:
                raise IntegrityError(f"{f}: tensor {name} appears in two shards")
            self._bin[name] = t
            self._where[name], self._dtype[name], self._shape[name] = f, str(t.dtype).removeprefix("torch."), tuple(t.shape)

    def _unprefix(self, prefix):
        """MiniCPM-V keeps its LLM under `llm.`: index those tensors by their canonical (LLM) names."""
        for stored in [n for n in self._where if n.startswith(prefix)]:
            name = stored[len(prefix):]
            for d in (self._where, self._shape, self._dtype):
                d[name] = d.pop(stored)
            self._src[name] = stored

    def _vision_want(self):
        """{stored name: shape} of the vision tensors (2.0's timm layout fuses q|k|v and keeps pos_embed 3-D)."""
        from .families import by_name

        v, want = self.config.vision, {}
        shapes = vision_shapes(v)
        for canon, (stored, part) in by_name(self.config.family).vision_sources(v).items():
            shape = shapes[canon]
            if part is not None:
                shape = (3 * shape[0], *shape[1:])
            elif stored == "vpm.pos_embed":
                shape = (1, *shape)
            want[stored] = shape
        return want

    def _ignored_vision(self, name):
        """Tensors of MiniCPM-V's tower that never run: blocks past drop_vision_last_layer, timm's pooling head."""
        import re

        m = re.match(r"vpm\.(?:blocks|encoder\.layers)\.(\d+)\.", name)
        return bool(m and int(m.group(1)) >= self.config.vision.num_hidden_layers) or \
            name.startswith(("vpm.attn_pool.", "vpm.fc_norm.", "vpm.head."))

    def _check_tensors(self):
        want = expected_shapes(self.config)
        if self.config.vision is not None:
            want = {**want, **self._vision_want()}
        cfg_file = self.path / "config.json"
        for name, shape in want.items():
            if name not in self._where:
                raise BadInput(f"{self.path}: tensor {name} is missing from the weights")
            if self._shape[name] != shape:
                raise BadInput(f"{self._where[name]}: tensor {name} has shape {list(self._shape[name])}, "
                               f"but {cfg_file} implies {list(shape)}")
        extra = [n for n in self._where if n not in want and not n.endswith(_IGNORED_SUFFIXES)
                 and not (n == "lm_head.weight" and self.config.tie_word_embeddings)
                 and not (self.config.vision is not None and self._ignored_vision(n))]
        if extra:
            raise BadInput(f"{self._where[extra[0]]}: unexpected tensor {extra[0]} for a MiniCPM model")
        for name in want:
            if self._dtype[name] not in ("float32", "float16", "bfloat16", "F32", "F16", "BF16"):
                raise BadInput(f"{self._where[name]}: tensor {name} has dtype {self._dtype[name]}; expected bf16, fp16 or fp32")

    # -- access ----------------------------------------------------------------------------
    @property
    def names(self):
        return list(expected_shapes(self.config))

    def shape(self, name):
        return self._shape[name]

    def dtype(self, name):
        return {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(self._dtype[name], self._dtype[name])

    def torch(self, name):
        """One tensor as float32 torch.Tensor (read from disk now, not cached)."""
        import torch

        return self.stored(name).to(torch.float32)

    def stored(self, name):
        """One tensor in its stored dtype (bf16/fp16/fp32), read now: writers that quantize in row
        chunks convert one chunk at a time (a 2B embedding is 1.13 GB as float32, 0.57 GB as bf16)."""
        f = self._where[name]
        name = self._src.get(name, name)
        if f.suffix == ".bin":
            return self._mapped_bin()[name].clone()
        from safetensors import SafetensorError, safe_open

        if f not in self._open:
            try:
                self._open[f] = safe_open(str(f), framework="pt")
            except SafetensorError as e:
                raise IntegrityError(f"{f}: corrupt safetensors file ({e})") from None
        try:
            return self._open[f].get_tensor(name)
        except Exception as e:
            raise IntegrityError(f"{f}: cannot read tensor {name} ({_short(e)})") from None

    def _mapped_bin(self):
        if self._bin is None:  # mapped again after release(): the pages read before are no longer ours
            import torch

            self._bin = {}
            for b in sorted({w for w in self._where.values() if w.suffix == ".bin"}):
                try:
                    self._bin.update(torch.load(b, map_location="cpu", weights_only=True, mmap=True))
                except RuntimeError:  # old (non-zip) serialization: read whole, as _index_bin did
                    self._bin.update(torch.load(b, map_location="cpu", weights_only=True))
        return self._bin

    def rows(self, name, index):
        """Rows of a 2-D tensor as float32 (calibration's token embeddings): the table itself is never
        made float32 (MoE-8x2B's is 1.13 GB so; a memory-mapped .bin reads only the rows' pages)."""
        import torch

        if self._where[name].suffix == ".bin":
            return self._mapped_bin()[self._src.get(name, name)][index].to(torch.float32)
        return self.stored(name)[index].to(torch.float32)

    def numpy(self, name):
        """One tensor as a float32 numpy array."""
        return self.torch(name).numpy()

    def vision(self, name):
        """One canonical vision tensor (edgepack.model.config.vision_shapes) as float32 torch.Tensor."""
        from .families import by_name

        stored, part = by_name(self.config.family).vision_sources(self.config.vision)[name]
        t = self.torch(stored)
        if part is not None:
            t = t.chunk(3, 0)[part].contiguous()
        elif stored == "vpm.pos_embed":
            t = t[0]
        return t

    def weights_sha256(self):
        """sha256 over the weight files, in name order (the manifest's source identity)."""
        import hashlib

        h = hashlib.sha256()
        for f in sorted(set(self._where.values())):
            h.update(f.name.encode())
            h.update(file_sha256(f).encode())
        return h.hexdigest()

    def close(self):
        """Let go of the mapped files (safetensors handles, the mmapped .bin): every page read so far
        stops counting in RSS. Reading a tensor afterwards maps the file again."""
        self._open.clear()
        self._bin = None

    release = close  # what the writers call between tensors or layers of a large checkpoint


_ST_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _shards(idx_path, kind):
    """The shard files a transformers index (weight_map: tensor -> file) names, each a file beside it."""
    d = idx_path.parent
    try:
        wm = json.loads(idx_path.read_text())["weight_map"]
        files = sorted({d / f for f in wm.values()})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{idx_path}: not a valid {kind} index ({e})") from None
    for f in files:
        if not f.is_file() or f.parent != d:
            raise BadInput(f"{idx_path}: shard {f.name} is missing")
    return files


def _safetensors_header(f):
    """Parse and validate a safetensors header before trusting any offset in it."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise IntegrityError(f"{f}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise IntegrityError(f"{f}: corrupt safetensors header (header length {n} exceeds the file)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{f}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{f}: corrupt safetensors header")
    header.pop("__metadata__", None)
    data_len, out = size - 8 - n, {}
    for name, info in header.items():
        try:
            dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
            need = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"{f}: corrupt safetensors header entry for {name}") from None
        if not (0 <= lo <= hi <= data_len) or hi - lo != need:
            raise IntegrityError(f"{f}: truncated or corrupt safetensors file (tensor {name} lies outside the data)")
        out[name] = (dtype, shape)
    return out


def _short(e):
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def load(path, revision=None):
    """Open a MiniCPM checkpoint directory ("demo" names the embedded demo model; `org/name`, when no
    such directory exists, a Hugging Face hub id resolved through its cache by edgepack.model.hub)."""
    from . import hub

    snapshot = None
    if str(path) == "demo":
        from .demo import demo_checkpoint_dir

        path = demo_checkpoint_dir()
    elif str(path) == "demo-llama":  # the demo in its original Llama layout (the MiniCPM5 family's path)
        from .demo import demo_llama_checkpoint_dir

        path = demo_llama_checkpoint_dir()
    elif hub.is_hub_id(path):
        snapshot = hub.resolve(str(path), revision)
        path = snapshot.path
    ckpt = Checkpoint(path)
    ckpt.hub = snapshot  # where it came from, for the manifest (None for a directory)
    return ckpt
