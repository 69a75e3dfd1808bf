"""Data set layouts (nnU-Net v2, MSD / nnU-Net v1), phantom data sets, statistics and transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.errors import InputImageError, OutputExistsError
from unetrpp.models.cards import NormalizationScheme, Plans
from unetrpp.train.dataset import intensity_normalization, read_dataset, write_phantom_dataset
from unetrpp.train.phantoms import PHANTOM_LABELS, PhantomOptions
from unetrpp.train.transforms import augment_transforms, preprocess_transforms, sampling_transforms

TINY = PhantomOptions(spacing_xy_mm=(3.0, 3.5), spacing_z_mm=(4.0, 5.0), scale=0.5)


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 2, seed=20, options=TINY)


def test_phantom_data_set_has_the_nnunet_layout(phantom_dataset):
    root = phantom_dataset.root
    description = json.loads((root / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "CT"}
    assert description["labels"]["liver"] == 6
    assert [c.name for c in phantom_dataset.cases] == ["phantom_00020", "phantom_00021"]
    assert phantom_dataset.cases[0].images == (root / "imagesTr" / "phantom_00020_0000.nii.gz",)
    assert phantom_dataset.labels == tuple(sorted(PHANTOM_LABELS))
    assert phantom_dataset.label_set == "btcv" and phantom_dataset.is_ct
    with pytest.raises(OutputExistsError):
        write_phantom_dataset(root, 1)


def test_msd_layout_with_value_to_name_labels_is_read(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    image = sitk.Image([8, 8, 4], sitk.sitkInt16)
    sitk.WriteImage(image, str(tmp_path / "imagesTr" / "liver_7.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "labelsTr" / "liver_7.nii.gz"))
    description = {
        "name": "Task03",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    dataset = read_dataset(tmp_path)
    assert dataset.labels == ((1, "liver"), (2, "tumour"))
    assert dataset.cases[0].images == (tmp_path / "imagesTr" / "liver_7.nii.gz",)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda root: (root / "dataset.json").unlink(), "no dataset.json"),
        (lambda root: (root / "dataset.json").write_text('{"labels": {"liver": 1}}'), "no input channels"),
        (lambda root: next((root / "imagesTr").iterdir()).unlink(), "no image for case"),
    ],
    ids=["no-description", "no-channels", "missing-image"],
)
def test_broken_data_sets_are_named(tmp_path, mutate, message):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    image = sitk.Image([8, 8, 4], sitk.sitkInt16)
    sitk.WriteImage(image, str(tmp_path / "imagesTr" / "a_0000.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "labelsTr" / "a.nii.gz"))
    (tmp_path / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1}})
    )
    mutate(tmp_path)
    with pytest.raises(InputImageError, match=message):
        read_dataset(tmp_path)


def test_ct_statistics_are_the_foreground_percentiles_and_moments(phantom_dataset):
    (channel,) = intensity_normalization(phantom_dataset)
    assert channel.scheme is NormalizationScheme.CT
    voxels = []
    for case in phantom_dataset.cases:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[0])))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        voxels.append(image[label > 0][::10].astype(np.float64))
    voxels = np.concatenate(voxels)
    assert channel.mean == pytest.approx(voxels.mean())
    assert channel.sd == pytest.approx(voxels.std())
    assert channel.lower_bound == pytest.approx(np.percentile(voxels, 0.5))
    assert channel.upper_bound == pytest.approx(np.percentile(voxels, 99.5))


def test_transforms_give_patches_in_card_orientation_whatever_the_storage(phantom_dataset, tmp_path):
    case = phantom_dataset.cases[0]
    (norm,) = intensity_normalization(phantom_dataset)
    plans = Plans((norm,), (6.0, 6.0, 6.0), (16, 32, 32), 12, use_nonzero_crop=False)
    # The same volume stored LPS and flipped (RAS): after the reader's reorientation they are identical.
    for code in ("LPS", "RAS"):
        sitk.WriteImage(
            sitk.DICOMOrient(sitk.ReadImage(str(case.images[0])), code), str(tmp_path / f"{code}.nrrd")
        )
        sitk.WriteImage(
            sitk.DICOMOrient(sitk.ReadImage(str(case.label)), code), str(tmp_path / f"{code}_l.nrrd")
        )
    loaded = [
        preprocess_transforms(plans, "RAS")(
            {"image": [str(tmp_path / f"{c}.nrrd")], "label": str(tmp_path / f"{c}_l.nrrd")}
        )
        for c in ("LPS", "RAS")
    ]
    assert np.allclose(np.asarray(loaded[0]["image"]), np.asarray(loaded[1]["image"]))
    assert np.array_equal(np.asarray(loaded[0]["label"]), np.asarray(loaded[1]["label"]))
    # (C, x, y, z), the x index growing towards the patient's right: the liver has larger x than the spleen.
    label = np.asarray(loaded[0]["label"])[0]
    assert np.argwhere(label == 6)[:, 0].mean() > np.argwhere(label == 1)[:, 0].mean()
    # CT normalisation: clipped to the percentiles, then z-scored.
    upper = (norm.upper_bound - norm.mean) / norm.sd
    assert float(np.asarray(loaded[0]["image"]).max()) == pytest.approx(upper, abs=1e-4)

    item = sampling_transforms(plans.patch_size_zyx)(loaded[0])
    augment = augment_transforms(plans.patch_size_zyx, samples_per_case=2)
    augment.set_random_state(seed=0)
    samples = augment(item)
    assert len(samples) == 2
    assert tuple(samples[0]["image"].shape) == (1, 16, 32, 32)  # (C, z, y, x)
    assert tuple(samples[0]["label"].shape) == (1, 16, 32, 32)
