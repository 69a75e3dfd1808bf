"""This project's ``.unetrpp`` format: round trips, tied E/F, atomic writes and clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from official_files import tiny_card, tiny_network
from safetensors import safe_open
from safetensors.torch import save_file
from unetrpp.errors import CheckpointError, OutputExistsError
from unetrpp.models import load_model_file, save_model
from unetrpp.models.checkpoint import read_metadata


def _randomise(network: torch.nn.Module) -> torch.nn.Module:
    """Non-default BatchNorm statistics and biases (weights are random already), so a round trip
    proves that buffers travel too."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            noise = torch.rand(tensor.shape, generator=generator) if tensor.is_floating_point() else None
            if name.endswith("running_var"):
                tensor.copy_(1.0 + 0.2 * noise)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.02 * (noise - 0.5))
    return network


@pytest.mark.parametrize("variant", ["synapse", "acdc", "tumor"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, variant: str) -> None:
    network = _randomise(tiny_network(variant)).eval()
    network.deep_supervision = False
    card = tiny_card(network)

    path = save_model(tmp_path / "tiny.unetrpp", network, card)
    loaded = load_model_file(path)

    as_json = lambda c: json.dumps(c.to_dict(), sort_keys=True)  # noqa: E731 - JSON turns tuples into lists
    assert as_json(loaded.card) == as_json(card)
    assert loaded.plans == card.plans
    assert loaded.network.config == network.config
    assert not loaded.network.training and loaded.network.deep_supervision is False
    image = torch.randn(1, network.config.in_channels, *network.config.patch_size)
    with torch.inference_mode():
        assert torch.equal(loaded.network(image), network(image))
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key


def test_synapse_shared_projection_is_stored_once_and_stays_tied(tmp_path: Path) -> None:
    network = _randomise(tiny_network("synapse"))
    path = save_model(tmp_path / "tiny.unetrpp", network, tiny_card(network))

    with safe_open(str(path), framework="pt") as file:
        stored = set(file.keys())
        aliases = json.loads(file.metadata()["aliases"])
    f_keys = [k for k in network.state_dict() if ".epa_block.F." in k]
    assert f_keys and set(aliases) == set(f_keys)  # every F is an alias of its E ...
    assert all(aliases[k] == k.replace(".F.", ".E.") for k in f_keys)
    assert not stored & set(f_keys)  # ... and not stored twice

    loaded = load_model_file(path).network
    state = loaded.state_dict()
    for f_key in f_keys:
        e_key = f_key.replace(".F.", ".E.")
        assert state[f_key].data_ptr() == state[e_key].data_ptr()
        assert torch.equal(state[f_key], network.state_dict()[f_key])
    # Training the loaded model keeps E and F one layer, as in the reference.
    epa = loaded.unetr_pp_encoder.stages[0][0].epa_block
    assert epa.E is epa.F


def test_existing_file_is_refused_unless_overwrite_and_no_temporary_is_left(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    card = tiny_card(network)
    path = tmp_path / "model.unetrpp"
    path.write_bytes(b"keep me")

    with pytest.raises(OutputExistsError, match="exists"):
        save_model(path, network, card)
    assert path.read_bytes() == b"keep me"

    save_model(path, network, card, overwrite=True)
    assert read_metadata(path)["format"] == "unetrpp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.unetrpp"]


def test_card_without_plans_or_contradicting_the_network_is_not_written(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    card = tiny_card(network)
    with pytest.raises(CheckpointError, match="has no plans"):
        save_model(tmp_path / "a.unetrpp", network, dataclasses.replace(card, plans=None))
    other = tiny_card(tiny_network("synapse", out_channels=5))
    with pytest.raises(CheckpointError, match="plans have 5 classes, the network 3 outputs"):
        save_model(tmp_path / "b.unetrpp", network, other)
    assert list(tmp_path.iterdir()) == []


def _valid_metadata(tmp_path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    network = tiny_network("synapse")
    path = save_model(tmp_path / "valid.unetrpp", network, tiny_card(network))
    with safe_open(str(path), framework="pt") as file:
        return dict(file.metadata()), {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118


def test_foreign_or_future_files_give_one_clear_line(tmp_path: Path) -> None:
    metadata, tensors = _valid_metadata(tmp_path)
    cases = {
        "plain.safetensors": ({"w": torch.zeros(2)}, None, "not a unetrpp model"),
        "no_card.unetrpp": (
            tensors,
            {k: v for k, v in metadata.items() if k != "card"},
            "lacks the card metadata",
        ),
        "future.unetrpp": (tensors, {**metadata, "format_version": "7"}, "newer unetrpp (format version 7"),
        "bad_json.unetrpp": (tensors, {**metadata, "network": "{"}, "'network' metadata is not valid JSON"),
    }
    for name, (content, meta, fragment) in cases.items():
        save_file(content, str(tmp_path / name), metadata=meta)
        with pytest.raises(CheckpointError) as info:
            load_model_file(tmp_path / name)
        assert fragment in str(info.value), name
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(b"\x00" * 3, "not a .unetrpp model file", id="tiny-garbage"),
        pytest.param(b"<html><body>Sign in</body></html>", "not a .unetrpp model file", id="html"),
        pytest.param(None, "truncated", id="truncated"),
    ],
)
def test_unreadable_files_are_rejected(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "broken.unetrpp"
    if content is None:
        network = tiny_network("synapse")
        data = save_model(tmp_path / "whole.unetrpp", network, tiny_card(network)).read_bytes()
        content = data[: len(data) - 1000]
    path.write_bytes(content)

    with pytest.raises(CheckpointError) as info:
        load_model_file(path)

    assert fragment in str(info.value)


def _crafted(tmp_path: Path, edit) -> Path:
    """A valid tiny ``.unetrpp`` file whose metadata ``edit(metadata)`` changed, as an attacker could."""
    network = tiny_network("synapse")
    network.deep_supervision = False
    source = save_model(tmp_path / "good.unetrpp", network, tiny_card(network))
    with safe_open(str(source), framework="pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    edit(metadata)
    crafted = tmp_path / "crafted.unetrpp"
    save_file(tensors, str(crafted), metadata=metadata)
    return crafted


def _set(key: str, change):
    def edit(metadata: dict[str, str]) -> None:
        value = json.loads(metadata[key])
        change(value)
        metadata[key] = json.dumps(value)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(aliases="[]"), "'aliases' metadata is not a mapping"),
        (lambda m: m.update(aliases='"x"'), "'aliases' metadata is not a mapping"),
        (_set("network", lambda n: n.update(feature_size=4096)), "does not fit the 'synapse' network"),
        (
            _set("card", lambda c: c["plans"].update(target_spacing_zyx=[0.004, 0.003, 0.003])),
            "target spacing .* is below 0.1 mm",
        ),
        (_set("card", lambda c: c["plans"].update(num_classes=9)), "plans have 9 classes"),
        (_set("card", lambda c: c["labels"].append([200, "extra"])), "card labels go up to 200"),
    ],
    ids=["aliases-list", "aliases-string", "feature-size-4096", "spacing-4-microns", "classes", "label-200"],
)
def test_crafted_model_files_are_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    crafted = _crafted(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as refused:
        load_model_file(crafted)
    assert "\n" not in str(refused.value) and str(crafted) in str(refused.value)
