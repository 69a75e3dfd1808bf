"""What the module installs into Slicer's Python, and how it checks imports and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from UNETRPPSegmentLib import dependencies


def _distribution_names(requirements: list[str]) -> set[str]:
    return {dependencies.distribution_name(requirement).lower() for requirement in requirements}


def test_requirements_never_replace_what_slicer_provides():
    requirements = dependencies.read_requirements()
    names = _distribution_names(requirements)
    assert names, "requirements.txt is empty"
    assert not names & {name.lower() for name in dependencies.NEVER_REPLACED}
    assert "vtk" not in names  # Slicer's own VTK


def test_checked_imports_are_derived_from_the_requirements(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nmonai>=1.4\nscikit-image>=0.22 ; python_version >= '3.10'\nsafetensors\n")
    assert dependencies.required_imports(path) == ("torch", "monai", "skimage", "safetensors")
    assert len(dependencies.REQUIRED_IMPORTS) == len(dependencies.read_requirements()) + 1


def test_every_checked_import_names_a_module_that_exists():
    # The test environment has everything installed, so a wrong import name shows up as "missing".
    assert dependencies.missing_imports() == []


def test_requirements_equal_the_cores_runtime_dependencies_plus_psutil():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    provided = {name.lower() for name in dependencies.NEVER_REPLACED}
    core = [r for r in project["dependencies"] if dependencies.distribution_name(r).lower() not in provided]
    # Same lines, versions included: the child in Slicer runs the same core as `pip install .` gives.
    assert sorted(dependencies.read_requirements()) == sorted([*core, "psutil>=5.9"])


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
