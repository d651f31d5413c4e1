"""Hugging Face hub ids as --model: a cache laid out as huggingface_hub lays it out, used offline and with
the hub unreachable; no `.py` from it is ever downloaded, copied or executed.

The CLI runs in subprocesses: huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_CACHE and HF_ENDPOINT at import.
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse
from types import SimpleNamespace

import pytest

from edgepack.model.testmodels import make_tiny

ROOT = Path(__file__).resolve().parents[1]
REPO = "openbmb/MiniCPM-tiny"
COMMIT = "6c2b1f0e9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
LFS = (".safetensors", ".bin", ".model")  # stored by sha256 like LFS files; the rest by git blob sha1
MODEL_CODE = "from pathlib import Path\nPath({marker!r}).write_text('executed: ' + __file__)\n"


def hf_cache(cache, repo_id, files, commit, tree_extra=()):
    """Write `files` ({name: bytes}) into `cache` as huggingface_hub's cache holds one snapshot of a repo:
    models--ORG--NAME/blobs/<etag>, snapshots/<commit>/<name> -> ../../blobs/<etag> (relative symlinks),
    refs/main holding the commit, and trees/<commit>.json, the tree listing huggingface_hub >= 1.x keeps
    (here listing `tree_extra` too: files of the repo this cache never downloaded)."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    blobs, snap = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    tree = {}
    for name, data in files.items():
        lfs = name.endswith(LFS)
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        etag = hashlib.sha256(data).hexdigest() if lfs else git_oid
        (blobs / etag).write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blobs / etag, link.parent))
        tree[name] = {"size": len(data), "blob_id": git_oid}
        if lfs:
            tree[name].update(lfs_sha256=etag, lfs_size=len(data))
    for name in tree_extra:
        tree[name] = {"size": 1, "blob_id": "0" * 40}
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}))
    return snap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache holding a tiny random MiniCPM as OpenBMB publishes one: config with auto_map, the
    remote-code files (each writes a marker if it is ever executed), weights and tokenizer."""
    base = tmp_path_factory.mktemp("hub")
    src = make_tiny(base / "src")
    marker = base / "EXECUTED"
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_minicpm.MiniCPMConfig",
                       "AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM"}
    files = {p.name: p.read_bytes() for p in src.iterdir() if p.is_file()}
    files["config.json"] = json.dumps(cfg, indent=2).encode()
    files["modeling_minicpm.py"] = MODEL_CODE.format(marker=str(marker)).encode()
    files["configuration_minicpm.py"] = MODEL_CODE.format(marker=str(marker)).encode()
    files["README.md"] = b"# MiniCPM-tiny\n"
    snap = hf_cache(base / "cache", REPO, files, COMMIT, tree_extra=["pytorch_model.bin", ".gitattributes"])
    return SimpleNamespace(base=base, cache=base / "cache", snapshot=snap, marker=marker, files=files)


class FakeHub:
    """The four hub routes huggingface_hub's snapshot_download uses (repo info, tree listing, HEAD and
    GET of /resolve/), serving one repo from memory on a local port; `requests` logs every path asked for."""

    def __init__(self, repo_id, commit, files):
        self.requests = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.answer(head=True)

            def do_GET(self):
                self.answer(head=False)

            def answer(self, head):
                path = urlparse(self.path).path
                hub.requests.append((self.command, path))
                api, resolve = f"/api/models/{repo_id}", f"/{repo_id}/resolve/{commit}/"
                code, headers = 200, [("Content-Type", "application/json")]
                if path in (api, f"{api}/revision/main"):
                    body = json.dumps({"id": repo_id, "sha": commit, "siblings": [{"rfilename": n} for n in files]})
                elif path == f"{api}/tree/{commit}":
                    body = json.dumps([{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                                       for n, d in files.items()])
                elif path.startswith(resolve) and path[len(resolve):] in files:
                    body = files[path[len(resolve):]]
                    headers = [("X-Repo-Commit", commit), ("ETag", f'"{hashlib.sha1(body).hexdigest()}"')]
                else:
                    kind = "RepoNotFound" if path.startswith("/api/models/") else "EntryNotFound"
                    code, body, headers = 404, "{}", [("X-Error-Code", kind)]
                body = body.encode() if isinstance(body, str) else body
                self.send_response(code)
                for k, v in headers + [("Content-Length", str(len(body)))]:
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed: connection refused


def edgepack(hub, *args, offline=False, endpoint=None, cache=None, cwd=None, timeout=300, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS_"))}
    e.update(PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
             HF_HOME=str(hub.base / "hf_home"), HF_HUB_CACHE=str(cache or hub.cache), HF_HUB_DISABLE_TELEMETRY="1",
             HF_ENDPOINT=endpoint or f"http://127.0.0.1:{closed_port()}", **env)  # never the real hub
    if offline:
        e["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "edgepack", *args], env=e, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_hub_ids_are_org_slash_name_unless_a_local_path_exists(tmp_path, monkeypatch):
    from edgepack.model.hub import is_hub_id

    assert is_hub_id("openbmb/MiniCPM5-2B") and is_hub_id("org/name.v2_x-y")
    for s in ("demo", "MiniCPM5-2B", "/abs/dir", "./org/name", "a/b/c", "org/..", "../name", "org/", "/name", "org/x.git"):
        assert not is_hub_id(s), s
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_hub_id("org/name")  # a local directory of that name wins


def test_inspect_offline_from_the_cache(hub):
    r = edgepack(hub, "inspect", REPO, "--json", offline=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert Path(info["path"]) == hub.snapshot and info["hub"] == {"id": REPO, "revision": COMMIT}
    assert info["config"]["hidden_size"] == 64
    r = edgepack(hub, "inspect", REPO, offline=True)
    assert r.returncode == 0 and f"({REPO} at {COMMIT[:12]})" in r.stdout.splitlines()[0]
    assert not hub.marker.exists()


def test_inspect_without_network_falls_back_to_the_cache(hub):
    """No offline flag; the hub refuses the connection (a closed port)."""
    r = edgepack(hub, "inspect", REPO, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hub"]["revision"] == COMMIT


def test_a_hub_that_never_answers_times_out_to_the_cache(hub):
    """The connection is accepted (the kernel's backlog) but nothing ever answers: huggingface_hub's
    client has no timeout of its own, so without edgepack's this would hang."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        r = edgepack(hub, "inspect", REPO, "--json", endpoint=f"http://127.0.0.1:{s.getsockname()[1]}",
                     HF_HUB_ETAG_TIMEOUT="1", timeout=60)  # a hang fails here instead of stalling the suite
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hub"]["revision"] == COMMIT


@pytest.mark.parametrize("offline", [True, False])
def test_a_model_not_in_the_cache_is_one_error_line(hub, tmp_path, offline):
    r = edgepack(hub, "export", "--model", "openbmb/MiniCPM5-2B", "--dtype", "fp32", "--format", "onnx",
                 "--fidelity-tokens", "0", offline=offline, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: openbmb/MiniCPM5-2B: ")
    assert "not in the Hugging Face cache" in lines[0] and "hf download openbmb/MiniCPM5-2B" in lines[0]
    assert ("HF_HUB_OFFLINE" in lines[0]) == offline and ("unreachable" in lines[0]) != offline
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_export_from_a_hub_id_copies_and_runs_no_python(hub, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = edgepack(hub, "export", "--model", REPO, "--dtype", "fp32", "--format", "onnx", "--fidelity-tokens", "0",
                 offline=True, cwd=work)
    assert r.returncode == 0, r.stderr
    art = work / "MiniCPM-tiny-fp32"  # the default name: the id's name part
    assert [p.name for p in work.iterdir()] == [art.name]
    files = sorted(str(p.relative_to(art)) for p in art.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".py", ".pyc"))], files
    assert sorted(f for f in files if f.startswith("tokenizer/")) == [
        "tokenizer/tokenizer.model", "tokenizer/tokenizer_config.json"]
    m = json.loads((art / "edgepack.json").read_text())
    assert m["model"]["source_hub"] == {"id": REPO, "revision": COMMIT}
    assert Path(m["model"]["source_path"]) == hub.snapshot.resolve()
    assert not hub.marker.exists()

    # verify by id, and after the cache moved (the recorded snapshot path is gone: found again by id + commit)
    r = edgepack(hub, "verify", str(art), "--model", REPO, "--tokens", "32", "--json", offline=True)
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "moved-cache"
    os.rename(hub.cache, moved)
    try:
        r = edgepack(hub, "verify", str(art), "--tokens", "32", offline=True, cache=moved)
        assert r.returncode == 0, r.stderr
        r = edgepack(hub, "verify", str(art), "--tokens", "32", offline=True, cache=tmp_path / "empty")
        assert r.returncode == 2 and f"{REPO}@{COMMIT}: no such directory" in r.stderr
    finally:
        os.rename(moved, hub.cache)
    assert not hub.marker.exists()


def test_download_fetches_only_config_tokenizer_and_one_set_of_weights(hub, monkeypatch):
    """Online: edgepack lists the repo, then hands huggingface_hub an allow list of data files and an
    ignore list of code; checked here with huggingface_hub's own pattern matching."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import filter_repo_objects

    from edgepack.model.checkpoint import load

    listing = [".gitattributes", "README.md", "config.json", "configuration_minicpm.py", "modeling_minicpm.py",
               "generation_config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.model",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "onnx/model.onnx",
               "sub/modeling_extra.py"]
    calls = []

    def repo_info(self, repo_id, revision=None, timeout=None, **kw):
        calls.append(("repo_info", repo_id, timeout))
        return SimpleNamespace(sha=COMMIT, siblings=[SimpleNamespace(rfilename=n) for n in listing])

    def snapshot_download(repo_id, **kw):
        calls.append(("snapshot_download", repo_id, kw))
        return str(hub.snapshot)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    ckpt = load(REPO)
    assert ckpt.path == hub.snapshot and (ckpt.hub.repo_id, ckpt.hub.revision) == (REPO, COMMIT)
    (_, _, timeout), (_, _, kw) = calls
    assert 0 < timeout <= 10 and not kw.get("local_files_only")
    assert "*.py" in kw["ignore_patterns"]
    got = set(filter_repo_objects(listing, allow_patterns=kw["allow_patterns"], ignore_patterns=kw["ignore_patterns"]))
    assert got == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
                   "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}
    assert not hub.marker.exists()


def test_weights_are_picked_like_the_loader_picks_them():
    from edgepack.model.hub import wanted_files

    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert wanted_files(["config.json", "model.safetensors.index.json", *shards, "pytorch_model.bin"]) == [
        "config.json", "model.safetensors.index.json", *shards]
    assert wanted_files(["config.json", "tokenizer.json", "pytorch_model.bin", "modeling.py"]) == [
        "config.json", "tokenizer.json", "pytorch_model.bin"]
    bins = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert wanted_files(["config.json", "pytorch_model.bin.index.json", *bins, "training_args.bin"]) == [
        "config.json", "pytorch_model.bin.index.json", *bins]
    assert wanted_files(["config.json", "modeling.py", "onnx/model.safetensors"]) is None


def test_online_download_fetches_no_python_and_the_cache_then_works_offline(hub, tmp_path):
    """The real huggingface_hub client against a local stand-in for the hub: edgepack asks it for the
    config, tokenizer and safetensors only; the snapshot it leaves serves the next run offline."""
    repo, files = "openbmb/MiniCPM-online", dict(hub.files)
    files.update({"pytorch_model.bin": b"never fetched", "onnx/model.onnx": b"never fetched", ".gitattributes": b""})
    server = FakeHub(repo, COMMIT, files)
    cache = tmp_path / "cache"
    try:
        r = edgepack(hub, "inspect", repo, "--json", endpoint=server.url, cache=cache)
        missing = edgepack(hub, "inspect", "openbmb/no-such-model", endpoint=server.url, cache=cache)
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("edgepack: error: openbmb/no-such-model: ") and "hub has no such model" in missing.stderr
    fetched = sorted({p.rsplit("/", 1)[1] for m, p in server.requests if "/resolve/" in p})
    assert fetched == ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"]
    snap = cache / "models--openbmb--MiniCPM-online" / "snapshots" / COMMIT
    assert sorted(p.name for p in snap.iterdir()) == fetched
    assert (cache / "models--openbmb--MiniCPM-online" / "refs" / "main").read_text() == COMMIT
    assert json.loads(r.stdout)["hub"] == {"id": repo, "revision": COMMIT}
    r = edgepack(hub, "inspect", repo, "--json", offline=True, cache=cache)
    assert r.returncode == 0, r.stderr
    assert not hub.marker.exists()
