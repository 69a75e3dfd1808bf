"""Structure names, colours and terminology (``terminology``), and Slicer's ``.seg.nrrd`` file (``seg_nrrd``).

``terminology`` imports no torch and no image library; import ``unetrpp.labels.seg_nrrd`` for the file
writer and reader (SimpleITK, slicerio).
"""

from __future__ import annotations

from unetrpp.labels.terminology import (
    Code,
    Structure,
    TerminologyEntry,
    label_sets,
    parse_terminology_entry,
    select_structures,
    structures_for,
    structures_from_labels,
    terminology_entry_string,
)

__all__ = [
    "Code",
    "Structure",
    "TerminologyEntry",
    "label_sets",
    "parse_terminology_entry",
    "select_structures",
    "structures_for",
    "structures_from_labels",
    "terminology_entry_string",
]
