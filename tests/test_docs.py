"""The docs stay readable and true: README.md is short, no text speaks of how or when it was written, every
relative link resolves, every benchmark script is listed, and the figures a test can check cheaply match
the code."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
MAX_SCRIPTS = 12


def doc_files(root=ROOT):
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# Phrases that describe how or when the text was made, not what the software does. Each is a whole word or
# phrase, chosen so that technical text does not trip it: "InferenceSession", a "session" fixture or an HTTP
# session do not match; "helper" only as a person (a helper module or function does not match).
HISTORY = [
    r"\b(this|that|the last|last|previous|earlier|next|a later|today's) session('s)?\b",
    r"\bsessions? (fixes|work)\b",
    r"\b(this|that|the|a|another|other|each|one|second|first) helpers?\b(?! (module|function|script|class|file|thread|process))",
    r"\bhelpers'",
    r"\bthis turn\b",  # "the next turn" of a chat is technical; "this turn" is how a text speaks of its making
    r"\bstop \d+\b",
    r"\bthe machine this was built on\b",
    r"\bdid not fit this\b",
    r"\bbefore (this|the) (fix|fixes|change|rewrite)\b",
]
DATE = r"\b20\d\d-\d\d-\d\d\b"


def history_hits(text, rules=HISTORY + [DATE]):
    hits = []
    for n, line in enumerate(text.splitlines(), 1):
        for rule in rules:
            m = re.search(rule, line, re.IGNORECASE)
            if m:
                hits.append(f"{n}: {m.group(0)!r} in {line.strip()[:100]}")
    return hits


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]" && pytest' in ci
    assert 'pip install -e ".[dev]" && pytest\n' in (ROOT / "README.md").read_text(encoding="utf-8")


OTHER_DOCS = [ROOT / "benchmarks" / "README.md", ROOT / "DEVELOPING.md", ROOT / "android_demo" / "README.md"]


@pytest.mark.parametrize("path", doc_files() + OTHER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_history_words(path):
    # benchmarks/README.md's decision log is dated on purpose: it is the record of when a question was settled.
    rules = HISTORY if path.parent.name == "benchmarks" else HISTORY + [DATE]
    hits = history_hits(path.read_text(encoding="utf-8"), rules)
    assert not hits, f"{path.relative_to(ROOT)} speaks of how it was made:\n" + "\n".join(hits)


def test_history_rules_catch_history_and_spare_technical_text():
    for bad in ("Before this session's fixes it peaked", "did not fit this session", "the helpers measured",
                "as of this turn", "see stop 30", "on the machine this was built on", "measured 2026-12-01"):
        assert history_hits(bad), bad
    for good in ("two onnxruntime InferenceSessions in one process", "a session-scoped fixture",
                 "the HTTP session times out", "a shared helper module", "session(", "the turn of a chat",
                 "the decoder stops at 2 tokens", "each live session's RunOptions", "the next turn prefills",
                 "the weather today", "a tensor helper for tests"):
        assert not history_hits(good), good


def code_files(root=ROOT):
    for sub, pattern in (("edgepack", "*.py"), ("benchmarks", "*.py"), ("tests", "*.py"), ("android_demo", "*.java"),
                         ("android_demo", "*.sh"), (".ci", "*")):
        yield from (p for p in sorted((root / sub).rglob(pattern)) if p.is_file() and p.name != "test_docs.py")


def test_no_history_words_in_code():
    """Comments and docstrings say what the code does, not how it came about (the same rules as the docs)."""
    hits = [f"{p.relative_to(ROOT)}:{h}" for p in code_files() for h in history_hits(p.read_text(encoding="utf-8"), HISTORY)]
    assert not hits, "\n".join(hits)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            out.add(slug(m.group(1)))
    return out


def broken_links(path):
    bad = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("path", doc_files() + OTHER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    bad = broken_links(path)
    assert not bad, f"{path.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_docs_exist_and_readme_links_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("models", "measurements", "phone", "images"):
        assert (ROOT / "docs" / f"{name}.md").is_file()
        assert f"(docs/{name}.md" in readme, name


def scripts(root=ROOT):
    """A benchmark script is a file benchmarks/*.py whose name does not start with '_' (those are shared
    modules the scripts import)."""
    return sorted(p.name for p in (root / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_at_most_12_benchmark_scripts():
    found = scripts()
    assert len(found) <= MAX_SCRIPTS, f"benchmarks/ holds {len(found)} scripts (at most {MAX_SCRIPTS}): {found}"


def test_every_benchmark_script_is_listed():
    listed = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    missing = [s for s in scripts() if f"`{s}" not in listed]
    assert not missing, f"benchmarks/README.md does not list {missing}"


def test_families_count_matches_docs():
    families = sorted(p.stem for p in (ROOT / "edgepack" / "model" / "families").glob("*.py")
                      if p.stem != "__init__")
    models = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    m = re.search(r"edgepack has (\d+) families:\s+([^.]+)\.", models)
    assert m, "docs/models.md does not say how many families edgepack has"
    assert int(m.group(1)) == len(families), (m.group(1), families)
    assert sorted(re.findall(r"`(\w+)`", m.group(2))) == families
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{len(families)} families" in readme


def test_fidelity_window_matches_docs():
    from edgepack import fidelity

    text = (ROOT / "docs" / "measurements.md").read_text(encoding="utf-8")
    m = re.search(r"at most (\d+) tokens; the manifest records the window", text)
    assert m, "docs/measurements.md does not state the fidelity window"
    assert int(m.group(1)) == fidelity.MAX_WINDOW
    assert f"{fidelity.DEFAULT_TOKENS} tokens" in text


def test_demo_export_sizes_match_docs(demo_art):
    """docs/models.md states the demo export's file sizes; an export of the demo (the suite's shared one,
    default methods) has them."""
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    stated = dict(re.findall(r"`(?:onnx|gguf)/([\w.-]+)` of ([\d.]+) MiB", text))
    assert set(stated) == {"model.onnx.data", "model-Q4_0.gguf"}, stated
    for name, mib in stated.items():
        [path] = list(demo_art.rglob(name))
        assert abs(path.stat().st_size / 2**20 - float(mib)) < 0.01, (name, path.stat().st_size / 2**20, mib)


RESULT = re.compile(r"`(?:benchmarks/results/|results/)?([\w.-]+\.json)`")
CPUS = {"Intel Xeon": "Xeon", "AMD EPYC": "EPYC"}


def result_cpu(name):
    import json

    d = json.loads((ROOT / "benchmarks" / "results" / name).read_text(encoding="utf-8"))
    m = d.get("machine") or d.get("host") or {}
    return m.get("cpu") if isinstance(m, dict) else None


def test_result_files_named_in_docs_exist():
    texts = [p.read_text(encoding="utf-8") for p in doc_files() + [ROOT / "benchmarks" / "README.md"]]
    names = {n for t in texts for n in RESULT.findall(t)} - {"edgepack.json", "genai_config.json", "config.json", "tokenizer.json"}
    missing = sorted(n for n in names if not (ROOT / "benchmarks" / "results" / n).is_file())
    assert not missing, f"named in the docs, not in benchmarks/results/: {missing}"


def cpu_claims(text, default=None):
    """(CPU named, result file) for each result file the text cites: the CPU its table row or paragraph
    names, else the one the paragraph before a table names, else `default` (measurements.md's opening
    sentence: a figure comes from the Xeon unless its row names another)."""
    before = ""
    for para in re.split(r"\n\s*\n", text):
        rows = para.splitlines() if para.lstrip().startswith("|") else [para]
        for row in rows:
            named = [cpu for cpu in CPUS if cpu in row] or [cpu for cpu in CPUS if cpu in before] or \
                ([default] if default else [])
            if len(named) == 1:
                for name in RESULT.findall(row):
                    if (ROOT / "benchmarks" / "results" / name).is_file():
                        yield named[0], name
        before = para


def test_cpu_named_beside_a_result_is_the_cpu_it_ran_on():
    wrong = []
    for path in doc_files() + [ROOT / "benchmarks" / "README.md"]:
        default = "Intel Xeon" if path.name == "measurements.md" else None
        for cpu, name in cpu_claims(path.read_text(encoding="utf-8"), default):
            ran = result_cpu(name)
            if ran and CPUS[cpu] not in ran:
                wrong.append(f"{path.relative_to(ROOT)}: {name} says {cpu}, ran on {ran}")
    assert not wrong, "\n".join(wrong)


def test_cpu_check_catches_a_wrong_cpu():
    [(cpu, name)] = list(cpu_claims("Intel Xeon, 2 cores: `gguf_kquant_demo.json`"))
    assert CPUS[cpu] not in result_cpu(name)
    [(cpu, name)] = list(cpu_claims("On an AMD EPYC:\n\n| a | b |\n|---|---|\n| x | `bench_2b.json` |"))
    assert CPUS[cpu] not in result_cpu(name)
    [(cpu, name)] = list(cpu_claims("no CPU named: `check_arm_demo_gguf_phone_256.json`", default="Intel Xeon"))
    assert CPUS[cpu] not in result_cpu(name)
