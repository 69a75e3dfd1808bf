"""``unetrpp.models`` imports only downwards: its modules' import graph (lazy imports included) is acyclic.

A cycle (it was ``checkpoint -> loader -> store -> validate -> checkpoint``) makes the import order
decide what works and hides which layer owns what.
"""

from __future__ import annotations

import ast
from pathlib import Path

import unetrpp.models

_PACKAGE = "unetrpp.models"
_FOLDER = Path(unetrpp.models.__file__).parent


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sibling modules ``path`` imports anywhere (top level, inside functions, under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from unetrpp.models import store`` imports the module ``unetrpp.models.store``.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name.rsplit(".", 1)[1] for name in names if name.rsplit(".", 1)[0] == _PACKAGE)
    return found & modules


def _graph() -> dict[str, set[str]]:
    modules = {path.stem for path in _FOLDER.glob("*.py") if path.stem != "__init__"}
    return {module: _imports_of(_FOLDER / f"{module}.py", modules) - {module} for module in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_the_models_package_has_no_import_cycle():
    graph = _graph()
    assert {"checkpoint", "loader", "store", "validate"} <= set(graph)
    assert "cards" in graph["checkpoint"] and "store" in graph["loader"]  # the graph sees real edges
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
