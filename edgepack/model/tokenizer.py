"""Tokenizers and chat templates, without torch (the runtime imports this on the phone side).

Two kinds: a sentencepiece `tokenizer.model` (Llama-style, byte fallback, bos added; real
MiniCPM-2B/MiniCPM4 and the tiny test model) and a Hugging Face `tokenizer.json` (byte-level BPE:
the demo model's and MiniCPM5's, whose chat template lives in chat_template.jinja). `token_bytes` gives each token's raw UTF-8 bytes so a stream can be decoded incrementally
without ever cutting a character in half.
"""
import json
from pathlib import Path

from ..errors import BadInput

# MiniCPM's own chat format, used when tokenizer_config.json carries no template.
MINICPM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<用户>' + message['content'].strip() + '<AI>' }}"
    "{% else %}{{ message['content'].strip() }}{% endif %}"
    "{% endfor %}"
)
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


# MiniCPM5's tokenizer.json splits: digits in runs of 1-3, then this regex, then byte-level without a regex
# (llama.cpp's LLAMA_VOCAB_PRE_TYPE_MINICPM5 quotes the same two regexes from openbmb/MiniCPM5-1B)
MINICPM5_DIGITS = "\\p{N}{1,3}"
MINICPM5_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                  "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


class Tokenizer:
    kind = "?"

    def __init__(self, path, chat_template, bos_id, eos_ids, add_bos):
        self.path, self.chat_template = Path(path), chat_template
        self.bos_id, self.eos_ids, self.add_bos = bos_id, tuple(eos_ids), add_bos
        self._bytes = {}  # per instance, so closing a model frees it (no global cache)

    # subclasses: vocab_size, _encode(text) -> ids, decode(ids) -> str, _token_bytes(id), piece(id)
    def encode(self, text, add_bos=None):
        ids = self._encode(text)
        add = self.add_bos if add_bos is None else add_bos
        if add and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def render_chat(self, messages, add_generation_prompt=True):
        """The chat template applied to [{"role", "content"}, ...], as text."""
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # templates are untrusted text

        def raise_exception(msg):
            raise TemplateError(msg)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.special_text(self.bos_id), eos_token=self.special_text(self.eos_ids[0]))
        except TemplateError as e:
            raise BadInput(f"{self.path}: chat template failed: {e}") from None

    def encode_chat(self, messages, add_generation_prompt=True):
        text = self.render_chat(messages, add_generation_prompt)
        bos = self.special_text(self.bos_id)
        return self.encode(text, add_bos=self.add_bos and not (bos and text.startswith(bos)))

    def token_bytes(self, token_id):
        """Raw bytes this token contributes to the text (b"" for control tokens)."""
        b = self._bytes.get(token_id)
        if b is None:
            b = self._bytes[token_id] = self._token_bytes(token_id)
        return b

    def special_text(self, token_id):
        return "" if token_id is None else self.piece(token_id)


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path, model_file, chat_template, bos_id=None, eos_ids=None, add_bos=True):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(model_file))
        except (OSError, RuntimeError) as e:
            raise BadInput(f"{model_file}: not a valid sentencepiece model ({str(e).splitlines()[0][:120]})") from None
        bos = self.sp.bos_id() if bos_id is None else bos_id
        eos = [self.sp.eos_id()] if eos_ids is None else eos_ids
        super().__init__(path, chat_template, bos if bos >= 0 else None, eos, add_bos)
        self.files = ["tokenizer.model"]
        self._split = _user_defined_splitter(self.sp)

    @property
    def vocab_size(self):
        return self.sp.GetPieceSize()

    def _encode(self, text):
        """User-defined pieces (MiniCPM's <用户>, <AI>) are split out first and every text segment is
        encoded on its own, dummy prefix included: "<用户>Hello" is [<用户>, ▁Hello], as MiniCPM-2B's
        fine-tuning encoded marker and content separately, as llama.cpp's SPM tokenizer does (space
        prefix after a special piece) and as onnxruntime-genai does with the artifact's tokenizer.json.
        sentencepiece on the whole string would give [▁, <用户>, Hello] (tests/test_llama_format.py)."""
        if self._split is None:
            return self.sp.EncodeAsIds(text)
        ids = []
        for k, part in enumerate(self._split.split(text)):
            if k % 2:
                ids.append(self.sp.PieceToId(part))
            elif part:
                ids += self.sp.EncodeAsIds(part)
        return ids

    def decode(self, ids):
        # ids past the tokenizer have no text (as in _token_bytes); sentencepiece would raise on them
        return self.sp.DecodeIds([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    def piece(self, token_id):
        return self.sp.IdToPiece(int(token_id))

    def token_id(self, text):
        """The id of the piece spelled exactly `text` (a marker such as "<image>"), or None."""
        tid = self.sp.PieceToId(text)
        return None if tid == self.sp.unk_id() and text != self.sp.IdToPiece(tid) else tid

    def _token_bytes(self, token_id):
        # ids past the tokenizer (an embedding padded beyond it, as in the random 2B-shaped model) have no text
        if not 0 <= token_id < self.vocab_size or self.sp.IsControl(token_id) or self.sp.IsUnknown(token_id):
            return b""
        p = self.sp.IdToPiece(token_id)
        if self.sp.IsByte(token_id):
            return bytes([int(p[3:5], 16)])
        return p.replace("\u2581", " ").encode("utf-8")

    # sentencepiece drops the dummy-prefix space of the first piece when decoding
    strips_leading_space = True


class HFTokenizer(Tokenizer):
    kind = "tokenizers"
    strips_leading_space = False

    def __init__(self, path, json_file, chat_template, bos_id, eos_ids, add_bos=False):
        from tokenizers import Tokenizer as _T

        try:
            self.tk = _T.from_file(str(json_file))
        except Exception as e:
            raise BadInput(f"{json_file}: not a valid tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        super().__init__(path, chat_template, bos_id, eos_ids, add_bos)
        self.files = ["tokenizer.json"]
        # asked of the loaded tokenizer, not by parsing the 3.5 MB JSON again into Python objects: that
        # fragmented the heap so each load/close cycle kept ~0.5 MB (runtime RSS test)
        self._byte_level = type(self.tk.decoder).__name__ == "ByteLevel"
        added = self.tk.get_added_tokens_decoder()
        self._special = {i for i, t in added.items() if t.special}
        # non-special added tokens (MiniCPM5's <think>, </think>) are stored as plain text, not in the
        # byte-level alphabet: their bytes are the UTF-8 of the content, and they stream as text
        self._added_text = {i: t.content.encode("utf-8") for i, t in added.items() if not t.special}
        self._byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}

    @property
    def vocab_size(self):
        return self.tk.get_vocab_size(with_added_tokens=True)

    def _encode(self, text):
        return self.tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=True)

    def piece(self, token_id):
        return self.tk.id_to_token(int(token_id)) or ""

    def token_id(self, text):
        """The id of the token spelled exactly `text` (a marker such as "<image>"), or None."""
        return self.tk.token_to_id(text)

    def _token_bytes(self, token_id):
        if token_id in self._special:
            return b""
        if token_id in self._added_text:
            return self._added_text[token_id]
        p = self.tk.id_to_token(token_id) or ""
        if self._byte_level:
            return bytes(self._byte_decoder.get(c, 0) for c in p)
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            return bytes([int(p[3:5], 16)])
        return p.replace("\u2581", " ").encode("utf-8")


def _user_defined_splitter(sp):
    """A regex that splits text on the model's user-defined pieces (longest first), or None."""
    import re

    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # protobuf missing: sentencepiece's own handling
        return None
    m = pb.ModelProto()
    m.ParseFromString(sp.serialized_model_proto())
    pieces = sorted((p.piece for p in m.pieces if p.type == p.USER_DEFINED), key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, pieces)) + ")") if pieces else None


def _bytes_to_unicode():
    """GPT-2's reversible byte <-> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def load_tokenizer(path, bos_id=None, eos_ids=None):
    """Tokenizer from a model or artifact directory (tokenizer.model preferred, else tokenizer.json)."""
    d = Path(path)
    cfg_file = d / "tokenizer_config.json"
    tcfg = {}
    if cfg_file.is_file():
        try:
            tcfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadInput(f"{cfg_file}: not valid JSON ({e})") from None
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # HF allows named templates; take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str) or not template.strip():
        tf = d / "chat_template.jinja"
        template = tf.read_text(encoding="utf-8") if tf.is_file() else MINICPM_CHAT_TEMPLATE
    if (d / "tokenizer.model").is_file():
        add_bos = tcfg.get("add_bos_token", True)
        return SentencePieceTokenizer(d, d / "tokenizer.model", template, bos_id, eos_ids, add_bos=bool(add_bos))
    if (d / "tokenizer.json").is_file():
        add_bos = bool(tcfg.get("add_bos_token", False))
        tok = HFTokenizer(d, d / "tokenizer.json", template, bos_id, eos_ids or [], add_bos)
        if bos_id is None:
            tok.bos_id = _special_id(tok, tcfg.get("bos_token"))
        if not tok.eos_ids:
            eos = _special_id(tok, tcfg.get("eos_token"))
            tok.eos_ids = (eos,) if eos is not None else ()
        return tok
    raise BadInput(f"{d}: no tokenizer found (tokenizer.model or tokenizer.json)")


def _special_id(tok, value):
    if isinstance(value, dict):
        value = value.get("content")
    return tok.tk.token_to_id(value) if isinstance(value, str) else None
