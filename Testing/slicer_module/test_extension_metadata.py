"""The extension's description files agree with each other, the module's CMakeLists lists every file it
ships, and the scripted module file (which cannot be imported without Slicer's GUI) compiles, passes ruff
and only uses widgets and parameters its .ui file defines."""

from __future__ import annotations

import fnmatch
import json
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "UNETRPPSegment"
MODULE_FILE = MODULE / "UNETRPPSegment.py"
UI_FILE = MODULE / "Resources" / "UI" / "UNETRPPSegment.ui"
RAW_PREFIX = "https://raw.githubusercontent.com/"
# Keys the ExtensionsIndex catalog-entry schema (v1.0.2) allows; it forbids any other key.
CATALOG_KEYS = {
    "$schema",
    "category",
    "scm_url",
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "dicom_support_rule",
    "build_subdirectory",
    "enabled",
    "tier",
}


def _cmake_extension_vars() -> dict[str, list[str]]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    variables = {}
    for name, value in re.findall(r"set\((EXTENSION_\w+)\s+(.*?)\)\s*$", text, flags=re.MULTILINE):
        variables[name] = [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', value)]
    return variables


def _s4ext() -> dict[str, str]:
    entries = {}
    for line in (REPO / "UNETRPP.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def _catalog() -> dict:
    return json.loads((REPO / "UNETRPP.json").read_text(encoding="utf-8"))


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, flags=re.DOTALL)
    assert match, f"{variable} not set in UNETRPPSegment/CMakeLists.txt"
    return [item.replace("${MODULE_NAME}", "UNETRPPSegment") for item in match.group(1).split()]


def _repo_file_of(url: str) -> Path:
    """The file in this repository a raw.githubusercontent.com/<owner>/<repo>/<branch>/<path> URL names."""
    assert url.startswith(RAW_PREFIX), url
    return REPO / Path(*url[len(RAW_PREFIX) :].split("/")[3:])


def test_homepage_scm_category_depends_contributors_agree():
    cmake, s4ext, catalog = _cmake_extension_vars(), _s4ext(), _catalog()
    homepage = cmake["EXTENSION_HOMEPAGE"][0]
    assert s4ext["homepage"] == homepage
    assert s4ext["scmurl"].removesuffix(".git") == homepage == catalog["scm_url"]
    assert s4ext["scm"] == catalog["scm_type"] == "git"
    assert s4ext["scmrevision"] == catalog["scm_revision"]
    assert cmake["EXTENSION_CATEGORY"] == [s4ext["category"]] == [catalog["category"]]
    depends = cmake["EXTENSION_DEPENDS"]
    assert depends == s4ext["depends"].split() == catalog["build_dependencies"] == ["PyTorch"]
    assert ", ".join(cmake["EXTENSION_CONTRIBUTORS"]) == s4ext["contributors"]
    assert cmake["EXTENSION_DESCRIPTION"] == [s4ext["description"]]
    assert s4ext["build_subdirectory"] == catalog["build_subdirectory"]
    assert bool(int(s4ext["enabled"])) is catalog["enabled"]


def test_icon_url_names_a_128px_png_in_this_repository():
    cmake, s4ext = _cmake_extension_vars(), _s4ext()
    icon_url = cmake["EXTENSION_ICONURL"][0]
    assert s4ext["iconurl"] == icon_url
    assert icon_url.startswith(cmake["EXTENSION_HOMEPAGE"][0].replace("https://github.com/", RAW_PREFIX))
    with Image.open(_repo_file_of(icon_url)) as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    with Image.open(MODULE / "Resources" / "Icons" / "UNETRPPSegment.png") as module_icon:
        assert module_icon.format == "PNG" and module_icon.size == (128, 128)
    assert s4ext["screenshoturls"].split() == cmake["EXTENSION_SCREENSHOTURLS"]


def test_catalog_entry_uses_only_schema_keys():
    catalog = _catalog()
    assert set(catalog) <= CATALOG_KEYS
    assert {"$schema", "category", "scm_url"} <= set(catalog)
    assert "slicer-extension-catalog-entry-schema" in catalog["$schema"]
    assert isinstance(catalog["tier"], int) and 1 <= catalog["tier"] <= 5


def test_top_level_cmake_builds_the_module():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(UNETRPP\)", text, flags=re.MULTILINE)
    assert "add_subdirectory(UNETRPPSegment)" in text
    assert "find_package(Slicer REQUIRED)" in text


def test_module_cmake_lists_every_module_file_and_covers_the_core():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    listed = {*_cmake_list(text, "MODULE_PYTHON_SCRIPTS"), *_cmake_list(text, "MODULE_PYTHON_RESOURCES")}
    for name in listed:
        assert (MODULE / name).is_file(), f"CMakeLists.txt lists {name}, which does not exist"
    core_patterns = re.findall(r"^\s+(unetrpp/\S+)$", text, flags=re.MULTILINE)
    assert "unetrpp/*.py" in core_patterns
    for path in MODULE.rglob("*"):
        relative = path.relative_to(MODULE).as_posix()
        skipped = "__pycache__" in relative or ".egg-info" in relative or relative == "CMakeLists.txt"
        if not path.is_file() or skipped:
            continue
        if relative.startswith("unetrpp/"):
            # CMake's GLOB_RECURSE "*" also matches "/", as fnmatch does.
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in core_patterns), (
                f"{relative} is not shipped: add a pattern for it to UNETRPPSegment/CMakeLists.txt"
            )
        else:
            assert relative in listed, f"{relative} is missing from UNETRPPSegment/CMakeLists.txt"


def test_module_file_compiles_and_passes_ruff(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "module.pyc"), doraise=True)
    # ruff from this interpreter's environment (the test extra installs it): found even when its
    # scripts folder is not on PATH, and a missing ruff fails instead of skipping.
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", str(MODULE_FILE)]
    result = subprocess.run(
        [*command, str(MODULE / "UNETRPPSegmentLib")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ui_widgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def test_ui_defines_every_widget_the_module_uses():
    widgets = _ui_widgets()
    assert widgets["UNETRPPSegment"].get("class") == "qMRMLWidget"
    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    prefixes = ("inputVolumeSelector", "inputVolumeLabel")  # reached through getattr
    used |= {f"{prefix}{index}" for prefix in prefixes for index in range(1, 5)}
    missing = sorted(used - set(widgets))
    assert not missing, f"the module uses widgets the .ui file does not define: {missing}"
    assert widgets["segmentButton"].get("class") == "QPushButton"
    assert widgets["outputSegmentationSelector"].get("class") == "qMRMLNodeComboBox"


def test_ui_parameter_names_are_fields_of_the_parameter_node():
    source = MODULE_FILE.read_text(encoding="utf-8")
    block = source[source.index("class UNETRPPSegmentParameterNode") :]
    block = block[: block.index("\n\n")]
    fields = set(re.findall(r"^\s+(\w+):", block, flags=re.MULTILINE))
    bound = {
        prop.find("string").text
        for prop in ElementTree.parse(UI_FILE).getroot().iter("property")
        if prop.get("name") == "SlicerParameterName"
    }
    assert bound, "no widget is bound to the parameter node"
    assert bound <= fields, f"unknown parameter names in the .ui file: {sorted(bound - fields)}"
    # Every node selector the scene feeds is connected to the scene.
    connected = {
        connection.findtext("receiver")
        for connection in ElementTree.parse(UI_FILE).getroot().iter("connection")
        if connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    selectors = {name for name, widget in _ui_widgets().items() if widget.get("class") == "qMRMLNodeComboBox"}
    assert selectors == connected
