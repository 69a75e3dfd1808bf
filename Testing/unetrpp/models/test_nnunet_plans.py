"""nnU-Net v1 plans → typed Plans: stage choice, schemes per channel, foreground count, errors."""

from __future__ import annotations

import pytest
from official_files import nnunet_plans
from unetrpp.errors import CheckpointError
from unetrpp.models.cards import NormalizationScheme
from unetrpp.models.nnunet_plans import plans_from_nnunet_dict


def test_brats_like_mri_plans_use_per_image_zscore_inside_the_mask() -> None:
    modalities = {0: "FLAIR", 1: "T1w", 2: "t1gd", 3: "T2w"}
    raw = nnunet_plans(modalities=modalities, num_foreground=3, fullres_spacing=(1.0, 1.0, 1.0))
    assert raw["dataset_properties"]["intensityproperties"] is None  # nnU-Net collects them for CT only

    plans = plans_from_nnunet_dict(raw)

    assert plans.num_input_channels == 4 and plans.num_classes == 4
    for channel in plans.channels:
        assert channel.scheme is NormalizationScheme.ZSCORE and channel.use_nonzero_mask is True
        assert channel.mean is None  # per-image statistics, nothing stored


def test_stage_argument_and_single_stage_plans() -> None:
    raw = nnunet_plans(fullres_spacing=(3.0, 0.8, 0.8))
    assert plans_from_nnunet_dict(raw, stage=0).target_spacing_zyx == (6.0, 1.6, 1.6)  # 3d_lowres
    assert plans_from_nnunet_dict(raw, stage=None).target_spacing_zyx == (3.0, 0.8, 0.8)  # last = fullres
    assert plans_from_nnunet_dict(raw, stage=7).target_spacing_zyx == (3.0, 0.8, 0.8)  # unknown: fullres

    raw["plans_per_stage"] = {0: raw["plans_per_stage"][1]}
    assert plans_from_nnunet_dict(raw).patch_size_zyx == (16, 32, 32)


def test_old_plans_without_transposes_assume_identity() -> None:
    raw = nnunet_plans()
    del raw["transpose_forward"], raw["transpose_backward"]
    plans = plans_from_nnunet_dict(raw)
    assert plans.transpose_forward == plans.transpose_backward == (0, 1, 2)


def _without(key: str):
    def change(raw):
        del raw[key]

    return change


def _without_stat(raw) -> None:
    del raw["dataset_properties"]["intensityproperties"][0]["percentile_99_5"]


def _two_d(raw) -> None:
    raw["plans_per_stage"][1]["patch_size"] = [128, 128]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(_without("plans_per_stage"), "plans['plans_per_stage']", id="no-stages"),
        pytest.param(_without("normalization_schemes"), "['normalization_schemes']", id="no-schemes"),
        pytest.param(_without("num_classes"), "['num_classes']", id="no-num-classes"),
        pytest.param(_without_stat, "intensityproperties[0]['percentile_99_5']", id="no-percentile"),
        pytest.param(_two_d, "not 3D", id="2d-plans"),
    ],
)
def test_incomplete_plans_name_what_is_missing(change, fragment: str) -> None:
    raw = nnunet_plans()
    change(raw)
    with pytest.raises(CheckpointError) as info:
        plans_from_nnunet_dict(raw)
    assert fragment in str(info.value)
