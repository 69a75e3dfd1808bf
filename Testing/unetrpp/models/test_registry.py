"""The bundled model cards: consistent with the network variants, the terminology and the reference facts."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import subprocess
import sys

import pytest
from unetrpp.errors import ModelNotFoundError
from unetrpp.labels.terminology import structures_for
from unetrpp.models.cards import ModelCard, NormalizationScheme
from unetrpp.models.registry import (
    BUNDLED_SCHEME,
    bundled_file,
    card_names,
    card_with_model_file,
    find_card,
    list_cards,
)
from unetrpp.network.config import VARIANTS
from vendored_data import data_path

OFFICIAL = ("synapse", "acdc", "lung", "tumor")
ALL_CARDS = [pytest.param(card, id=card.name) for card in list_cards()]
OFFICIAL_CARDS = [pytest.param(find_card(name), id=name) for name in OFFICIAL]


def test_every_expected_model_has_exactly_one_card():
    assert sorted(card_names()) == sorted([*OFFICIAL, "demo"])


@pytest.mark.parametrize("card", ALL_CARDS)
def test_card_survives_a_json_round_trip(card: ModelCard):
    assert ModelCard.from_dict(card.to_dict()) == card


@pytest.mark.parametrize("card", ALL_CARDS)
def test_card_labels_match_the_shared_terminology_table(card: ModelCard):
    with data_path("terminology", "unetrpp_structures.tsv").open(encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream, delimiter="\t") if row["dataset"] == card.label_set]
    table = {int(row["label_value"]): row["name"] for row in rows}
    assert table, f"label set {card.label_set!r} is not in the shared table"
    for value, name in card.labels:
        assert table.get(value) == name, f"{card.name}: label {value} {name!r} vs table {table.get(value)!r}"


@pytest.mark.parametrize("card", ALL_CARDS)
def test_card_labels_match_the_packaged_structures(card: ModelCard):
    packaged = {s.label_value: s.name for s in structures_for(card.label_set)}
    assert all(packaged.get(value) == name for value, name in card.labels)


@pytest.mark.parametrize("card", OFFICIAL_CARDS)
def test_official_card_matches_its_network_variant(card: ModelCard):
    config = VARIANTS[card.variant]
    assert card.variant == card.name
    assert card.patch_size_zyx == config.patch_size
    assert card.num_inputs == config.in_channels
    assert card.num_classes == config.out_channels  # every output channel is named
    assert card.network_overrides == {}


@pytest.mark.parametrize("card", OFFICIAL_CARDS)
def test_official_card_documents_source_licence_citation_and_accuracy(card: ModelCard):
    assert card.weights and all(w.format == "official" for w in card.weights)
    assert all(w.filename == "model_final_checkpoint.model" for w in card.weights)
    hosts = ("https://drive.google.com/file/d/", "https://mbzuaiac-my.sharepoint.com/")
    assert all(w.url.startswith(hosts) for w in card.weights)
    assert "Apache-2.0" in card.licence
    assert "IEEE Transactions on Medical Imaging, 2024" in card.citation
    assert card.paper_accuracy and card.title and card.task
    assert "confidence" in card.orientation_note  # the evidence says how sure it is
    assert "not measured with the official weights" in card.orientation_note.lower()
    # The paper's figures are the paper's: nothing here could reproduce them (issue 13, item 4).
    assert "not reproduced by this project" in card.paper_accuracy or "not verified" in card.paper_accuracy


# From the training data (the fidelity review): BTCV label anatomy is LAS in 30/30 cases; MSD CT holds
# LPS anatomy under RAS-like headers; BraTS files have an identity (RAS) affine; ACDC stacks are oblique
# under a fake header, so only their stored order is meaningful.
@pytest.mark.parametrize(
    ("name", "orientation"), [("synapse", "LAS"), ("lung", "LPS"), ("tumor", "RAS"), ("acdc", "native")]
)
def test_official_cards_orient_as_their_training_data(name, orientation):
    assert find_card(name).orientation == orientation


def test_synapse_card_carries_the_reference_plans():
    card = find_card("synapse")
    plans = card.plans
    assert plans is not None
    (channel,) = plans.channels
    assert channel.scheme is NormalizationScheme.CT and not channel.use_nonzero_mask
    assert (channel.lower_bound, channel.upper_bound) == (-958.0, 326.0)
    assert (channel.mean, channel.sd) == (82.95177, 136.94818)
    assert plans.target_spacing_zyx == (3.0, 0.75781244, 0.75781244)
    assert plans.patch_size_zyx == card.patch_size_zyx
    assert plans.num_classes == card.num_classes == 14
    assert plans.transpose_forward == plans.transpose_backward == (0, 1, 2)


@pytest.mark.parametrize("name", ["acdc", "lung", "tumor"])
def test_other_official_cards_read_plans_from_the_weights(name):
    card = find_card(name)
    assert card.plans is None and "plans shipped with the weights" in card.notes


def test_tumor_inputs_are_in_decathlon_order():
    assert find_card("tumor").input_channels == ("FLAIR", "T1w", "T1gd", "T2w")


def test_demo_card_points_at_the_packaged_model_file():
    card = find_card("demo")
    (source,) = card.weights
    assert source.url == BUNDLED_SCHEME + "unetrpp/data/models/demo.unetrpp"
    assert source.format == "unetrpp" and source.filename == "demo.unetrpp"


def test_the_demo_card_pins_the_size_and_sha256_of_its_bundled_file():
    # Regenerating demo.unetrpp means updating its pin in models.json: `models verify demo` compares them.
    card = find_card("demo")
    path = bundled_file(card)
    assert card.weights[0].size_bytes == path.stat().st_size
    assert card.weights[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_card_takes_labels_plans_and_network_from_its_model_file(tmp_path):
    import torch
    from unetrpp.models.checkpoint import save_model
    from unetrpp.network import build_network

    torch.manual_seed(0)
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, out_channels=3)
    plans = dataclasses.replace(find_card("synapse").plans, patch_size_zyx=(16, 32, 32), num_classes=3)
    trained = dataclasses.replace(
        find_card("synapse"),
        name="phantom-model",
        labels=((1, "spleen"), (2, "right kidney")),
        label_set="btcv",
        network_overrides={"patch_size": [16, 32, 32], "feature_size": 4, "out_channels": 3},
        patch_size_zyx=(16, 32, 32),
        plans=plans,
        notes="validation Dice 0.9",
    )
    path = save_model(tmp_path / "demo.unetrpp", network, trained)

    demo = find_card("demo")
    merged = card_with_model_file(demo, path)
    assert (merged.name, merged.title, merged.weights) == (demo.name, demo.title, demo.weights)
    assert merged.labels == trained.labels and merged.label_set == "btcv"
    assert merged.plans == plans and merged.patch_size_zyx == (16, 32, 32)
    assert merged.network_overrides == trained.network_overrides
    assert merged.notes.endswith("validation Dice 0.9")


def test_unreadable_bundled_file_leaves_the_card_unchanged(tmp_path):
    broken = tmp_path / "demo.unetrpp"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert card_with_model_file(find_card("demo"), broken) == find_card("demo")


@pytest.mark.parametrize(
    ("wanted", "fragment"),
    [("synapes", "did you mean 'synapse'"), ("tumour", "did you mean 'tumor'"), ("xyzzy", "lists them")],
    ids=["typo", "british-spelling", "unrelated"],
)
def test_unknown_name_suggests_the_closest(wanted, fragment):
    with pytest.raises(ModelNotFoundError, match=fragment):
        find_card(wanted)


def test_names_are_case_insensitive():
    assert find_card(" Synapse ").name == "synapse"


def test_registry_imports_no_torch():
    code = "import sys, unetrpp.models.registry as r; r.list_cards(); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"
