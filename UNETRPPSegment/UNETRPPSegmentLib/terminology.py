"""Load this extension's terminology context into Slicer's Terminologies module.

Every segment this extension writes names the context "Segmentation category and type - UNETR++"
(``unetrpp.labels.terminology.UNETRPP_CONTEXT``). The context is the file
``Resources/Terminology/SegmentationCategoryTypeModifier-UNETRPP.term.json`` of this module, so Slicer
resolves every segment's category, type and modifier with no other extension installed.
:func:`load_terminology` puts it into the Terminologies logic; the module calls it once Slicer has
started. It is safe to call again (the context is then left as it is) and never raises: a failure is
logged, segments still show their names and colours from the ``.seg.nrrd``.

Qt-free: it only needs the Terminologies logic (``vtkSlicerTerminologiesModuleLogic``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["CONTEXT_FILE", "context_name", "load_terminology"]

logger = logging.getLogger(__name__)

CONTEXT_FILE = (
    Path(__file__).resolve().parents[1]
    / "Resources"
    / "Terminology"
    / "SegmentationCategoryTypeModifier-UNETRPP.term.json"
)


def context_name(path: Path | None = None) -> str:
    """The ``SegmentationCategoryTypeContextName`` a context file declares.

    Raises:
        OSError, ValueError: the file is missing, not JSON, or names no context.
    """
    with open(path or CONTEXT_FILE, encoding="utf-8") as stream:
        name = json.load(stream).get("SegmentationCategoryTypeContextName")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path or CONTEXT_FILE} names no SegmentationCategoryTypeContextName")
    return name


def _loaded_names(logic: Any) -> list[str]:
    import vtk

    names = vtk.vtkStringArray()  # the vtkStringArray overload exists in every supported Slicer
    logic.GetLoadedTerminologyNames(names)
    return [names.GetValue(index) for index in range(names.GetNumberOfValues())]


def load_terminology(logic: Any = None, path: Path | None = None) -> str:
    """Load the context file into the Terminologies logic, unless a context of that name is loaded.

    Args:
        logic: a ``vtkSlicerTerminologiesModuleLogic``; default: ``slicer.modules.terminologies.logic()``.
        path: the ``.term.json`` file; default: this module's :data:`CONTEXT_FILE`.

    Returns:
        The loaded context's name, or "" when it could not be loaded (the reason is logged).
    """
    path = Path(path) if path is not None else CONTEXT_FILE
    try:
        name = context_name(path)
        if logic is None:
            import slicer

            logic = slicer.modules.terminologies.logic()
        if name in _loaded_names(logic):
            return name
        loaded = logic.LoadTerminologyFromFile(str(path))
        if loaded != name:
            logger.error("Slicer did not load the terminology context %r from %s", name, path)
            return ""
        logger.debug("loaded terminology context %r from %s", name, path)
        return loaded
    except Exception:  # noqa: BLE001 (called from a Qt signal at startup: log, never raise)
        logger.exception("could not load the UNETR++ terminology context from %s", path)
        return ""
