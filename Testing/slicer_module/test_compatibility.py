"""Supported Slicer releases: the panel must load on an older Slicer to say it cannot run there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from UNETRPPSegmentLib.compatibility import unsupported_reason

MODULE_DIR = Path(__file__).resolve().parents[2] / "UNETRPPSegment"
# What Slicer imports to show the panel: the module file, its Qt-free library, and the few core modules
# the library imports at load time (errors and events; the rest is imported by the child only).
PANEL_FILES = [
    MODULE_DIR / "UNETRPPSegment.py",
    *sorted((MODULE_DIR / "UNETRPPSegmentLib").glob("*.py")),
    MODULE_DIR / "unetrpp" / "__init__.py",
    MODULE_DIR / "unetrpp" / "errors.py",
    MODULE_DIR / "unetrpp" / "events.py",
]


@pytest.mark.parametrize(
    ("slicer_version", "python_version", "supported"),
    [((5, 6), (3, 9), False), ((5, 8), (3, 9), False), ((5, 10), (3, 12), True), ((5, 12), (3, 12), True)],
)
def test_supported_releases_are_slicer_5_10_and_newer(slicer_version, python_version, supported):
    reason = unsupported_reason(slicer_version, python_version)
    assert (reason is None) is supported
    if not supported:
        assert "\n" not in reason
        assert f"Slicer {slicer_version[0]}.{slicer_version[1]}" in reason and "5.10 or newer" in reason


def _runtime_union(tree: ast.AST) -> ast.BinOp | None:
    """An ``X | Y`` evaluated at run time outside annotations (a type alias breaks Python 3.9)."""
    annotations = {
        id(node)
        for item in ast.walk(tree)
        for field in ("annotation", "returns")
        if isinstance(getattr(item, field, None), ast.AST)
        for node in ast.walk(getattr(item, field))
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in annotations:
            sides = (node.left, node.right)
            if any(isinstance(side, ast.Constant) and side.value is None for side in sides) or any(
                isinstance(side, ast.Name) and side.id in {"str", "int", "float", "Path", "bytes"}
                for side in sides
            ):
                return node
    return None


@pytest.mark.parametrize("path", PANEL_FILES, ids=[p.name for p in PANEL_FILES])
def test_what_the_panel_loads_is_python_3_9_syntax(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))
    union = _runtime_union(tree)
    assert union is None, f"{path.name}:{union.lineno} evaluates an X | Y union at run time"
    strict_zips = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "zip"
        and any(keyword.arg == "strict" for keyword in node.keywords)
    ]
    assert not strict_zips, f"{path.name}:{strict_zips} calls zip(strict=...), new in Python 3.10"
