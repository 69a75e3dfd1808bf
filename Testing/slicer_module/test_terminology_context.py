"""The extension's own terminology context (Resources/Terminology/SegmentationCategoryTypeModifier-UNETRPP
.term.json): it loads through the real Slicer Terminologies logic with the module's loader, and with only
that file loaded every structure of every model, and every segment of a ``.seg.nrrd`` written by the
core, resolves by code in the context its entry names, with the project table's meanings and colours.

The harness loads none of Slicer's default lists, so nothing here can resolve through another file:
an entry that names another context (the TotalSegmentator one, or a default list) fails these tests.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from unetrpp.labels.terminology import (
    TOTAL_SEGMENTATOR_CONTEXT,
    UNETRPP_CONTEXT,
    Code,
    label_sets,
    parse_terminology_entry,
    structures_for,
)
from UNETRPPSegmentLib.terminology import CONTEXT_FILE, context_name, load_terminology
from vendored_data import data_path

MODULE_DIR = Path(__file__).resolve().parents[2] / "UNETRPPSegment"
ALTERED = "49755003"  # SCT Morphologically Altered Structure: the category with an anatomic region


def _contract_rows() -> list[dict[str, str]]:
    with data_path("terminology", "unetrpp_structures.tsv").open(encoding="utf-8") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


ROWS = _contract_rows()
ROW_IDS = [f"{row['dataset']}-{row['label_value']}" for row in ROWS]


def _code(row: dict[str, str], prefix: str) -> Code | None:
    if not row[f"{prefix}_code"]:
        return None
    return Code(row[f"{prefix}_scheme"], row[f"{prefix}_code"], row[f"{prefix}_meaning"])


def _as_code(obj) -> Code:
    return Code(obj.GetCodingSchemeDesignator(), obj.GetCodeValue(), obj.GetCodeMeaning())


def _nth(count: int, fetch, make):
    for index in range(count):
        item = make()
        assert fetch(index, item)
        yield item


def _categories(logic, context: str):
    import slicer

    count = logic.GetNumberOfCategoriesInTerminology(context)
    yield from _nth(
        count,
        lambda i, c: logic.GetNthCategoryInTerminology(context, i, c),
        slicer.vtkSlicerTerminologyCategory,
    )


def _types(logic, context: str, category):
    import slicer

    count = logic.GetNumberOfTypesInTerminologyCategory(context, category)
    yield from _nth(
        count,
        lambda i, t: logic.GetNthTypeInTerminologyCategory(context, category, i, t),
        slicer.vtkSlicerTerminologyType,
    )


def _modifiers(logic, context: str, category, type_):
    import slicer

    count = logic.GetNumberOfTypeModifiersInTerminologyType(context, category, type_)
    yield from _nth(
        count,
        lambda i, m: logic.GetNthTypeModifierInTerminologyType(context, category, type_, i, m),
        slicer.vtkSlicerTerminologyType,
    )


def _same_concept(obj, code: Code) -> bool:
    return (obj.GetCodingSchemeDesignator(), obj.GetCodeValue()) == (code.scheme, code.value)


def resolve(logic, context: str, category: Code, type_: Code, modifier: Code | None):
    """Look an entry up by code in one loaded context, as Slicer's terminology selector does.

    Returns (category, type, modifier or None) objects of that context, or None when the context is
    not loaded or does not hold the codes.
    """
    if not logic.IsTerminologyContextLoaded(context):
        return None
    for found_category in _categories(logic, context):
        if not _same_concept(found_category, category):
            continue
        for found_type in _types(logic, context, category=found_category):
            if not _same_concept(found_type, type_):
                continue
            modifiers = list(_modifiers(logic, context, found_category, found_type))
            if modifier is None:
                return (found_category, found_type, None) if not modifiers else None
            for found_modifier in modifiers:
                if _same_concept(found_modifier, modifier):
                    return found_category, found_type, found_modifier
            return None
    return None


def _assert_resolves_like_the_table(logic, context, category, type_, modifier, rgb, what):
    found = resolve(logic, context, category, type_, modifier)
    assert found is not None, f"{what}: {type_} ({modifier}) does not resolve in context {context!r}"
    found_category, found_type, found_modifier = found
    assert _as_code(found_category) == category, what
    assert _as_code(found_type) == type_, what
    coloured = found_type
    if modifier is not None:
        assert _as_code(found_modifier) == modifier, what
        coloured = found_modifier
    assert tuple(coloured.GetRecommendedDisplayRGBValue()) == tuple(rgb), what
    # The anatomic region selector is shown exactly for the altered structures (tumour in brain/lung).
    assert bool(found_category.GetShowAnatomy()) == (category.value == ALTERED), what


@pytest.fixture
def terminologies(slicer_app):
    logic = slicer_app.logic("Terminologies")
    assert load_terminology(logic) == UNETRPP_CONTEXT
    return logic


def test_context_file_declares_this_projects_context_and_the_schema():
    document = json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))
    assert CONTEXT_FILE.parent == MODULE_DIR / "Resources" / "Terminology"
    assert context_name() == document["SegmentationCategoryTypeContextName"] == UNETRPP_CONTEXT
    assert "segment-context-schema" in document["@schema"]  # Slicer refuses a file without it


def test_loader_loads_once_through_the_real_logic(slicer_app):
    import vtk

    logic = slicer_app.logic("Terminologies")
    assert not logic.IsTerminologyContextLoaded(UNETRPP_CONTEXT)
    # Default logic: slicer.modules.terminologies.logic(), as at Slicer's startup.
    assert load_terminology() == UNETRPP_CONTEXT
    assert load_terminology(logic) == UNETRPP_CONTEXT  # idempotent: the second call changes nothing
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    loaded = [names.GetValue(i) for i in range(names.GetNumberOfValues())]
    assert loaded.count(UNETRPP_CONTEXT) == 1
    assert logic.GetNumberOfCategoriesInTerminology(UNETRPP_CONTEXT) == 2


def test_loader_logs_instead_of_raising(slicer_app, tmp_path, caplog):
    logic = slicer_app.logic("Terminologies")
    no_schema = tmp_path / "broken.term.json"
    document = json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))
    del document["@schema"]
    no_schema.write_text(json.dumps(document), encoding="utf-8")

    class Exploding:
        def GetLoadedTerminologyNames(self, names):  # noqa: N802 (Slicer API name)
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="UNETRPPSegmentLib.terminology"):
        assert load_terminology(logic, tmp_path / "missing.term.json") == ""
        assert load_terminology(logic, no_schema) == ""  # Slicer's logic rejects it: logged, no raise
        assert load_terminology(Exploding()) == ""
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 3
    assert not logic.IsTerminologyContextLoaded(UNETRPP_CONTEXT)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_every_table_structure_resolves_in_the_loaded_context(terminologies, row):
    _assert_resolves_like_the_table(
        terminologies,
        UNETRPP_CONTEXT,
        _code(row, "category"),
        _code(row, "type"),
        _code(row, "modifier"),
        tuple(int(c) for c in row["rgb"].split(",")),
        f"{row['dataset']} {row['label_value']} {row['name']}",
    )


@pytest.mark.parametrize("label_set", label_sets())
def test_every_model_structure_names_the_loaded_context_and_resolves_there(terminologies, label_set):
    for structure in structures_for(label_set):
        assert structure.is_coded, structure.name
        assert structure.context == UNETRPP_CONTEXT, structure.name
        _assert_resolves_like_the_table(
            terminologies,
            structure.context,
            structure.category,
            structure.type,
            structure.modifier,
            structure.color_rgb,
            f"{label_set} {structure.name}",
        )


def test_context_holds_exactly_the_tables_concepts(terminologies):
    held = set()
    for category in _categories(terminologies, UNETRPP_CONTEXT):
        for type_ in _types(terminologies, UNETRPP_CONTEXT, category):
            modifiers = list(_modifiers(terminologies, UNETRPP_CONTEXT, category, type_)) or [None]
            for modifier in modifiers:
                held.add((_as_code(category), _as_code(type_), modifier and _as_code(modifier)))
    wanted = {(_code(r, "category"), _code(r, "type"), _code(r, "modifier")) for r in ROWS}
    assert held == wanted


def _all_labels_image(count: int):
    import SimpleITK as sitk

    array = np.zeros((3, 4, count + 1), dtype=np.uint8)  # (k, j, i): label v fills column i = v
    for value in range(1, count + 1):
        array[:, :, value] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((-10.0, 5.0, 20.0))
    return image


def _segment_entries(slicer_app, path):
    import slicer
    import vtk

    segmentation = slicer_app.load_segmentation(path).GetSegmentation()
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    entries = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        value = vtk.reference("")
        assert segment.GetTag(tag, value), segment.GetName()
        entries[segment.GetName()] = (segment, str(value))
    return entries


def _assert_segments_resolve_in_their_context(slicer_app, logic, path, structures):
    import slicer

    entries = _segment_entries(slicer_app, path)
    assert sorted(entries) == sorted(s.name for s in structures)
    for structure in structures:
        segment, text = entries[structure.name]
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(text, entry), structure.name
        ours = parse_terminology_entry(text)
        assert entry.GetTerminologyContextName() == ours.context
        _assert_resolves_like_the_table(
            logic,
            entry.GetTerminologyContextName(),
            _as_code(entry.GetCategoryObject()),
            _as_code(entry.GetTypeObject()),
            ours.modifier,
            structure.color_rgb,
            f"segment {structure.name}",
        )
        np.testing.assert_allclose(segment.GetColor(), np.array(structure.color_rgb) / 255, atol=1e-7)


@pytest.mark.parametrize("label_set", label_sets())
def test_seg_nrrd_segments_resolve_in_the_context_they_name(slicer_app, terminologies, tmp_path, label_set):
    from unetrpp.labels.seg_nrrd import write_seg_nrrd

    structures = structures_for(label_set)
    path = write_seg_nrrd(_all_labels_image(len(structures)), structures, tmp_path / f"{label_set}.seg.nrrd")
    _assert_segments_resolve_in_their_context(slicer_app, terminologies, path, structures)


def test_entries_naming_the_total_segmentator_context_do_not_resolve(slicer_app, terminologies, tmp_path):
    """The check above has teeth: the old entries (TotalSegmentator's context) fail it here."""
    from unetrpp.labels.seg_nrrd import write_seg_nrrd

    old = tuple(dataclasses.replace(s, context=TOTAL_SEGMENTATOR_CONTEXT) for s in structures_for("acdc"))
    path = write_seg_nrrd(_all_labels_image(len(old)), old, tmp_path / "old.seg.nrrd")
    with pytest.raises(AssertionError, match="does not resolve in context"):
        _assert_segments_resolve_in_their_context(slicer_app, terminologies, path, old)


def test_slicer_falls_back_by_code_to_the_loaded_context(terminologies):
    """An entry naming a list that is not loaded (e.g. a default one) is still found by code."""
    import slicer

    liver = next(s for s in structures_for("synapse") if s.name == "liver")
    text = f"Some other list~{liver.category}~{liver.type}~^^~Anatomic codes - DICOM master list~^^~^^"
    entry = slicer.vtkSlicerTerminologyEntry()
    assert terminologies.DeserializeTerminologyEntry(text, entry)
    assert terminologies.UpdateEntryFromLoadedTerminologies(entry, [], [])
    assert entry.GetTerminologyContextName() == UNETRPP_CONTEXT
    assert tuple(entry.GetTypeObject().GetRecommendedDisplayRGBValue()) == liver.color_rgb


def test_module_loads_the_context_when_slicer_has_started():
    source = (MODULE_DIR / "UNETRPPSegment.py").read_text(encoding="utf-8")
    init = source[source.index("class UNETRPPSegment(ScriptedLoadableModule)") :]
    init = init[: init.index("\n\n\n")]
    assert "slicer.app.startupCompleted.connect(" in init
    assert "terminology.load_terminology()" in init
