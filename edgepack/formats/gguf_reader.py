"""A strict GGUF header reader: checks every count, length, type and offset before trusting it.

Run before a GGUF is handed to llama.cpp (and by `inspect`), so a truncated, mislabeled or hostile
file gives one clear IntegrityError instead of a crash, a hang or a multi-GB allocation. Follows
the GGUF v2/v3 layout (magic, version, tensor count, kv count, key-values, tensor infos, aligned
data); quantization block sizes come from gguf-py's GGML_QUANT_SIZES, the one source of truth.
"""
import struct
from pathlib import Path

from ..errors import IntegrityError

MAGIC = b"GGUF"
# value type id -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
MAX_STRING = 1 << 24  # 16 MiB: longer than any real key, token or chat template
MAX_DIMS = 4


class _Cursor:
    def __init__(self, f, size, path):
        self.f, self.size, self.path = f, size, path

    def need(self, n, what):
        if n < 0 or self.f.tell() + n > self.size:
            raise IntegrityError(f"{self.path}: truncated or corrupt GGUF ({what} runs past the end of the file)")

    def unpack(self, fmt, what):
        n = struct.calcsize("<" + fmt)
        self.need(n, what)
        return struct.unpack("<" + fmt, self.f.read(n))[0]

    def string(self, what):
        n = self.unpack("Q", what)
        if n > MAX_STRING:
            raise IntegrityError(f"{self.path}: corrupt GGUF ({what} claims {n} bytes)")
        self.need(n, what)
        raw = self.f.read(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise IntegrityError(f"{self.path}: corrupt GGUF ({what} is not UTF-8)") from None


def read_gguf_header(path):
    """Validate a GGUF file; returns {"version", "metadata": {key: value (arrays as lengths)}, "tensors": [...]}."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: GGUF file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        c = _Cursor(f, size, path)
        c.need(4, "magic")
        if f.read(4) != MAGIC:
            raise IntegrityError(f"{path}: not a GGUF file (bad magic)")
        version = c.unpack("I", "version")
        if version not in (2, 3):
            raise IntegrityError(f"{path}: unsupported GGUF version {version}")
        n_tensors, n_kv = c.unpack("Q", "tensor count"), c.unpack("Q", "key-value count")
        # every tensor info needs >= 8+4+8+4+8 bytes and every kv >= 8+4+1: bound counts by file size
        if n_tensors * 32 > size or n_kv * 13 > size:
            raise IntegrityError(f"{path}: corrupt GGUF (absurd counts: {n_tensors} tensors, {n_kv} key-values)")
        meta = {}
        for i in range(n_kv):
            key = c.string(f"key {i}")
            if key in meta:
                raise IntegrityError(f"{path}: corrupt GGUF (duplicate key {key!r})")
            meta[key] = _value(c, c.unpack("I", f"type of {key}"), key)
        align = meta.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise IntegrityError(f"{path}: corrupt GGUF (general.alignment {align!r} is not a power of two)")
        tensors, names = [], set()
        for i in range(n_tensors):
            name = c.string(f"tensor name {i}")
            if name in names:
                raise IntegrityError(f"{path}: corrupt GGUF (duplicate tensor {name!r})")
            names.add(name)
            nd = c.unpack("I", f"dims of {name}")
            if not 1 <= nd <= MAX_DIMS:
                raise IntegrityError(f"{path}: corrupt GGUF (tensor {name} has {nd} dimensions)")
            dims = [c.unpack("Q", f"shape of {name}") for _ in range(nd)]
            t = c.unpack("I", f"type of {name}")
            try:
                qt = GGMLQuantizationType(t)
                block, block_bytes = GGML_QUANT_SIZES[qt]
            except (ValueError, KeyError):
                raise IntegrityError(f"{path}: corrupt GGUF (tensor {name} has unknown type {t})") from None
            n = 1
            for d in dims:
                if d == 0 or d > 1 << 40:
                    raise IntegrityError(f"{path}: corrupt GGUF (tensor {name} has dimension {d})")
                n *= d
            if n > size * 4 or dims[0] % block:
                raise IntegrityError(f"{path}: corrupt GGUF (tensor {name} shape {dims} does not fit the file or its {qt.name} blocks)")
            offset = c.unpack("Q", f"offset of {name}")
            if offset % align:
                raise IntegrityError(f"{path}: corrupt GGUF (tensor {name} offset {offset} is not aligned to {align})")
            tensors.append({"name": name, "shape": dims, "type": qt.name, "offset": offset, "bytes": n // block * block_bytes})
        data_start = -(-f.tell() // align) * align
        for t in tensors:
            if data_start + t["offset"] + t["bytes"] > size:
                raise IntegrityError(f"{path}: truncated GGUF (tensor {t['name']} data lies past the end of the file)")
    return {"version": version, "metadata": meta, "tensors": tensors, "data_offset": data_start}


def _value(c, vtype, key, depth=0):
    if vtype in _SCALARS:
        return c.unpack(_SCALARS[vtype], f"value of {key}")
    if vtype == _STRING:
        return c.string(f"value of {key}")
    if vtype == _ARRAY and depth == 0:
        etype, n = c.unpack("I", f"array type of {key}"), c.unpack("Q", f"array length of {key}")
        if etype in _SCALARS:
            width = struct.calcsize("<" + _SCALARS[etype])
            c.need(n * width, f"array {key}")
            c.f.seek(n * width, 1)
            return n
        if etype == _STRING:
            if n * 8 > c.size:
                raise IntegrityError(f"{c.path}: corrupt GGUF (array {key} claims {n} strings)")
            for j in range(n):
                c.string(f"{key}[{j}]")
            return n
    raise IntegrityError(f"{c.path}: corrupt GGUF (key {key!r} has invalid value type {vtype})")
