"""A real 3D Slicer core (``slicer-core`` wheel) set up the way the Slicer application sets it up.

Use it to test Slicer-facing code against Slicer's own MRML scene, storage nodes and module logics,
without Qt or a display. ``slicer-core`` ships the C++ core and ``slicer.util`` but not the
application object, the module registry or the scene global; :func:`slicer_core_app` provides them
for the duration of a ``with`` block and removes them afterwards:

- a ``vtkMRMLScene`` with a ``vtkSlicerApplicationLogic``, the default colour tables, and the
  Colors, Volumes, Terminologies, Segmentations, SubjectHierarchy, Models and Data logics registered
  on the application logic (the Segmentations logic registers the labelmap <-> closed surface
  converter rules when it gets the scene);
- the globals ``slicer.mrmlScene``, ``slicer.modules.<lowercase name>`` (each with ``logic()``) and
  ``slicer.app`` with a small ``coreIOManager()`` and ``moduleManager()``, so that
  ``slicer.util.loadVolume``, ``loadSegmentation``, ``loadLabelVolume``, ``saveNode`` and
  ``getModuleLogic`` work as in Slicer.

In pytest, use the ``slicer_app`` fixture (register this file as a plugin in ``conftest.py`` with
``pytest_plugins = ["slicer_harness"]`` or import the fixture into the test module)::

    def test_load(slicer_app, tmp_path):
        import slicer.util
        node = slicer.util.loadSegmentation(str(path))
        assert node.GetSegmentation().GetNumberOfSegments() == 3

Terminology: slicer-core ships no ``.term.json`` files, so the Terminologies logic starts with no
terminology loaded; pass ``terminology_dir`` (a folder of ``.term.json`` files, loaded at start)
to look entries up by code. Serializing and deserializing entries works without any file.

Geometry trap: Slicer's volume reader makes every volume's IJK-to-RAS right-handed, so for a
left-handed grid (e.g. an LAS NIfTI) a volume node's slices run in the opposite order to SimpleITK's
array, while segment labelmaps keep the file's grid. Compare such data in physical space (resample),
not index by index.

Costs: ``import slicer`` about 0.6 s once per process; a fresh application about 10-20 ms.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["SlicerCoreApp", "slicer_core_app", "slicer_app"]

# Registered on the application logic under these names, as Slicer's module names.
_LOGIC_CLASSES = {
    "Volumes": "vtkSlicerVolumesLogic",
    "Terminologies": "vtkSlicerTerminologiesModuleLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Models": "vtkSlicerModelsLogic",
    "Data": "vtkSlicerDataModuleLogic",
}
# Loaded by the Terminologies logic itself from its share directory.
_DEFAULT_TERMINOLOGY_FILES = (
    "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.",
    "SegmentationCategoryTypeModifier-DICOM-Master.",
    "AnatomicRegionAndModifier-DICOM-Master.",
)
_GLOBALS = ("mrmlScene", "modules", "app", "qSlicerScriptedLoadableModule")


@dataclass
class SlicerCoreApp:
    """The scene and module logics of one harness application.

    Attributes:
        scene: the MRML scene (also ``slicer.mrmlScene`` while the application is active).
        app_logic: the ``vtkSlicerApplicationLogic`` on that scene.
        logics: module logics by Slicer module name ("Colors", "Volumes", "Terminologies", ...).
    """

    scene: Any
    app_logic: Any
    logics: dict[str, Any] = field(default_factory=dict)

    def logic(self, name: str) -> Any:
        """A module logic by its Slicer module name, e.g. ``logic("Segmentations")``."""
        return self.logics[name]

    def load_segmentation(self, path: str | Path, name: str | None = None) -> Any:
        """Load a ``.seg.nrrd`` (or labelmap image) through the Segmentations logic, as Slicer does."""
        import slicer

        messages = slicer.vtkMRMLMessageCollection()
        logic = self.logics["Segmentations"]
        # autoOpacities off: keep the opacities stored in the file, as a test expects them.
        node = logic.LoadSegmentationFromFile(str(path), False, name, None, messages)
        if node is None:
            raise RuntimeError(
                f"Slicer could not load segmentation {path}: {messages.GetAllMessagesAsString()}"
            )
        return node

    def load_volume(self, path: str | Path, *, labelmap: bool = False, name: str | None = None) -> Any:
        """Load a volume file through the Volumes logic (``AddArchetypeVolume``)."""
        loading = 1 if labelmap else 0
        node = self.logics["Volumes"].AddArchetypeVolume(str(path), name or Path(path).name, loading)
        if node is None:
            raise RuntimeError(f"Slicer could not load volume {path}")
        return node

    def save_node(self, node: Any, path: str | Path) -> None:
        """Write a node with its default storage node (the file type follows the extension)."""
        storage = node.CreateDefaultStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise RuntimeError(f"Slicer could not write {node.GetName()} to {path}")


def _make_app(terminology_dir: Path | None) -> SlicerCoreApp:
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app = SlicerCoreApp(scene=scene, app_logic=app_logic)

    # Volumes looks the colour logic up by the name "Colors"; without it labelmaps log errors.
    colors = app_logic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    app.logics["Colors"] = colors

    for name, class_name in _LOGIC_CLASSES.items():
        logic = getattr(slicer, class_name)()
        if name == "Terminologies":
            _start_terminologies(logic, scene, terminology_dir)
        else:
            logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        app.logics[name] = logic
    return app


def _start_terminologies(logic: Any, scene: Any, folder: Path | None) -> None:
    """Give the Terminologies logic its scene, loading the ``.term.json`` files of ``folder``.

    On ``SetMRMLScene`` the logic loads Slicer's default lists from ``<share directory>/<default
    name>.term.json``, as the application does from its share folder; any other file in the folder
    is loaded after. Without a folder there is nothing to load, and the "failed to load" errors the
    logic would log for the missing defaults are silenced.
    """
    import vtk

    if folder is None:
        was_on = vtk.vtkObject.GetGlobalWarningDisplay()
        vtk.vtkObject.GlobalWarningDisplayOff()
        try:
            logic.SetMRMLScene(scene)
        finally:
            vtk.vtkObject.SetGlobalWarningDisplay(was_on)
        return
    logic.SetModuleShareDirectory(str(folder))
    logic.SetMRMLScene(scene)
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(_DEFAULT_TERMINOLOGY_FILES):
            continue
        if path.name.startswith("AnatomicRegion"):
            logic.LoadRegionContextFromFile(str(path))
        else:
            logic.LoadTerminologyFromFile(str(path))


class _Module:
    """Stand-in for ``slicer.modules.<name>``: what slicer.util needs (``logic()``, ``name``)."""

    def __init__(self, name: str, logic: Any) -> None:
        self.name = name
        self._logic = logic

    def logic(self) -> Any:
        return self._logic


class _ModuleManager:
    def __init__(self, modules: dict[str, _Module]) -> None:
        self._modules = modules

    def module(self, name: str) -> _Module | None:
        return self._modules.get(name.lower())


class _CoreIOManager:
    """The part of ``qSlicerCoreIOManager`` that ``slicer.util`` load/save functions call."""

    def __init__(self, app: SlicerCoreApp) -> None:
        self._app = app

    def fileType(self, filename: str) -> str:  # noqa: N802 (Qt API name)
        return "SegmentationFile" if str(filename).lower().endswith(".seg.nrrd") else "VolumeFile"

    def fileWriterFileType(self, node: Any) -> str:  # noqa: N802
        return "SegmentationFile" if node.IsA("vtkMRMLSegmentationNode") else "VolumeFile"

    def loadNodes(self, file_type: str, properties: dict, loaded: Any = None, messages: Any = None) -> bool:  # noqa: N802
        path = properties["fileName"]
        try:
            if file_type == "SegmentationFile":
                node = self._app.load_segmentation(path, properties.get("name"))
            elif file_type == "VolumeFile":
                node = self._app.load_volume(
                    path, labelmap=bool(properties.get("labelmap")), name=properties.get("name")
                )
            else:
                raise RuntimeError(f"file type {file_type} is not supported by the harness")
        except RuntimeError as error:
            if messages is not None:
                messages.AddMessage(0, str(error))
            return False
        if loaded is not None:
            loaded.AddItem(node)
        return True

    def saveNodes(self, file_type: str, properties: dict, messages: Any = None) -> bool:  # noqa: N802
        node = self._app.scene.GetNodeByID(properties["nodeID"])
        try:
            self._app.save_node(node, properties["fileName"])
        except RuntimeError as error:
            if messages is not None:
                messages.AddMessage(0, str(error))
            return False
        return True


class _Application:
    """Stand-in for ``slicer.app``: only the IO and module managers."""

    def __init__(self, app: SlicerCoreApp, modules: dict[str, _Module]) -> None:
        self._io = _CoreIOManager(app)
        self._modules = _ModuleManager(modules)

    def coreIOManager(self) -> _CoreIOManager:  # noqa: N802
        return self._io

    def moduleManager(self) -> _ModuleManager:  # noqa: N802
        return self._modules

    def processEvents(self) -> None:  # noqa: N802
        pass


@contextlib.contextmanager
def slicer_core_app(terminology_dir: str | Path | None = None) -> Iterator[SlicerCoreApp]:
    """A fresh Slicer core application with its globals installed; all removed on exit.

    Args:
        terminology_dir: folder of Slicer ``.term.json`` files to load, or None for none.
    """
    import slicer

    app = _make_app(Path(terminology_dir) if terminology_dir is not None else None)
    modules = {name.lower(): _Module(name, logic) for name, logic in app.logics.items()}
    saved = {name: getattr(slicer, name) for name in _GLOBALS if hasattr(slicer, name)}
    slicer.mrmlScene = app.scene
    slicer.modules = types.SimpleNamespace(**modules)
    slicer.app = _Application(app, modules)
    if "qSlicerScriptedLoadableModule" not in saved:
        # slicer.util.getModuleLogic checks isinstance against this Qt class, absent in slicer-core.
        slicer.qSlicerScriptedLoadableModule = type("qSlicerScriptedLoadableModule", (), {})
    try:
        yield app
    finally:
        for name in _GLOBALS:
            if name in saved:
                setattr(slicer, name, saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)
        app.scene.Clear(True)


@pytest.fixture
def slicer_app() -> Iterator[SlicerCoreApp]:
    """A fresh real Slicer core per test (skipped when slicer-core is not installed)."""
    pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    with slicer_core_app() as app:
        yield app
