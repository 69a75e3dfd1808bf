"""Every third-party module the shipped code imports is declared where its users install it from.

`pip install .` must be enough for every CLI command and for the child process the Slicer module starts
(a missing scikit-image once broke both). The core's imports must be runtime dependencies in
pyproject.toml (or an optional extra other than ``test``, for lazily imported extras); the Slicer-side
library's must be in the module's requirements file, Slicer's own packages, or the core.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

from UNETRPPSegmentLib import dependencies

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (supported): the backport, in the test extra for that version
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE = REPO_ROOT / "UNETRPPSegment" / "unetrpp"
MODULE_LIB = REPO_ROOT / "UNETRPPSegment" / "UNETRPPSegmentLib"
# What Slicer itself provides to the module (its Python, VTK, Qt bindings, the PyTorch extension's utils,
# the Sample Data module).
SLICER_PROVIDES = {"slicer", "vtk", "qt", "ctk", "PyTorchUtils", "SampleData"}


def _third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level names of absolute imports under ``folder`` that are not the standard library or ours."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"unetrpp", "UNETRPPSegmentLib"}:
                    found.setdefault(top, path.relative_to(REPO_ROOT).as_posix())
    return found


def _distributions(module: str) -> set[str]:
    owners = importlib.metadata.packages_distributions().get(module, [module])
    return {owner.lower().replace("_", "-") for owner in owners}


def _declared(requirements: list[str]) -> set[str]:
    return {dependencies.distribution_name(r).lower().replace("_", "-") for r in requirements}


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_scan_sees_the_cores_known_imports():
    imports = _third_party_imports(CORE)
    assert {"torch", "monai", "SimpleITK", "numpy", "skimage", "slicerio"} <= set(imports)


def test_every_core_import_is_a_declared_runtime_dependency():
    project = _pyproject()
    optional = project.get("optional-dependencies", {})
    extras = [r for name, reqs in optional.items() if name != "test" for r in reqs]
    declared = _declared(project["dependencies"] + extras)
    undeclared = {m: f for m, f in _third_party_imports(CORE).items() if not _distributions(m) & declared}
    assert not undeclared, f"imported by the core but not declared in pyproject.toml: {undeclared}"


def test_every_slicer_side_import_is_installed_by_the_module():
    declared = _declared(dependencies.read_requirements() + list(dependencies.NEVER_REPLACED))
    imports = _third_party_imports(MODULE_LIB)
    undeclared = {
        m: f for m, f in imports.items() if m not in SLICER_PROVIDES and not _distributions(m) & declared
    }
    assert not undeclared, f"imported by UNETRPPSegmentLib but not in requirements.txt: {undeclared}"
