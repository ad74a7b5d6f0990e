"""The shape of the package: no import cycle among posenc modules and no source file over 600 lines.

Only imports that run when a module is imported count: module level, class bodies, ``try``/``if`` blocks,
but not imports inside functions (deliberately lazy, e.g. to keep torch out of the knowledge-base commands)
nor under ``if TYPE_CHECKING:``. Imports are read with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "posenc"
MAX_LINES = 600

# Files over MAX_LINES that are being split into smaller modules. This list only shrinks: remove an entry
# once its file is split (test_allow_list_is_current says when); never add one.
TOO_LONG_FOR_NOW: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from import_time_imports(node.body)
            yield from import_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from import_time_imports(block)
        elif isinstance(node, (ast.ClassDef, ast.With)):
            yield from import_time_imports(node.body)


def targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The posenc modules an import statement loads (the named submodule where there is one)."""
    is_package = MODULES[module].name == "__init__.py"
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(parent + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in MODULES:  # `import posenc.pe.base.x` style: the deepest module named
            name = name.rpartition(".")[0]
        if name.startswith("posenc"):
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set().union(*(targets(module, n) for n in import_time_imports(tree.body))) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ---------------------------------------------------------------------------------------------- the checks
def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles among posenc modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_file_over_the_limit() -> None:
    over = {p.relative_to(SRC.parent).as_posix(): line_count(p) for p in MODULES.values()
            if line_count(p) > MAX_LINES}
    new = {f: n for f, n in over.items() if f not in TOO_LONG_FOR_NOW}
    assert not new, f"files over {MAX_LINES} lines (split them): " + ", ".join(f"{f} ({n})" for f, n in new.items())


def test_allow_list_is_current() -> None:
    stale = sorted(f for f in TOO_LONG_FOR_NOW
                   if not (SRC.parent / f).is_file() or line_count(SRC.parent / f) <= MAX_LINES)
    assert not stale, f"remove from TOO_LONG_FOR_NOW (split or gone): {', '.join(stale)}"


# ---------------------------------------------------------------------------------------------- the checker
def test_the_checker_sees_cycles_and_ignores_lazy_imports() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from posenc import experiment\n"
        "try:\n    from posenc import cards\nexcept ImportError:\n    pass\n"
        "def f():\n    from posenc import book\n"
        "class C:\n    from posenc import paths\n"
    )
    names = [getattr(n, "module", None) or n.names[0].name for n in import_time_imports(tree.body)]
    assert names == ["os", "typing", "posenc", "posenc"]
    found = set().union(*(targets("posenc.cli", n) for n in import_time_imports(tree.body)))
    assert found == {"posenc.cards", "posenc.paths"}


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("posenc.cards.store", "from posenc.cards.schema import Card", {"posenc.cards.schema"}),
    ("posenc.cards.store", "from . import schema", {"posenc.cards.schema"}),
    ("posenc.cards", "from .store import load_card", {"posenc.cards.store"}),
    ("posenc.cards.store", "from .. import paths", {"posenc.paths"}),
    ("posenc.cards.store", "import posenc.pe.base", {"posenc.pe.base"}),
    ("posenc.cards.store", "from posenc import cards", {"posenc.cards"}),
    ("posenc.cards.store", "import yaml", set()),
])
def test_import_targets(module: str, source: str, expected: set[str]) -> None:
    (node,) = ast.parse(source).body
    assert isinstance(node, (ast.Import, ast.ImportFrom))
    assert targets(module, node) == expected
