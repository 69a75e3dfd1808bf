"""What the module installs into Slicer's Python, and how it checks imports and weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from UNETRPPSegmentLib import dependencies


def _distribution_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", requirement)[0].lower() for requirement in requirements}


def test_requirements_never_replace_what_slicer_provides():
    requirements = dependencies.read_requirements()
    names = _distribution_names(requirements)
    assert names, "requirements.txt is empty"
    assert not names & {name.lower() for name in dependencies.NEVER_REPLACED}
    assert "vtk" not in names  # Slicer's own VTK


def test_every_checked_import_is_installable():
    names = _distribution_names(dependencies.read_requirements())
    # torch comes from the PyTorch extension, the rest from requirements.txt (import name = dist name here)
    assert set(dependencies.REQUIRED_IMPORTS) - {"torch"} <= names


def test_requirements_cover_the_cores_runtime_dependencies():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = _distribution_names(project["dependencies"])
    provided = {name.lower() for name in dependencies.NEVER_REPLACED}
    assert core - provided <= _distribution_names(dependencies.read_requirements())


def test_read_requirements_drops_comments_and_blank_lines(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# a comment\n\nmonai>=1.4  # inline\n  scipy\n", encoding="utf-8")
    assert dependencies.read_requirements(path) == ["monai>=1.4", "scipy"]


def test_missing_imports_names_only_the_missing_ones():
    assert dependencies.missing_imports(["json", "no_such_package_unetrpp"]) == ["no_such_package_unetrpp"]
    assert dependencies.missing_imports() == []  # this test environment has everything the child needs


def test_weights_installed_answers_false_for_an_empty_store_and_unknown_models(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    assert dependencies.weights_installed("synapse") is False
    assert dependencies.weights_installed("no-such-model") is False
