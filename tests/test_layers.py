"""segdash's modules import one way only: no cycle, and no import of a higher layer.

Every import counts, also those inside functions and under ``if TYPE_CHECKING``: a lazy
import hides a dependency, it does not remove it. The layers are the module map of
docs/development.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first; a module may import its own layer and those before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("segdash._version", "segdash.errors", "segdash.classes",
                     "segdash.strokes", "segdash.history", "segdash.parallel",
                     "segdash.sandbox")),
    ("array kernels", ("segdash.codes", "segdash.filters")),
    ("contract", ("segdash.contract",)),
    ("registry", ("segdash.registry",)),
    ("families and entries", ("segdash.features", "segdash.features.basic",
                              "segdash.features.basic_kernels", "segdash.classifiers")),
    ("model parts", ("segdash.stack", "segdash.treewalk", "segdash.postprocess")),
    ("model files", ("segdash.modelfile",)),
    ("model", ("segdash.model", "segdash.importance")),
    ("io", ("segdash.io", "segdash.io.read", "segdash.io.naming", "segdash.io.write",
            "segdash.io.render", "segdash.io.sources", "segdash.io.pyramid")),
    ("tiling", ("segdash.tiling", "segdash.ondemand")),
    ("project", ("segdash.project",)),
    ("session", ("segdash.segmenter",)),
    ("batch", ("segdash.batch", "segdash.batch.plan", "segdash.batch.runner")),
    ("applications", ("segdash", "segdash.testing", "segdash.plugins_report", "segdash.cli",
                      "segdash.ui", "segdash.ui.*")),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement.

    Relative imports are resolved; ``from pkg import name`` counts ``pkg.name`` when that
    is a module, else ``pkg``. A package's ``__init__`` run implicitly by importing one of
    its modules is not counted (import-linter's convention).
    """
    root = package_dir.parent
    files = {module_name(p, root): p for p in package_dir.rglob("*.py")}
    top = package_dir.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    targets.append(sub if sub in files else src)
            for t in targets:
                if t == top or t.startswith(top + "."):
                    # `import a.b.c` depends on the deepest module that exists
                    while t not in files and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t != mod:
                        graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if module == m or (m.endswith(".*") and module.startswith(m[:-1])):
                return i
    raise KeyError(module)


def test_segdash_has_no_import_cycle_counting_imports_inside_functions():
    found = cycles(import_graph(ROOT / "segdash"))
    assert found == [], f"import cycles among segdash's modules: {found}"


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    graph = import_graph(ROOT / "segdash")
    unplaced = sorted(m for m in graph if not _placed(m))
    assert unplaced == [], f"place these modules in LAYERS (and docs/development.md): {unplaced}"
    upward = sorted(
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m))
    assert upward == [], "imports of a higher layer:\n" + "\n".join(upward)


def _placed(module: str) -> bool:
    try:
        layer_of(module)
    except KeyError:
        return False
    return True


def _write(pkg: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cycle_check_finds_a_cycle_hidden_in_a_function_level_import(tmp_path):
    pkg = tmp_path / "toy"
    _write(pkg, {
        "__init__.py": "",
        "a.py": "from .b import g\n\ndef f():\n    return g()\n",
        "b.py": "def g():\n    from .sub import c\n    return c.h()\n",
        "sub/__init__.py": "",
        "sub/c.py": "def h():\n    from .. import a  # the hidden way back\n    return a\n",
        "d.py": "import toy.a\n",
    })
    graph = import_graph(pkg)
    assert graph["toy.b"] == {"toy.sub.c"} and graph["toy.sub.c"] == {"toy.a"}
    assert cycles(graph) == [["toy.a", "toy.b", "toy.sub.c"]]
    (pkg / "sub" / "c.py").write_text("def h():\n    return 1\n")
    assert cycles(import_graph(pkg)) == []


def test_layer_check_names_an_upward_import(monkeypatch):
    graph = {"segdash.contract": {"segdash.model"}, "segdash.model": set()}
    upward = [(m, t) for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m)]
    assert upward == [("segdash.contract", "segdash.model")]
    with pytest.raises(KeyError):
        layer_of("segdash.not_placed")
