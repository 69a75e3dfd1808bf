"""Names, colours and coded terminology of the structures a model outputs.

One table (``unetrpp/data/structures.tsv``) gives, per label set and label value, the segment name, the
display colour and the SNOMED CT codes of 3D Slicer's terminology lists. This module turns it into
:class:`Structure` objects and into the ``TerminologyEntry`` strings that Slicer stores in a segment's
tags, so a ``.seg.nrrd`` written here opens in Slicer with the right names, colours and codes.

It imports no torch: the CLI lists structures without loading a network.

Example::

    >>> liver = select_structures(structures_for("synapse"), ["liver"])[0]
    >>> liver.label_value, liver.type.value
    (6, '10200004')
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import io
import logging
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

from unetrpp.errors import UnetrppError

__all__ = [
    "GENERAL_ANATOMY_CONTEXT",
    "DICOM_MASTER_CONTEXT",
    "TOTAL_SEGMENTATOR_CONTEXT",
    "UNETRPP_CONTEXT",
    "ANATOMIC_CONTEXT",
    "Code",
    "Structure",
    "TerminologyEntry",
    "label_sets",
    "structures_for",
    "structures_from_labels",
    "select_structures",
    "terminology_entry",
    "terminology_entry_string",
    "parse_terminology_entry",
]

logger = logging.getLogger(__name__)

# Context names are the `SegmentationCategoryTypeContextName` / `AnatomicContextName` of the Slicer
# terminology files the codes come from; Slicer looks an entry up in the list its context names.
GENERAL_ANATOMY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER_CONTEXT = "Segmentation category and type - DICOM master list"
TOTAL_SEGMENTATOR_CONTEXT = "Segmentation category and type - Total Segmentator"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
# This extension's own context: UNETRPPSegment/Resources/Terminology/
# SegmentationCategoryTypeModifier-UNETRPP.term.json holds every category, type and modifier of the table
# with the same codes, meanings and colours, and the module loads it at Slicer's startup
# (UNETRPPSegmentLib/terminology.py). Every coded structure names this context, not only the three
# (inferior vena cava, portal and splenic vein, myocardium) that none of Slicer's default lists has:
# one context then resolves every segment with this extension alone, and where it is not loaded (a file
# opened in a Slicer without this extension) Slicer's lookup falls back by code to every loaded context
# (vtkSlicerTerminologiesModuleLogic::UpdateEntryFromLoadedTerminologies), so the organs still resolve
# in the General Anatomy list there. The table's `list` column stays as the provenance of the codes.
UNETRPP_CONTEXT = "Segmentation category and type - UNETR++"

_LIST_CONTEXTS = {
    "slicer-general-anatomy": GENERAL_ANATOMY_CONTEXT,
    "dicom-master": DICOM_MASTER_CONTEXT,
    "total-segmentator": TOTAL_SEGMENTATOR_CONTEXT,
}
# Characters that separate fields in a serialized terminology entry or in a segment's tag list.
_RESERVED = set("~^|\n\r\t")

# Colours for labels that no table row describes (a model card's own labels): distinct, mid-bright.
_FALLBACK_RGB = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)


@dataclass(frozen=True)
class Code:
    """One coded concept, e.g. ``Code("SCT", "10200004", "Liver")`` (SNOMED CT Liver)."""

    scheme: str  # coding scheme designator, e.g. "SCT"
    value: str  # code value within that scheme
    meaning: str  # human-readable code meaning

    def __post_init__(self) -> None:
        for part in (self.scheme, self.value, self.meaning):
            if not part or _RESERVED & set(part):
                raise ValueError(f"invalid terminology code {self.scheme!r}^{self.value!r}^{self.meaning!r}")

    def __str__(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"

    @classmethod
    def parse(cls, text: str) -> Code | None:
        """``"SCT^10200004^Liver"`` -> Code; an empty field (``""`` or ``"^^"``) -> None."""
        if not text.strip("^ "):
            return None
        parts = text.split("^")
        if len(parts) != 3:
            raise ValueError(f"terminology code {text!r} is not scheme^value^meaning")
        return cls(*parts)


@dataclass(frozen=True)
class Structure:
    """One output label of a model, as it appears as a segment.

    Attributes:
        label_value: value of this structure in the model's label map (1 or more; 0 is background).
        name: segment name shown to the user, e.g. "right kidney".
        color_rgb: display colour, each component 0-255.
        category, type, modifier: DICOM segmented property category / type / type modifier
            (laterality); None when the structure is not coded (a model card's own label).
        region: anatomic region of a morphologically altered structure (tumour in brain or lung).
        context: terminology context (Slicer list) the category and type come from.
    """

    label_value: int
    name: str
    color_rgb: tuple[int, int, int]
    category: Code | None = None
    type: Code | None = None
    modifier: Code | None = None
    region: Code | None = None
    context: str = GENERAL_ANATOMY_CONTEXT

    def __post_init__(self) -> None:
        object.__setattr__(self, "color_rgb", tuple(int(c) for c in self.color_rgb))
        value = self.label_value
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"label value of {self.name!r} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "label_value", int(value))
        if not self.name.strip() or set("\n\r") & set(self.name):
            raise ValueError(f"structure name {self.name!r} must be non-empty and on one line")
        if len(self.color_rgb) != 3 or not all(0 <= c <= 255 for c in self.color_rgb):
            raise ValueError(f"colour of {self.name!r} must be three values 0-255, got {self.color_rgb}")
        if (self.category is None) != (self.type is None):
            raise ValueError(f"structure {self.name!r} needs both a category and a type code, or neither")
        if self.category is None and (self.modifier is not None or self.region is not None):
            raise ValueError(f"structure {self.name!r} has a modifier or region but no type code")

    @property
    def color_float(self) -> tuple[float, float, float]:
        """Colour as Slicer stores it: each component 0-1."""
        r, g, b = self.color_rgb
        return (r / 255.0, g / 255.0, b / 255.0)

    @property
    def is_coded(self) -> bool:
        """True when the structure has a terminology entry (category and type codes)."""
        return self.type is not None


@dataclass(frozen=True)
class TerminologyEntry:
    """Slicer's terminology entry: what ``vtkSlicerTerminologyEntry`` holds for one segment."""

    context: str
    category: Code
    type: Code
    modifier: Code | None = None
    region_context: str = ANATOMIC_CONTEXT
    region: Code | None = None
    region_modifier: Code | None = None

    def to_string(self) -> str:
        """Serialize as ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry`` does.

        Seven ``~``-separated fields: context, category, type, type modifier, region context, region,
        region modifier; each code is ``scheme^value^meaning`` and an absent code is ``^^``.
        """
        fields = [
            self.context,
            str(self.category),
            str(self.type),
            _code_field(self.modifier),
            self.region_context,
            _code_field(self.region),
            _code_field(self.region_modifier),
        ]
        return "~".join(fields)


def _code_field(code: Code | None) -> str:
    return "^^" if code is None else str(code)


def terminology_entry(structure: Structure) -> TerminologyEntry:
    """The terminology entry of a coded structure.

    The region context is always the DICOM anatomic list, as Slicer's terminology selector sets it,
    also when the structure has no region.

    Raises:
        ValueError: the structure carries no codes (``structure.is_coded`` is False).
    """
    if structure.category is None or structure.type is None:
        raise ValueError(f"structure {structure.name!r} has no terminology codes")
    return TerminologyEntry(
        context=structure.context,
        category=structure.category,
        type=structure.type,
        modifier=structure.modifier,
        region=structure.region,
    )


def terminology_entry_string(structure: Structure) -> str:
    """The string Slicer stores as ``TerminologyEntry:<string>`` in the segment's tags.

    Example: ``"Segmentation category and type - UNETR++~SCT^123037004^Anatomical
    Structure~SCT^64033007^Kidney~SCT^24028007^Right~Anatomic codes - DICOM master list~^^~^^"``.
    """
    return terminology_entry(structure).to_string()


def parse_terminology_entry(text: str) -> TerminologyEntry:
    """Parse a serialized terminology entry (the inverse of :meth:`TerminologyEntry.to_string`).

    Raises:
        ValueError: not seven ``~``-separated fields, or no category/type code.
    """
    fields = text.strip().split("~")
    if len(fields) != 7:
        raise ValueError(f"terminology entry {text!r} does not have 7 '~'-separated fields")
    category, type_ = Code.parse(fields[1]), Code.parse(fields[2])
    if category is None or type_ is None:
        raise ValueError(f"terminology entry {text!r} has no category or type code")
    return TerminologyEntry(
        context=fields[0],
        category=category,
        type=type_,
        modifier=Code.parse(fields[3]),
        region_context=fields[4],
        region=Code.parse(fields[5]),
        region_modifier=Code.parse(fields[6]),
    )


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, tuple[Structure, ...]]:
    """All label sets of ``data/structures.tsv``, each sorted by label value."""
    text = resources.files("unetrpp").joinpath("data", "structures.tsv").read_text(encoding="utf-8")
    lines = io.StringIO("".join(line for line in text.splitlines(keepends=True) if not line.startswith("#")))
    sets: dict[str, list[Structure]] = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        structure = Structure(
            label_value=int(row["label_value"]),
            name=row["name"],
            color_rgb=tuple(int(c) for c in row["rgb"].split(",")),
            category=Code.parse(row["category"]),
            type=Code.parse(row["type"]),
            modifier=Code.parse(row["modifier"]),
            region=Code.parse(row["region"]),
            context=_source_context(row["list"]),
        )
        sets.setdefault(row["label_set"], []).append(structure)
    return {name: tuple(sorted(items, key=lambda s: s.label_value)) for name, items in sets.items()}


def _source_context(source_list: str) -> str:
    """The context a table row's segments name: always :data:`UNETRPP_CONTEXT` (see there).

    The row's ``list`` (the Slicer list its codes were copied from) must still be a known one.
    """
    if source_list not in _LIST_CONTEXTS:
        raise ValueError(f"structures.tsv names an unknown source list {source_list!r}")
    return UNETRPP_CONTEXT


def label_sets() -> tuple[str, ...]:
    """Names of the label sets the bundled table describes (synapse, btcv, acdc, brats, lung)."""
    return tuple(_table())


def structures_for(label_set: str) -> tuple[Structure, ...]:
    """Every foreground structure of a bundled label set, sorted by label value.

    Raises:
        UnetrppError: unknown label set (the message suggests the closest name).
    """
    table = _table()
    if label_set not in table:
        raise UnetrppError(
            f"no label set {label_set!r}{_did_you_mean(label_set, table)}; known: {', '.join(table)}"
        )
    return table[label_set]


def structures_from_labels(label_set: str, labels: Iterable[tuple[int, str]]) -> tuple[Structure, ...]:
    """Structures for a model card's own ``labels`` ((label value, name) pairs), sorted by label value.

    A label takes its codes and colour from the bundled table: first the row of ``label_set`` with the
    same value and name, else any row with the same name (so a fine-tuned model that outputs "liver"
    at value 1 still gets Liver's code). A name no table knows becomes an uncoded structure with a
    fallback colour; Slicer then shows it by name only.

    Raises:
        UnetrppError: a label value is repeated or not positive, or a name is empty.
    """
    table = _table()
    own = {s.label_value: s for s in table.get(label_set, ())}
    by_name: dict[str, Structure] = {}
    for structures in table.values():
        for s in structures:
            by_name.setdefault(_normalise(s.name), s)
    result: dict[int, Structure] = {}
    for value, name in labels:
        if value in result:
            raise UnetrppError(
                f"label value {value} is listed twice in the labels of label set {label_set!r}"
            )
        known = own.get(value)
        if known is None or _normalise(known.name) != _normalise(name):
            known = by_name.get(_normalise(name))
        try:
            if known is not None:
                result[value] = dataclasses.replace(known, label_value=value, name=name)
            else:
                logger.info("label %d %r of label set %r has no terminology codes", value, name, label_set)
                result[value] = Structure(value, name, _FALLBACK_RGB[(int(value) - 1) % len(_FALLBACK_RGB)])
        except ValueError as error:
            raise UnetrppError(f"bad label {value} {name!r} in label set {label_set!r}: {error}") from error
    return tuple(result[v] for v in sorted(result))


def select_structures(structures: Sequence[Structure], requested: Iterable[str]) -> tuple[Structure, ...]:
    """The structures named in ``requested`` (e.g. from ``--structures liver,spleen``), in table order.

    Names match case-insensitively, with ``_`` read as a space; a unique prefix also matches
    ("non-enhancing tumour"), and a label value given as digits selects that label.

    Raises:
        UnetrppError: a name matches nothing (with a did-you-mean suggestion), or several structures,
            or nothing was requested.
    """
    by_name = {_normalise(s.name): s for s in structures}
    by_value = {str(s.label_value): s for s in structures}
    chosen: set[int] = set()
    wanted = [w for w in (r.strip() for r in requested) if w]
    if not wanted:
        raise UnetrppError("no structure names given; choose from: " + ", ".join(s.name for s in structures))
    for item in wanted:
        key = _normalise(item)
        match = by_name.get(key) or by_value.get(key)
        if match is None:
            candidates = [s for n, s in by_name.items() if n.startswith(key)]
            if len(candidates) > 1:
                names = ", ".join(repr(s.name) for s in candidates)
                raise UnetrppError(f"structure {item!r} is ambiguous: it could be {names}")
            if not candidates:
                raise UnetrppError(
                    f"no structure {item!r}{_did_you_mean(key, by_name)}; choose from: "
                    + ", ".join(s.name for s in structures)
                )
            match = candidates[0]
        chosen.add(match.label_value)
    return tuple(s for s in structures if s.label_value in chosen)


def _normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
