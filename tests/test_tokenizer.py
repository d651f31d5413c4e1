"""Tokenizers: sentencepiece (byte fallback, bos) and tokenizer.json, chat templates, raw token bytes."""
import json

import pytest

from edgepack.model.tokenizer import MINICPM_CHAT_TEMPLATE, load_tokenizer

MIXED = "Hello world! 今天天气很好，我们去散步。量子纠缠 emoji 🙂"


def test_sentencepiece_roundtrip_with_bos_and_byte_fallback(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    assert tok.kind == "sentencepiece"
    ids = tok.encode(MIXED)
    assert ids[0] == tok.bos_id == 1
    assert any(tok.sp.IsByte(i) for i in ids)  # rare characters fall back to bytes
    text = tok.decode(ids)
    assert "量子纠缠" in text and "🙂" in text
    # token bytes join to exactly the decoded text (after sentencepiece's leading-space strip)
    assert b"".join(tok.token_bytes(i) for i in ids).decode("utf-8")[1:] == text


def test_minicpm_chat_template_is_the_default(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    assert tok.chat_template == MINICPM_CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "你好"}]
    assert tok.render_chat(msgs) == "<用户>你好<AI>"
    ids = tok.encode_chat(msgs)
    assert ids[0] == 1 and tok.sp.PieceToId("<用户>") in ids[1:3]  # after bos (and the dummy-prefix piece)
    assert ids[-1] == tok.sp.PieceToId("<AI>") != tok.sp.unk_id()


def test_chat_template_from_tokenizer_config(tmp_path, tiny_dir):
    import shutil

    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tiny_dir / f, tmp_path / f)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(tmp_path).render_chat([{"role": "user", "content": "hi"}]) == "[user]hi"


def test_tokenizer_json_demo(demo_dir):
    tok = load_tokenizer(demo_dir)
    assert tok.kind == "tokenizers"
    ids = tok.encode(MIXED)
    assert tok.decode(ids) == MIXED
    assert b"".join(tok.token_bytes(i) for i in ids).decode("utf-8") == MIXED
    chat = tok.encode_chat([{"role": "user", "content": "Hi"}])
    assert chat[0] == tok.bos_id and tok.piece(chat[0]) == "<|im_start|>"
    assert tok.render_chat([{"role": "user", "content": "Hi"}]).endswith("<|im_start|>assistant\n")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from edgepack.errors import BadInput

    with pytest.raises(BadInput, match="no tokenizer found"):
        load_tokenizer(tmp_path)


def test_ids_past_the_vocabulary_have_no_text(tiny_dir):
    """An embedding padded past the tokenizer (the random 2B shape) can emit such ids: decode and
    token_bytes drop them instead of raising, and agree with each other."""
    tok = load_tokenizer(tiny_dir)
    ids = tok.encode("Hello world", add_bos=False)
    past = [tok.vocab_size, tok.vocab_size + 7]
    assert tok.decode(ids[:1] + past + ids[1:]) == tok.decode(ids)
    assert all(tok.token_bytes(i) == b"" for i in past)
