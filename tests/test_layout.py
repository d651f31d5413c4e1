"""The package reads like the pipeline: imports run down the stages, and no module imports another in a loop.

Stages, in order: model -> quant -> formats -> runtime -> bench, with the pipeline on top (export,
fidelity, verify, inspect, android, cli). errors.py is shared by all. Every import counts, including
the ones made inside a function (a lazy import still ties two modules together).
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "edgepack"
STAGES = {"errors": 0, "model": 1, "quant": 2, "formats": 3, "runtime": 4, "bench": 5}
TOP = 6  # export, fidelity, verify, inspect, android, cli, __main__
MAX_LINES = 500


def module_name(path, root=PKG):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path, root=PKG, unresolved=None):
    """{imported edgepack module} for one file: relative and absolute, at any depth of the file.
    An import of an edgepack module that does not exist goes into `unresolved` (a set), if given."""
    me = module_name(path, root)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    known = {module_name(p, root) for p in root.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == root.name}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != root.name:
                continue
            if mod not in known and unresolved is not None:
                unresolved.add(f"{me}: from {'.' * node.level}{node.module or ''} -> {mod}")
            for a in node.names:  # `from pkg import module` imports the module itself
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in found if m in known and m != me}


def graph(root=PKG):
    return {module_name(p, root): imports(p, root) for p in sorted(root.rglob("*.py"))}


def stage(mod):
    parts = mod.split(".")
    return STAGES.get(parts[1], TOP) if len(parts) > 1 else 0  # the package's own __init__ is shared


def upward(g):
    """Imports that run back up the stages: (importer, imported)."""
    return sorted((a, b) for a, deps in g.items() for b in deps if stage(b) > stage(a))


def cycles(g):
    """Every module that sits on an import loop, each loop named once by its strongly connected component."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_edgepack_import_names_a_module_that_exists():
    """A relative import that climbs one package too far still parses; it fails only when it runs."""
    missing = set()
    for p in PKG.rglob("*.py"):
        imports(p, unresolved=missing)
    assert missing == set()


def test_imports_run_down_the_stages():
    assert upward(graph()) == []


def test_no_module_imports_another_in_a_loop():
    assert cycles(graph()) == []


def test_the_runtime_reaches_neither_quant_nor_torch():
    """Everything the runtime can import, at any depth, stays clear of edgepack.quant, of torch and of the onnx
    package (the runtime runs graphs with onnxruntime; onnx is the writers')."""
    g, seen, todo = graph(), set(), [m for m in graph() if m.startswith("edgepack.runtime")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += g[m]
    assert not [m for m in seen if m.startswith("edgepack.quant")]
    torch_users = [m for m in seen if "torch" in _third_party(m)]
    assert torch_users == []
    assert [m for m in seen if "onnx" in _third_party(m)] == []


def _third_party(mod):
    path = PKG.parent / (mod.replace(".", "/") + ".py")
    if not path.is_file():
        path = PKG.parent / mod.replace(".", "/") / "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_every_stage_says_what_enters_and_leaves():
    for name in STAGES:
        if name != "errors":
            doc = ast.get_docstring(ast.parse((PKG / name / "__init__.py").read_text(encoding="utf-8")))
            assert doc and " in" in doc and "out" in doc, name


def test_no_file_is_over_500_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.fixture
def toy(tmp_path):
    """A package with one upward import (model -> runtime) and one loop (export <-> verify)."""
    root = tmp_path / "edgepack"
    for d in ("model", "runtime"):
        (root / d).mkdir(parents=True)
        (root / d / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "model" / "checkpoint.py").write_text("def f():\n    from ..runtime import backend\n")
    (root / "runtime" / "backend.py").write_text("from ..model.checkpoint import f\n")
    (root / "export.py").write_text("from . import verify\n")
    (root / "verify.py").write_text("def g():\n    from .export import x\n")
    (root / "runtime" / "meter.py").write_text("from ..backend import Backend\n")  # one dot too many
    return root


def test_the_checks_catch_an_upward_import_and_a_loop(toy):
    """The checks above can fail: on a toy package they find what was planted, lazy imports included."""
    g = graph(toy)
    assert ("edgepack.model.checkpoint", "edgepack.runtime.backend") in upward(g)
    assert ["edgepack.export", "edgepack.verify"] in cycles(g)
    assert ["edgepack.model.checkpoint", "edgepack.runtime.backend"] in cycles(g)
    missing = set()
    imports(toy / "runtime" / "meter.py", toy, missing)
    assert missing == {"edgepack.runtime.meter: from ..backend -> edgepack.backend"}
