"""Official checkpoints: safe loading, plans, clear errors, variant detection and key/shape checks."""

from __future__ import annotations

import builtins
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from official_files import (
    nnunet_plans,
    sibling_plans_path,
    tiny_network,
    write_official_checkpoint,
    write_official_plans,
)
from unetrpp.errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from unetrpp.models import load_official_checkpoint
from unetrpp.models.cards import NormalizationScheme
from unetrpp.models.official import check_state_dict, detect_variant, official_key
from unetrpp.network import build_network
from vendored_data import data_path

VARIANTS = ("synapse", "acdc", "lung", "tumor")


def _outputs_equal_after_loading(network: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    fresh = tiny_network("synapse")
    torch.manual_seed(1)  # different weights than `network` until the state_dict is loaded
    for parameter in fresh.parameters():
        parameter.data.normal_()
    fresh.load_state_dict(state_dict, strict=True)
    network.eval()
    fresh.eval()
    image = torch.randn(1, 1, *network.config.patch_size)
    with torch.inference_mode():
        expected, got = network(image), fresh(image)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("numpy1_names", "legacy_format"),
    [(False, False), (True, False), (False, True)],
    ids=["numpy2-written", "numpy1-written", "legacy-torch-format"],
)
def test_official_checkpoint_with_numpy_training_log_loads_strict(
    tmp_path: Path, numpy1_names: bool, legacy_format: bool
) -> None:
    network = tiny_network("synapse")
    path = tmp_path / "model_final_checkpoint.model"
    write_official_checkpoint(path, network, numpy1_names=numpy1_names, legacy_format=legacy_format)
    if not legacy_format:
        with zipfile.ZipFile(path) as archive:
            pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        # The file really needs the numpy allow-list, under the spelling of the numpy that wrote it.
        assert (b"numpy.core.multiarray\nscalar" in pickled) is numpy1_names
        assert (b"numpy._core.multiarray\nscalar" in pickled) is not numpy1_names

    state_dict, plans = load_official_checkpoint(path)

    assert plans is None  # no sibling .pkl
    assert list(state_dict) == list(network.state_dict())  # 'module.' stripped, order kept
    _outputs_equal_after_loading(network, state_dict)


def test_plans_come_from_the_sibling_pkl_fullres_stage(tmp_path: Path) -> None:
    network = tiny_network("synapse")
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", network)
    raw = nnunet_plans(num_foreground=2, fullres_spacing=(3.0, 0.75, 0.8), transpose_forward=(2, 0, 1))
    raw["transpose_backward"] = [1, 2, 0]
    write_official_plans(sibling_plans_path(path), raw, stage=1)

    _, plans = load_official_checkpoint(path)

    assert plans is not None
    assert plans.target_spacing_zyx == (3.0, 0.75, 0.8)  # stage 1, not the 2x coarser stage 0
    assert plans.patch_size_zyx == (16, 32, 32)
    assert plans.num_classes == 3  # nnU-Net counts foreground only
    assert plans.transpose_forward == (2, 0, 1) and plans.transpose_backward == (1, 2, 0)
    (channel,) = plans.channels
    stats = raw["dataset_properties"]["intensityproperties"][0]
    assert channel.scheme is NormalizationScheme.CT and channel.use_nonzero_mask is False
    assert channel.mean == stats["mean"] and channel.sd == stats["sd"]
    assert (channel.lower_bound, channel.upper_bound) == (stats["percentile_00_5"], stats["percentile_99_5"])
    assert all(type(v) is float for v in (channel.mean, channel.sd, *plans.target_spacing_zyx))


class _RunsCommand:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpensFile:
    """A pickle payload that would create a file through builtins.open when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


PAYLOADS = [pytest.param(_RunsCommand, id="os.system"), pytest.param(_OpensFile, id="builtins.open")]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_model_file_whose_pickle_runs_code_is_refused_and_runs_nothing(
    tmp_path: Path, payload: type, zip_format: bool
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final_checkpoint.model"
    checkpoint = {"epoch": 1, "state_dict": {}, "plot_stuff": payload(marker)}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)

    with pytest.raises(UnsafeCheckpointError, match="refused to load .*nothing was executed") as info:
        load_official_checkpoint(path)

    assert not marker.exists()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("protocol", [2, 4], ids=["protocol2", "protocol4"])
def test_plans_pkl_whose_pickle_runs_code_is_refused_and_runs_nothing(
    tmp_path: Path, payload: type, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", tiny_network("synapse"))
    plans = nnunet_plans()
    plans["dataset_properties"]["extra"] = payload(marker)
    write_official_plans(sibling_plans_path(path), plans, protocol=protocol)

    with pytest.raises(UnsafeCheckpointError, match="refused to load .*\\.pkl.*not plain data"):
        load_official_checkpoint(path)

    assert not marker.exists()


def test_plans_pkl_written_by_numpy1_is_read(tmp_path: Path) -> None:
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", tiny_network("synapse"))
    pkl = write_official_plans(sibling_plans_path(path), nnunet_plans(), protocol=2)
    data = pkl.read_bytes()
    assert b"numpy._core.multiarray\n" in data
    pkl.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))

    _, plans = load_official_checkpoint(path)

    assert plans is not None and plans.channels[0].lower_bound == -958.0


def _write_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _write_html(path: Path) -> None:
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></html>")


def _write_text(path: Path) -> None:
    path.write_text("model weights are at https://example.org/weights\n")


def _write_truncated(path: Path) -> None:
    write_official_checkpoint(path, tiny_network("synapse"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_zip_archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Synapse/model_final_checkpoint.model", b"x")


def _write_corrupt_pickle(path: Path) -> None:
    torch.save({"state_dict": {}}, path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            archive.writestr(info, b"\x80\x02\xff\xfe." if info.filename.endswith("data.pkl") else data)


def _write_without_state_dict(path: Path) -> None:
    torch.save({"epoch": 3, "plot_stuff": ([np.float64(1.0)],)}, path)


def _write_non_tensor_entry(path: Path) -> None:
    torch.save({"state_dict": {"out1.conv.conv.weight": [1.0, 2.0]}}, path)


@pytest.mark.parametrize(
    ("write", "fragment"),
    [
        pytest.param(_write_random, "not a PyTorch checkpoint", id="random-bytes"),
        pytest.param(_write_html, "web page (HTML)", id="html-page"),
        pytest.param(_write_text, "not a PyTorch checkpoint", id="text-file"),
        pytest.param(lambda p: p.write_bytes(b""), "is empty", id="empty"),
        pytest.param(_write_truncated, "truncated", id="truncated"),
        pytest.param(_write_corrupt_pickle, "truncated or corrupt", id="corrupt-pickle"),
        pytest.param(_write_zip_archive, "zip archive, not a PyTorch checkpoint; extract", id="zip-archive"),
        pytest.param(
            _write_without_state_dict, "no 'state_dict' (found: epoch, plot_stuff)", id="no-state-dict"
        ),
        pytest.param(_write_non_tensor_entry, "is a list, not a tensor", id="non-tensor"),
        pytest.param(lambda p: None, "does not exist", id="missing-file"),
    ],
)
def test_not_a_checkpoint_gives_one_clear_line(tmp_path: Path, write, fragment: str) -> None:
    path = tmp_path / "model_final_checkpoint.model"
    write(path)

    with pytest.raises(CheckpointError, match=None) as info:
        load_official_checkpoint(path)

    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_plans_pkl_without_plans_or_with_unknown_scheme_is_rejected(tmp_path: Path) -> None:
    path = write_official_checkpoint(tmp_path / "model_final_checkpoint.model", tiny_network("synapse"))
    pkl = sibling_plans_path(path)
    pkl.write_bytes(pickle.dumps({"init": (), "name": "x"}))
    with pytest.raises(CheckpointError, match="no 'plans' entry"):
        load_official_checkpoint(path)

    plans = nnunet_plans()
    plans["normalization_schemes"][0] = "CT2"
    write_official_plans(pkl, plans)
    with pytest.raises(CheckpointError, match="'CT2', which unetrpp does not implement"):
        load_official_checkpoint(path)

    pkl.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a readable plans pickle"):
        load_official_checkpoint(path)


def _official_shapes(variant: str) -> dict[str, torch.Tensor]:
    """The official state_dict of ``variant`` as meta tensors (shapes only, no memory)."""
    lines = data_path("fixtures", "unetrpp_official", f"{variant}_state_dict.tsv").read_text().splitlines()
    entries = {}
    for line in lines:
        key, shape, _dtype = line.split("\t")
        size = tuple(int(s) for s in shape.split(",")) if shape else ()
        entries[key] = torch.empty(size, device="meta")
    return entries


@pytest.mark.parametrize("variant", VARIANTS)
def test_detect_variant_recognises_each_official_state_dict(variant: str) -> None:
    state_dict = _official_shapes(variant)
    assert detect_variant(state_dict) == variant
    assert detect_variant({"module." + k: v for k, v in state_dict.items()}) == variant


def test_detect_variant_of_tiny_networks_and_foreign_state_dicts() -> None:
    assert detect_variant(tiny_network("synapse").state_dict()) == "synapse"
    assert detect_variant(tiny_network("tumor").state_dict()) == "tumor"
    assert detect_variant(tiny_network("acdc", out_channels=2).state_dict()) == "lung"  # by class count
    assert detect_variant(torch.nn.Conv3d(1, 2, 3).state_dict()) is None
    assert detect_variant({}) is None
    assert official_key("module.out1.conv.conv.weight") == "out1.conv.conv.weight"


@pytest.mark.parametrize(
    ("network_variant", "file_variant", "fragments"),
    [
        pytest.param(
            "synapse",
            "acdc",
            ["unexpected", "conv52", "pos_embed (1, 25600, 32) vs (1, 32768, 32)"],
            id="acdc-into-synapse",
        ),
        pytest.param(
            "acdc",
            "lung",
            ["shape (checkpoint vs network)", "(1, 73728, 32) vs (1, 25600, 32)"],
            id="lung-into-acdc",
        ),
        pytest.param("tumor", "synapse", ["missing", "epa_block.EF"], id="synapse-into-tumor"),
    ],
)
def test_wrong_variant_is_named_with_a_few_mismatching_keys(
    network_variant: str, file_variant: str, fragments: list[str]
) -> None:
    with torch.device("meta"):
        network = build_network(network_variant)
    state_dict = _official_shapes(file_variant)

    with pytest.raises(CheckpointMismatchError) as info:
        check_state_dict(network, state_dict)

    message = str(info.value)
    assert f"does not fit the '{network_variant}' network" in message
    assert f"this file looks like the '{file_variant}' variant" in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message and len(message) < 700  # a few keys, not hundreds


def test_matching_state_dict_passes_the_check() -> None:
    network = tiny_network("synapse")
    check_state_dict(network, network.state_dict())  # no error
    wrong = tiny_network("synapse", out_channels=5).state_dict()
    with pytest.raises(CheckpointMismatchError, match="looks like the 'synapse' variant with other sizes"):
        check_state_dict(network, wrong)
