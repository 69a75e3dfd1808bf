"""The modality check on real scans: a CT model warns on every vendored MR (and names a DICOM Modality),
an MR model on every vendored CT, neither on its own kind; ``segment()`` emits it as one WarningEvent
before inference unless ``check_modality=False``."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn
from unetrpp.events import StageEvent, WarningEvent
from unetrpp.models.cards import ChannelNormalization, ModelCard, Plans
from unetrpp.models.loader import LoadedModel
from unetrpp.models.registry import find_card
from unetrpp.pipeline.io import read_image
from unetrpp.pipeline.modality import (
    CT_MIN_AIR_FRACTION,
    MR_MAX_AIR_FRACTION,
    SAMPLE_VOXELS,
    dicom_modality,
    expects_ct,
    intensity_stats,
    modality_warning,
)
from unetrpp.pipeline.predictor import SegmentOptions, segment
from vendored_data import data_path

REAL_CTS = {
    "totalseg-ct-nifti": "totalseg_example_ct/example_ct.nii.gz",
    "totalseg-ct-dicom": "totalseg_example_ct/example_ct_dicom",
    "dcmqi-ct-3slice-dicom": "dcmqi_ct3slice/dicom",
}
REAL_MRS = {
    "brain-mr-las": "monai_brain_mr_las/anatomical.nii",
    "abdomen-mr": "totalseg_example_ct/example_mr_sm.nii.gz",
    "mr-dicom-sagittal": "dcmqa_mr_decubitus_hfdr_sag",
    "brats-flair": "brats2021_flair_edema/BraTS2021_01646_flair.nii.gz",
    "prostate-t2": "monai_prostate_mr_oblique/test_0000_t2_tse_tra_4.nii.gz",
    "prostate-dwi": "monai_prostate_mr_oblique/test_0000_ep2d_diff_tra_7.nii.gz",
}
DICOM_SCANS = {"totalseg-ct-dicom", "dcmqi-ct-3slice-dicom", "mr-dicom-sagittal"}


def _scan(relative: str) -> sitk.Image:
    return read_image(data_path("real_inputs", *relative.split("/")))


def _mr_card(num_inputs: int = 1) -> ModelCard:
    """A one-channel MR model card with z-score (nonCT) plans, as an MR model's."""
    channels = tuple(ChannelNormalization("nonCT", use_nonzero_mask=True) for _ in range(num_inputs))
    plans = Plans(channels, (3.0, 3.0, 3.0), (16, 32, 32), 2)  # the example CT's spacing: no resampling
    return ModelCard(
        name="tiny-mr",
        title="tiny MR model (test)",
        task="test",
        modality="MR",
        input_channels=("T2w",) if num_inputs == 1 else tuple(f"MR{n + 1}" for n in range(num_inputs)),
        label_set="synapse",
        labels=((1, "spleen"),),
        variant="synapse",
        patch_size_zyx=plans.patch_size_zyx,
        plans=plans,
    )


@pytest.mark.parametrize("scan", list(REAL_CTS), ids=list(REAL_CTS))
def test_real_cts_have_air_and_pass_a_ct_model_but_warn_an_mr_model(scan):
    image = _scan(REAL_CTS[scan])
    stats = intensity_stats(image)
    assert stats.air_fraction > 0.3  # measured 0.359, 0.650, 0.551: 60x above the CT threshold
    assert stats.minimum <= -1000
    assert modality_warning([image], find_card("demo")) is None
    assert modality_warning([image], find_card("synapse")) is None

    warning = modality_warning([image], _mr_card())
    assert warning is not None and "\n" not in warning
    assert warning.startswith("model 'tiny-mr' expects MR, not CT, but the input")
    if scan in DICOM_SCANS:
        assert "DICOM series of Modality CT" in warning
    else:
        assert "looks like a CT in Hounsfield units" in warning


@pytest.mark.parametrize("scan", list(REAL_MRS), ids=list(REAL_MRS))
def test_real_mrs_have_no_air_and_warn_a_ct_model_but_pass_an_mr_model(scan):
    image = _scan(REAL_MRS[scan])
    stats = intensity_stats(image)
    assert stats.air_fraction < CT_MIN_AIR_FRACTION / 10  # measured at most 0.0001 (the brain MR)
    assert stats.minimum > -900

    warning = modality_warning([image], find_card("demo"))
    assert warning is not None and "\n" not in warning
    assert warning.startswith("model 'demo' expects CT in Hounsfield units, but the input ")
    if scan in DICOM_SCANS:
        assert "is a DICOM series of Modality MR" in warning
        # Without the tag, the voxels alone give the same answer.
        assert "has no air" in modality_warning([image], find_card("demo"), dicom_modalities=[None])
    else:
        assert "has no air" in warning and "below -500 HU" in warning
    assert modality_warning([image], _mr_card()) is None
    assert modality_warning([image], find_card("acdc")) is None


def test_the_brain_mr_that_came_back_as_a_right_kidney_is_named_with_its_numbers():
    """The measured case of issue 11: the brain MR through the CT demo model."""
    image = _scan(REAL_MRS["brain-mr-las"])
    warning = modality_warning([image], find_card("demo"))
    assert warning == (
        "model 'demo' expects CT in Hounsfield units, but the input has no air: 0.0059% of its voxels "
        "below -500 HU, where a CT of a body has air around or inside it (values -610 to 30393: an MR, or "
        "a CT not in Hounsfield units?); its result would be meaningless"
    )


def test_dicom_series_carry_their_modality_tag():
    assert dicom_modality(_scan(REAL_MRS["mr-dicom-sagittal"])) == "MR"
    assert dicom_modality(_scan(REAL_CTS["dcmqi-ct-3slice-dicom"])) == "CT"
    assert dicom_modality(_scan(REAL_CTS["totalseg-ct-nifti"])) is None  # a NIfTI file has no tag
    assert dicom_modality(np.zeros((2, 2, 2))) is None


def test_a_dicom_modality_other_than_ct_warns_a_ct_model_even_with_ct_like_voxels():
    ct = _scan(REAL_CTS["totalseg-ct-nifti"])
    warning = modality_warning([ct], find_card("demo"), dicom_modalities=["PT"])
    assert warning is not None and "DICOM series of Modality PT" in warning
    assert modality_warning([ct], find_card("demo"), dicom_modalities=["ct "]) is None
    # An MR model trusts a non-CT tag over the voxels; a CT tag warns it.
    assert modality_warning([ct], _mr_card(), dicom_modalities=["MR"]) is None
    assert "Modality CT" in modality_warning(
        [_scan(REAL_MRS["brain-mr-las"])], _mr_card(), dicom_modalities=["CT"]
    )


def test_a_ct_dicom_tag_does_not_excuse_voxels_that_are_not_in_hounsfield_units():
    """A CT stored without its rescale (air at 0, water at 1024) says CT but is not in HU."""
    ct = sitk.GetArrayFromImage(_scan(REAL_CTS["totalseg-ct-nifti"]))
    unscaled = np.clip(ct + 1024, 0, None)
    warning = modality_warning([unscaled], find_card("demo"), dicom_modalities=["CT"])
    assert warning is not None and "has no air" in warning


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).random((20, 30, 30)).astype(np.float32),  # normalised to [0, 1]
        np.random.default_rng(1).normal(0, 1, (20, 30, 30)).astype(np.float32),  # z-scores
    ],
    ids=["unit-range-floats", "z-scores"],
)
def test_normalised_images_cannot_be_hounsfield_units(array):
    assert "has no air" in modality_warning([array], find_card("demo"))
    assert modality_warning([array], _mr_card()) is None


def test_an_image_of_air_only_is_not_called_an_mr():
    """No body, nothing to say about it (the pipeline segments it, and finds nothing)."""
    assert modality_warning([np.full((10, 10, 10), -1000, np.int16)], find_card("demo")) is None


def test_the_thresholds_lie_between_the_real_scans_with_a_wide_margin():
    ct_air = [intensity_stats(_scan(p)).air_fraction for p in REAL_CTS.values()]
    mr_air = [intensity_stats(_scan(p)).air_fraction for p in REAL_MRS.values()]
    assert max(mr_air) * 10 < CT_MIN_AIR_FRACTION < min(ct_air) / 10
    assert max(mr_air) < MR_MAX_AIR_FRACTION < min(ct_air) / 3


def test_a_large_volume_is_subsampled_and_checked_in_well_under_a_second():
    ct = sitk.GetArrayFromImage(_scan(REAL_CTS["totalseg-ct-nifti"]))  # 112 x 101 x 122
    large = np.tile(ct, (3, 5, 4))  # 336 x 505 x 488 = 83 M voxels, as a 512 x 512 x 330 CT
    assert large.size > 80 * SAMPLE_VOXELS
    started = time.perf_counter()
    stats = intensity_stats(large)
    elapsed = time.perf_counter() - started
    assert abs(stats.air_fraction - float((ct < -500).mean())) < 0.01
    assert elapsed < 1.0
    assert modality_warning([large], find_card("demo")) is None


def test_which_channels_are_ct_comes_from_the_plans_then_the_card():
    assert expects_ct(find_card("synapse")) == (True,)  # its card has plans
    assert expects_ct(find_card("demo")) == (True,)  # no plans on the card: its modality "CT"
    assert expects_ct(find_card("tumor")) == (False,) * 4
    ct = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1000.0, upper_bound=1000.0)
    mixed = Plans((ct, ChannelNormalization("nonCT")), (1.0, 1.0, 1.0), (16, 32, 32), 2)
    card = _mr_card(2)
    assert expects_ct(card, mixed) == (True, False)  # a CT + PET model: the loaded plans decide


def test_a_ct_in_one_channel_of_the_four_channel_mr_model_is_named_by_channel():
    mr = sitk.GetArrayFromImage(_scan(REAL_MRS["brats-flair"]))
    ct = sitk.GetArrayFromImage(_scan(REAL_CTS["totalseg-ct-nifti"]))
    warning = modality_warning([mr, ct, mr, mr], find_card("tumor"))
    assert warning is not None
    assert "but input 2 (T1w) looks like a CT in Hounsfield units" in warning
    assert "input 1" not in warning and "input 3" not in warning
    assert modality_warning([mr] * 4, find_card("tumor")) is None


class _ConstantNetwork(nn.Module):
    """Stand-in network: labels everything background, instantly."""

    def __init__(self, patch_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_size=patch_size, in_channels=1, out_channels=2)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros((batch.shape[0], 2, *batch.shape[2:]), dtype=batch.dtype)
        scores[:, 0] = 1.0
        return scores


def _segment_events(image: sitk.Image, card: ModelCard, **options) -> list:
    plans = card.plans
    model = LoadedModel(_ConstantNetwork(plans.patch_size_zyx), card, plans)
    events: list = []
    segment(
        image, model, options=SegmentOptions(device="cpu", overlap=0.0, **options), on_event=events.append
    )
    return events


def _small_real_ct() -> sitk.Image:
    """A 40 x 40 x 20 block of the real CT across the body's edge: tissue and the air around it (a block
    inside the body, ct[20:60, 20:60, 50:70], has no air at all: the CT model's documented false alarm)."""
    ct = _scan(REAL_CTS["totalseg-ct-nifti"])
    block = ct[80:120, 0:40, 50:70]
    assert 0.3 < intensity_stats(block).air_fraction < 0.5  # 0.36, as the whole CT
    return block


def test_segment_warns_an_mr_model_on_a_real_ct_once_before_inference():
    events = _segment_events(_small_real_ct(), _mr_card())
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert len(warnings) == 1
    assert warnings[0].message.startswith("model 'tiny-mr' expects MR, not CT, but the input looks like a CT")
    assert warnings[0].message.endswith("(--force-modality skips this check)")
    inference = next(e for e in events if isinstance(e, StageEvent) and e.stage == "inference")
    assert events.index(warnings[0]) < events.index(inference)


def test_segment_check_modality_false_skips_the_check():
    events = _segment_events(_small_real_ct(), _mr_card(), check_modality=False)
    assert not [e for e in events if isinstance(e, WarningEvent)]


def test_segment_does_not_warn_a_ct_model_on_a_real_ct():
    ct = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1000.0, upper_bound=1000.0)
    plans = dataclasses.replace(_mr_card().plans, channels=(ct,))
    card = dataclasses.replace(_mr_card(), name="tiny-ct", modality="CT", input_channels=("CT",), plans=plans)
    events = _segment_events(_small_real_ct(), card)
    # (its stand-in network finds no structure, which has a warning of its own: not a modality one)
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert not [message for message in warnings if "no structure was found" not in message]
