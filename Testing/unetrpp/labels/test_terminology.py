"""Structure table and terminology entries: same codes as the project's terminology contract, and the
exact strings the real Slicer terminology logic produces."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from unetrpp.errors import UnetrppError
from unetrpp.labels.terminology import (
    ANATOMIC_CONTEXT,
    Code,
    Structure,
    label_sets,
    parse_terminology_entry,
    select_structures,
    structures_for,
    structures_from_labels,
    terminology_entry,
    terminology_entry_string,
)
from vendored_data import data_path

ALL_STRUCTURES = [(name, s) for name in label_sets() for s in structures_for(name)]
ALL_IDS = [f"{name}-{s.label_value}" for name, s in ALL_STRUCTURES]


def _shared_rows() -> list[dict[str, str]]:
    path = data_path("terminology", "unetrpp_structures.tsv")
    with path.open(encoding="utf-8") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


def _shared_code(row: dict[str, str], prefix: str) -> Code | None:
    if not row[f"{prefix}_code"]:
        return None
    return Code(row[f"{prefix}_scheme"], row[f"{prefix}_code"], row[f"{prefix}_meaning"])


def test_table_has_every_shared_label_with_the_same_name_codes_and_colour():
    rows = _shared_rows()
    for row in rows:
        structures = {s.label_value: s for s in structures_for(row["dataset"])}
        structure = structures[int(row["label_value"])]
        assert structure.name == row["name"]
        assert structure.color_rgb == tuple(int(c) for c in row["rgb"].split(","))
        assert structure.category == _shared_code(row, "category")
        assert structure.type == _shared_code(row, "type")
        assert structure.modifier == _shared_code(row, "modifier")
        assert structure.region == _shared_code(row, "region")
    # ...and nothing the contract does not have.
    assert sorted(label_sets()) == sorted({row["dataset"] for row in rows})
    assert len(ALL_STRUCTURES) == len(rows)


def test_synapse_keeps_btcv_label_values_without_renumbering():
    names = {s.label_value: s.name for s in structures_for("synapse")}
    assert sorted(names) == list(range(1, 14))
    assert structures_for("synapse") == structures_for("btcv")


@pytest.mark.parametrize(("label_set", "structure"), ALL_STRUCTURES, ids=ALL_IDS)
def test_entry_string_equals_slicer_serialization(label_set, structure):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    entry = slicer.vtkSlicerTerminologyEntry()
    entry.SetTerminologyContextName(structure.context)
    entry.SetRegionContextName(ANATOMIC_CONTEXT)
    for code, target in (
        (structure.category, entry.GetCategoryObject()),
        (structure.type, entry.GetTypeObject()),
        (structure.modifier, entry.GetTypeModifierObject()),
        (structure.region, entry.GetRegionObject()),
    ):
        if code is not None:
            target.SetCodingSchemeDesignator(code.scheme)
            target.SetCodeValue(code.value)
            target.SetCodeMeaning(code.meaning)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert terminology_entry_string(structure) == logic.SerializeTerminologyEntry(entry)


@pytest.mark.parametrize(("label_set", "structure"), ALL_STRUCTURES, ids=ALL_IDS)
def test_slicer_deserializes_our_entry_to_the_same_codes(label_set, structure):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(terminology_entry_string(structure), entry)
    assert entry.GetTerminologyContextName() == structure.context
    got = {
        "category": entry.GetCategoryObject(),
        "type": entry.GetTypeObject(),
        "modifier": entry.GetTypeModifierObject(),
        "region": entry.GetRegionObject(),
    }
    for field, obj in got.items():
        code = getattr(structure, field)
        actual = (obj.GetCodingSchemeDesignator(), obj.GetCodeValue(), obj.GetCodeMeaning())
        if code is None:
            assert not any(actual), field
        else:
            assert actual == (code.scheme, code.value, code.meaning), field


@pytest.mark.parametrize(("label_set", "structure"), ALL_STRUCTURES, ids=ALL_IDS)
def test_only_altered_structures_carry_an_anatomic_region(label_set, structure):
    entry = parse_terminology_entry(terminology_entry_string(structure))
    altered = entry.category.meaning == "Morphologically Altered Structure"
    assert (entry.region is not None) == altered
    assert entry.region_context == ANATOMIC_CONTEXT


@pytest.mark.parametrize(("label_set", "structure"), ALL_STRUCTURES, ids=ALL_IDS)
def test_parse_inverts_serialization(label_set, structure):
    assert parse_terminology_entry(terminology_entry_string(structure)) == terminology_entry(structure)


def test_parse_rejects_malformed_entry():
    with pytest.raises(ValueError, match="7"):
        parse_terminology_entry("context~SCT^1^a")
    with pytest.raises(ValueError, match="category or type"):
        parse_terminology_entry("c~^^~^^~^^~r~^^~^^")


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (["liver"], ["liver"]),
        (["Liver", "SPLEEN"], ["spleen", "liver"]),
        (["right_kidney"], ["right kidney"]),
        (["  left  kidney "], ["left kidney"]),
        (["6", "portal vein"], ["liver", "portal vein and splenic vein"]),
        (["liver", "liver"], ["liver"]),
    ],
    ids=["exact", "case-and-table-order", "underscore", "spaces", "label-value-and-prefix", "duplicate"],
)
def test_select_structures_matches_names(request_, expected):
    chosen = select_structures(structures_for("synapse"), request_)
    assert [s.name for s in chosen] == expected


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (["livr"], "did you mean 'liver'"),
        (["right"], "ambiguous"),
        (["brain"], "choose from: spleen"),
        ([" ", ""], "no structure names given"),
    ],
    ids=["typo", "ambiguous-prefix", "unknown", "empty"],
)
def test_select_structures_rejects_bad_names(request_, fragment):
    with pytest.raises(UnetrppError, match=fragment):
        select_structures(structures_for("synapse"), request_)


def test_select_structures_finds_long_tumour_name_by_prefix():
    chosen = select_structures(structures_for("brats"), ["non-enhancing tumour", "edema"])
    assert [s.label_value for s in chosen] == [1, 2]


def test_unknown_label_set_suggests_closest():
    with pytest.raises(UnetrppError, match="did you mean 'synapse'"):
        structures_for("synapes")


def test_structures_from_labels_reuses_table_entries():
    synapse = {s.label_value: s for s in structures_for("synapse")}
    labels = [(v, s.name) for v, s in synapse.items()]
    assert structures_from_labels("synapse", labels) == tuple(synapse[v] for v in sorted(synapse))


def test_structures_from_labels_codes_known_names_and_colours_unknown_ones():
    liver = next(s for s in structures_for("synapse") if s.name == "liver")
    result = structures_from_labels("phantom", [(2, "blob"), (1, "Liver")])
    assert [s.label_value for s in result] == [1, 2]
    assert (result[0].name, result[0].type, result[0].color_rgb) == ("Liver", liver.type, liver.color_rgb)
    assert not result[1].is_coded and result[1].name == "blob"
    with pytest.raises(ValueError, match="no terminology codes"):
        terminology_entry_string(result[1])


def test_structures_from_labels_rejects_repeated_value():
    with pytest.raises(UnetrppError, match="listed twice"):
        structures_from_labels("phantom", [(1, "a"), (1, "b")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label_value": 0, "name": "x", "color_rgb": (1, 2, 3)},
        {"label_value": 1, "name": "", "color_rgb": (1, 2, 3)},
        {"label_value": 1, "name": "x", "color_rgb": (1, 2, 300)},
        {"label_value": 1, "name": "x", "color_rgb": (1, 2, 3), "category": Code("SCT", "1", "a")},
    ],
    ids=["background-value", "empty-name", "colour-range", "category-without-type"],
)
def test_structure_rejects_invalid_fields(kwargs):
    with pytest.raises(ValueError):
        Structure(**kwargs)


def test_code_rejects_separator_characters():
    with pytest.raises(ValueError):
        Code("SCT", "1", "a~b")


def test_terminology_module_imports_no_torch():
    code = "import sys, unetrpp.labels.terminology; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
