"""`edgepack run` and `edgepack chat`: streaming, --json, the summary, errors, a piped chat."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import edgepack.runtime as runtime
from edgepack.cli import main
from edgepack.runtime import Backend, Model
from edgepack.model.tokenizer import load_tokenizer

JSON_KEYS = ["text", "tokens", "ttft_s", "prefill_tok_s", "decode_tok_s", "words_per_s", "cjk_chars_per_s",
             "speech_ratio", "backend", "drafted_tokens", "accepted_tokens", "verify_steps"]


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          input=stdin)


@pytest.fixture(scope="module")
def art(tiny_dir, tmp_path_factory):
    from edgepack.export import export

    return export(str(tiny_dir), out=tmp_path_factory.mktemp("cli") / "tiny", formats=("onnx", "gguf"),
                  fidelity_tokens=0, threads=1)


def test_run_json_is_one_object_with_the_interface_keys(art):
    # --no-speculate: the int4 text of two runs with speculation can differ at a near-tie (a verify's batched
    # kernels round differently, and the draft lengths follow timings); test_speculate.py pins what holds
    r = cli("run", art, "--prompt", "hello there", "--max-tokens", "12", "--threads", "1", "--json", "--no-speculate")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out) == JSON_KEYS and out["backend"] == "onnx" and out["tokens"] == 12  # random model: no eos
    assert out["drafted_tokens"] == out["accepted_tokens"] == 0
    with runtime.load(art, threads=1) as m:
        assert out["text"] == m.complete("hello there", max_new_tokens=12, speculate=False).text


def test_run_streams_text_and_prints_the_summary_on_stderr(art):
    r = cli("run", art, "-p", "hello there", "--max-tokens", "12", "--backend", "gguf", "--threads", "1", "--no-speculate")
    assert r.returncode == 0, r.stderr
    with runtime.load(art, backend="gguf", threads=1) as m:
        assert r.stdout == m.complete("hello there", max_new_tokens=12, speculate=False).text + "\n"
    summary = r.stderr.strip().splitlines()[-1]
    for part in ("12 tokens", "TTFT", "prefill", "decode", "tok/s", "× speech", "gguf"):
        assert part in summary


def test_run_stop_and_sampling_options(art):
    base = cli("run", art, "-p", "hi", "--max-tokens", "16", "--threads", "1", "--json", "--no-speculate")
    text = json.loads(base.stdout)["text"]
    stop = text[3:6]
    r = cli("run", art, "-p", "hi", "--max-tokens", "16", "--threads", "1", "--json", "--stop", stop, "--no-speculate")
    assert json.loads(r.stdout)["text"] == text[: text.index(stop)]
    args = ["run", art, "-p", "hi", "--max-tokens", "16", "--threads", "1", "--json", "--temperature", "1.0",
            "--top-k", "50", "--top-p", "0.9", "--repetition-penalty", "1.2", "--seed", "11", "--no-speculate"]
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0 and json.loads(a.stdout)["text"] == json.loads(b.stdout)["text"]


@pytest.mark.parametrize("args, msg", [
    (["-p", "word " * 400], "the prompt is"),
    (["-p", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["-p", "hi", "--temperature", "-1"], "temperature must be"),
])
def test_run_errors_are_one_line_exit_2(art, args, msg):
    r = cli("run", art, *args, "--threads", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("edgepack: error: ") and msg in r.stderr and len(r.stderr.splitlines()) == 1


def test_run_on_a_folder_that_is_not_an_artifact(tmp_path):
    r = cli("run", tmp_path, "-p", "hi")
    assert r.returncode == 2 and r.stderr.startswith("edgepack: error: ") and "edgepack.json" in r.stderr


def test_chat_piped_two_turns_then_exit(art):
    r = cli("chat", art, "--max-tokens", "6", "--threads", "1", stdin="hello\n\nand again\n/exit\nnot read\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2  # one line per reply (6 tokens of the random tiny model)
    assert len([ln for ln in r.stderr.splitlines() if "× speech" in ln]) == 2


# --- chat's history and Ctrl-C, on a fake backend --------------------------------------------------

class Scripted(Backend):
    """Emits `text`'s tokens then eos; raises KeyboardInterrupt on forward number `interrupt_at`."""

    name = "fake"

    def __init__(self, ids, vocab_size, interrupt_at=None):
        self.ids, self.vocab_size, self.n_ctx, self.interrupt_at = ids, vocab_size, 512, interrupt_at
        self.n_past = self.step = self.calls = 0

    def forward(self, tokens, all_logits=False):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.n_past += len(tokens)
        logits = np.zeros(self.vocab_size, np.float32)
        logits[(self.ids + [2])[min(self.step, len(self.ids))]] = 1
        self.step += 1
        return logits

    def reset(self):
        self.n_past = 0

    def close(self):
        pass


@pytest.fixture
def fake_chat(tiny_dir, monkeypatch):
    tok = load_tokenizer(tiny_dir)
    made, seen = [], []

    def fake_load(path, backend=None, threads=None, n_ctx=None):
        be = Scripted(tok.encode("the answer", add_bos=False), tok.vocab_size, interrupt_at=made.pop(0) if made else None)
        m = Model(be, tok)
        orig = m.generate

        def generate(*a, **kw):
            be.step = 0
            seen.append([dict(x) for x in kw["messages"]])
            return orig(*a, **kw)

        m.generate = generate
        return m

    monkeypatch.setattr(runtime, "load", fake_load)
    return made, seen


def test_chat_keeps_the_history(fake_chat):
    _, seen = fake_chat
    r = CliRunner().invoke(main, ["chat", "x", "--system", "be brief"], input="hi\nmore\n")  # EOF ends
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["the answer", "the answer"]
    assert seen[1] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "the answer"}, {"role": "user", "content": "more"}]


def test_ctrl_c_during_a_reply_stops_only_that_reply(fake_chat):
    made, seen = fake_chat
    made.append(3)  # prefill, one decode step, then Ctrl-C
    r = CliRunner().invoke(main, ["chat", "x"], input="first\nsecond\n/exit\n")
    assert r.exit_code == 0, r.output
    assert "[reply stopped]" in r.stderr
    assert r.stdout.splitlines()[-1] == "the answer"  # the next turn runs normally
    assert seen[1][1]["role"] == "assistant" and "the answer".startswith(seen[1][1]["content"])
