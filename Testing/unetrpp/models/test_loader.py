"""``load_model``: from a .unetrpp file, an official checkpoint (+ plans) or a registry name."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from official_files import (
    nnunet_plans,
    sibling_plans_path,
    tiny_card,
    tiny_network,
    write_official_checkpoint,
    write_official_plans,
)
from unetrpp.errors import CheckpointError, CheckpointMismatchError, ModelNotFoundError
from unetrpp.events import Event, StageEvent, WarningEvent
from unetrpp.models import LoadedModel, load_model, save_model
from unetrpp.models.loader import load_model_path
from unetrpp.models.registry import find_card
from unetrpp.network import build_network
from vendored_data import GOLDEN_DIR, GOLDEN_WEIGHTS, data_path, golden_sample, small_golden


def _same_outputs(network: torch.nn.Module, loaded: LoadedModel) -> None:
    network.eval()
    network.deep_supervision = False
    image = torch.randn(1, network.config.in_channels, *network.config.patch_size)
    with torch.inference_mode():
        assert torch.equal(loaded.network(image), network(image))


def test_importing_the_models_package_needs_no_torch() -> None:
    code = (
        "import sys, unetrpp.models, unetrpp.models.registry, unetrpp.models.loader; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert callable(unetrpp.models.load_model)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("as_type", [str, Path], ids=["str", "Path"])
def test_unetrpp_file_loads_ready_for_inference(tmp_path: Path, as_type: type) -> None:
    network = tiny_network("synapse")
    path = save_model(tmp_path / "tiny.unetrpp", network, tiny_card(network))
    events: list[Event] = []

    loaded = load_model(as_type(path), on_event=events.append)

    assert isinstance(loaded, LoadedModel) and loaded.source == path
    assert not loaded.network.training and loaded.network.deep_supervision is False
    assert loaded.plans == loaded.card.plans
    assert any(isinstance(e, StageEvent) and e.stage == "load_model" for e in events)
    _same_outputs(network, loaded)


def test_official_checkpoint_with_pkl_plans_loads_strict(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", network)
    write_official_plans(sibling_plans_path(path), nnunet_plans(fullres_spacing=(2.5, 0.7, 0.7)))
    card = tiny_card(network)

    loaded = load_model_path(path, card=card)

    assert loaded.plans.target_spacing_zyx == (2.5, 0.7, 0.7)  # the .pkl wins over the card's plans
    assert loaded.card.plans == loaded.plans and loaded.card.name == card.name
    assert loaded.network.deep_supervision is False and not loaded.network.training
    _same_outputs(network, loaded)


def test_official_checkpoint_without_pkl_uses_the_card_plans_or_says_what_is_missing(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", network)
    card = tiny_card(network)

    assert load_model_path(path, card=card).plans == card.plans

    with pytest.raises(CheckpointError, match="without plans .* 'model_final_checkpoint.model.pkl'"):
        load_model_path(path, card=dataclasses.replace(card, plans=None))

    write_official_plans(sibling_plans_path(path), nnunet_plans(num_foreground=5))
    with pytest.raises(
        CheckpointError, match="plans describe 1 input\\(s\\) and 6 classes, the weights 1 .* 3 outputs"
    ):
        load_model_path(path, card=card)


def test_plans_with_another_patch_size_tile_with_the_network_patch_and_warn(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", network)
    write_official_plans(sibling_plans_path(path), nnunet_plans(fullres_patch=(48, 96, 96)))
    events: list[Event] = []

    loaded = load_model_path(path, card=tiny_card(network), on_event=events.append)

    assert loaded.plans.patch_size_zyx == (16, 32, 32)
    assert [e for e in events if isinstance(e, WarningEvent) and "(48, 96, 96)" in e.message]


def test_official_file_is_matched_to_the_registry_card_of_its_variant(tmp_path: Path) -> None:
    # A tiny synapse-structured file: the registry's synapse card is picked, and the size mismatch is named.
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", tiny_network("synapse"))

    with pytest.raises(
        CheckpointMismatchError, match="'synapse' network: .*looks like the 'synapse' variant with"
    ):
        load_model(path)


def test_registry_name_without_installed_weights_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path))

    with pytest.raises(ModelNotFoundError) as info:
        load_model("acdc")

    message = str(info.value)
    assert "`unetrpp download acdc`" in message and "`unetrpp models import PATH --name acdc`" in message


def test_unknown_name_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="did you mean 'synapse'"):
        load_model("synapes")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere.unetrpp")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "model_final_checkpoint.model"))


def test_a_bundled_model_name_is_the_model_even_where_a_folder_has_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model demo`` from a folder that holds a ``demo`` folder (a study, say) is the bundled model;
    ``./demo`` is the folder, and a name of no bundled model that exists is the path."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_model("demo").card.name == "demo"
    with pytest.raises(ModelNotFoundError, match="^folder demo must hold exactly one model file"):
        load_model("./demo")
    with pytest.raises(ModelNotFoundError, match="^folder mine must hold exactly one model file"):
        load_model("mine")


def test_a_device_or_a_pipe_given_as_model_is_named_for_what_it_is(tmp_path: Path) -> None:
    pipe = tmp_path / "model_final_checkpoint.model"
    os.mkfifo(pipe)
    for path, what in ((Path("/dev/zero"), "a character device"), (pipe, "a named pipe")):
        with pytest.raises(ModelNotFoundError) as refused:
            load_model(str(path))
        message = str(refused.value)
        assert "does not exist" not in message
        assert message == f"model file {path} is {what}, not a regular file; give a .unetrpp or .model file"


def test_registry_name_loads_the_weights_imported_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unetrpp.models import store

    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    synapse = find_card("synapse")
    network = tiny_network("synapse", out_channels=synapse.num_classes)
    card = dataclasses.replace(tiny_card(network, name="synapse"), labels=synapse.labels)
    exported = save_model(tmp_path / "small-synapse.unetrpp", network, card)
    store.import_weights(exported, "synapse")

    loaded = load_model("synapse")

    assert loaded.card.labels == synapse.labels
    assert loaded.source is not None and loaded.source.is_relative_to(tmp_path / "home")
    _same_outputs(network, loaded)


def test_reference_golden_weights_survive_export_to_unetrpp(tmp_path: Path) -> None:
    """The reference's own state_dict (strided views, E/F shared) → .unetrpp → the reference's logits."""
    golden_path = data_path(*GOLDEN_DIR, GOLDEN_WEIGHTS)  # config + state_dict, as the reference saved them
    golden = small_golden()
    network = build_network("synapse", feature_size=2, out_channels=2)

    official = load_model_path(golden_path, card=tiny_card(network, name="golden"))
    exported = save_model(tmp_path / "golden.unetrpp", official.network, official.card)
    loaded = load_model(exported)

    with torch.inference_mode():
        logits = loaded.network(golden["input"])
    assert list(logits.shape) == golden["full_resolution_shape"]
    expected = golden["outputs_full_resolution_sample"]  # the full-resolution logits on a fixed voxel grid
    assert torch.allclose(golden_sample(logits, golden), expected, atol=1e-5, rtol=0)


def test_a_fold_folder_loads_its_one_model_file(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    fold = tmp_path / "fold_0"
    fold.mkdir()
    write_official_checkpoint(fold / "model_final_checkpoint.model", network)
    write_official_checkpoint(fold / "model_best.model", tiny_network("synapse", out_channels=5))
    write_official_plans(
        sibling_plans_path(fold / "model_final_checkpoint.model"), nnunet_plans(num_foreground=2)
    )

    loaded = load_model_path(fold, card=tiny_card(network))

    assert loaded.source == fold / "model_final_checkpoint.model"
    _same_outputs(network, loaded)
    save_model(fold / "a.unetrpp", network, tiny_card(network))
    save_model(fold / "b.unetrpp", network, tiny_card(network))
    with pytest.raises(ModelNotFoundError, match="exactly one model file \\(a.unetrpp, b.unetrpp\\)"):
        load_model(fold)
