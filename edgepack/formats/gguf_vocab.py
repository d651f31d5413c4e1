"""The GGUF's tokenizer keys: a sentencepiece vocab as tokenizer.ggml.model "llama", a byte-level BPE as
"gpt2" with the pre-tokenizer llama.cpp must use (chosen from tokenizer.json's own splits)."""
import json
from pathlib import Path

from ..errors import BadInput, NotSupported
from ..model.tokenizer import MINICPM5_DIGITS, MINICPM5_SPLIT


def add_tokenizer(w, ckpt):
    """Vocabulary, special ids and chat template, from the same files edgepack's tokenizer reads."""
    import gguf

    from ..model.tokenizer import load_tokenizer

    d, c = ckpt.path, ckpt.config
    tok = load_tokenizer(d, bos_id=c.bos_token_id, eos_ids=list(c.eos_token_ids))
    if tok.kind == "sentencepiece":
        tokens, scores, types = _spm_vocab(d)
        w.add_tokenizer_model("llama")
        special = gguf.SpecialVocab(d, load_merges=False, n_vocab=c.vocab_size)
        if (proto := _spm_proto(d / "tokenizer.model")) is not None:
            w.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix))
    else:
        tokens, types, pre = _bpe_vocab(d / "tokenizer.json")
        scores = None
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        special = gguf.SpecialVocab(d, load_merges=True, n_vocab=c.vocab_size)
    if len(tokens) > c.vocab_size:
        raise BadInput(f"{d}: the tokenizer has {len(tokens)} tokens but config.json vocab_size is {c.vocab_size}")
    for i in range(len(tokens), c.vocab_size):  # embedding rows past the tokenizer (as convert_hf_to_gguf)
        tokens.append(f"[PAD{i}]".encode())
        types.append(gguf.TokenType.UNUSED)
        if scores is not None:
            scores.append(-1000.0)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    # ids and flags as edgepack's tokenizer uses them (config.json wins), then the rest from the files
    special.special_token_ids["bos"] = tok.bos_id if tok.bos_id is not None else c.bos_token_id
    special.special_token_ids["eos"] = c.eos_token_ids[0]
    special.add_special_token["bos"] = bool(tok.add_bos)
    special.add_special_token.setdefault("eos", False)
    special.chat_template = tok.chat_template
    special.add_to_gguf(w, quiet=True)
    if len(c.eos_token_ids) > 1:
        w.add_eot_token_id(c.eos_token_ids[1])


def _spm_vocab(d):
    import gguf

    vocab = gguf.SentencePieceVocab(d)
    proto = _spm_proto(d / "tokenizer.model")
    user_defined = {i for i, p in enumerate(proto.pieces) if p.type == p.USER_DEFINED} if proto else set()
    tokens, scores, types = [], [], []
    for i, (text, score, ttype) in enumerate(vocab.all_tokens()):
        if i in user_defined:
            # MiniCPM's <用户>/<AI> are user-defined pieces: llama.cpp must split them out whole, as
            # sentencepiece does (gguf-py leaves them NORMAL; convert_hf_to_gguf marks them like this)
            ttype = gguf.TokenType.USER_DEFINED
        tokens.append(text)
        scores.append(score)
        types.append(ttype)
    return tokens, scores, types


def _spm_proto(model_file):
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # protobuf missing
        return None
    m = pb.ModelProto()
    m.ParseFromString(Path(model_file).read_bytes())
    return m



# tokenizer.json pre-tokenizer -> the llama.cpp pre-tokenizer with the same regex split
def _bpe_pre(spec, path):
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("use_regex", True)) for s in steps]
    if kinds == [("ByteLevel", True)]:
        return "gpt-2"  # GPT-2's regex, digits grouped
    regex = [(s.get("pattern") or {}).get("Regex") if s.get("type") == "Split" else None for s in steps]
    digits = regex[0] if regex else None
    if len(steps) == 2 and digits == "\\p{N}" and kinds[1] == ("ByteLevel", True):
        return "smollm"  # GPT-2's regex after splitting every digit (SmolLM's original tokenizer)
    if (len(steps) == 3 and regex[:2] == [MINICPM5_DIGITS, MINICPM5_SPLIT] and kinds[2] == ("ByteLevel", False)
            and all(s.get("behavior") == "Isolated" for s in steps[:2])):
        return "minicpm5"
    raise NotSupported(f"{path}: pre-tokenizer {json.dumps(pre)[:120]} has no llama.cpp equivalent edgepack knows")


def _bpe_vocab(path):
    import gguf

    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise NotSupported(f"{path}: only byte-level BPE tokenizer.json files can go into a GGUF")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    n = max(by_id) + 1
    tokens, types = [], []
    for i in range(n):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]".encode())
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(t.encode("utf-8"))
        a = added.get(i)
        types.append(gguf.TokenType.NORMAL if a is None else
                     gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED)
    return tokens, types, _bpe_pre(spec, path)
