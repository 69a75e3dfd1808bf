"""Every real scan in Testing/data/real_inputs either goes read -> reorient -> preprocess -> restore exactly
onto its own grid, or fails with one clear line.

The network is replaced by a deterministic stand-in that is not part of the code under test: a threshold
of the preprocessed array. The threshold is mapped to the network grid with the normalisation that
preprocessing reports, so the restored mask must cover the same voxels as the same threshold applied to
the original image, up to resampling (Dice > 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.errors import InputImageError
from unetrpp.models.cards import ChannelNormalization, Plans
from unetrpp.pipeline.geometry import orientation_code, reorient, restore_orientation
from unetrpp.pipeline.io import read_image
from unetrpp.pipeline.postprocess import restore_label_map
from unetrpp.pipeline.preprocess import preprocess
from vendored_data import data_path

# Plans of the kind the models use: Synapse-like CT (BTCV statistics), brain MR (BraTS-like, masked
# z-score at 1 mm), prostate MR (MSD prostate-like anisotropic), abdominal MR.
CT_PLANS = Plans(
    channels=(ChannelNormalization("CT", False, mean=99.4, sd=39.4, lower_bound=-958.0, upper_bound=327.0),),
    target_spacing_zyx=(3.0, 0.76, 0.76),
    patch_size_zyx=(64, 128, 128),
    num_classes=2,
)
BRAIN_PLANS = Plans(
    channels=(ChannelNormalization("nonCT", True),),
    target_spacing_zyx=(1.0, 1.0, 1.0),
    patch_size_zyx=(128, 128, 128),
    num_classes=2,
)
PROSTATE_PLANS = Plans(
    channels=(ChannelNormalization("nonCT", False),),
    target_spacing_zyx=(3.6, 0.62, 0.62),
    patch_size_zyx=(16, 160, 160),
    num_classes=2,
)
ABDOMEN_MR_PLANS = Plans(
    channels=(ChannelNormalization("nonCT", False),),
    target_spacing_zyx=(3.0, 1.5, 1.5),
    patch_size_zyx=(32, 128, 128),
    num_classes=2,
)


@dataclass(frozen=True)
class Case:
    path: tuple[str, ...]
    plans: Plans
    threshold: float | None  # in the image's own units; None: mean + sd / 4 of what preprocessing normalised


CASES = {
    "totalseg-ct-nifti": Case(("totalseg_example_ct", "example_ct.nii.gz"), CT_PLANS, -300.0),
    "totalseg-ct-dicom": Case(("totalseg_example_ct", "example_ct_dicom"), CT_PLANS, -300.0),
    "ct-3-slices-dicom": Case(("dcmqi_ct3slice", "dicom"), CT_PLANS, -300.0),
    "abdomen-mr-lps": Case(("totalseg_example_ct", "example_mr_sm.nii.gz"), ABDOMEN_MR_PLANS, None),
    "decubitus-sagittal-mr-dicom": Case(("dcmqa_mr_decubitus_hfdr_sag",), BRAIN_PLANS, None),
    "oblique-prostate-t2": Case(
        ("monai_prostate_mr_oblique", "test_0000_t2_tse_tra_4.nii.gz"), PROSTATE_PLANS, None
    ),
    "oblique-prostate-dwi": Case(
        ("monai_prostate_mr_oblique", "test_0000_ep2d_diff_tra_7.nii.gz"), PROSTATE_PLANS, None
    ),
    "las-brain-mr": Case(("monai_brain_mr_las", "anatomical.nii"), BRAIN_PLANS, None),
    "brats-flair": Case(("brats2021_flair_edema", "BraTS2021_01646_flair.nii.gz"), BRAIN_PLANS, None),
}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_real_input_round_trips_onto_its_own_grid(name):
    case = CASES[name]
    original = read_image(data_path("real_inputs", *case.path))
    oriented = reorient(original, "RAS")
    assert orientation_code(oriented) == "RAS"

    array, info = preprocess([oriented], case.plans)
    assert array.dtype == np.float32 and np.isfinite(array).all()
    shift, scale = info.intensity_shift[0], info.intensity_scale[0]
    threshold = case.threshold if case.threshold is not None else shift + 0.25 * scale
    foreground = array[0] > (threshold - shift) / scale  # the stand-in "network"
    probabilities = np.stack([~foreground, foreground]).astype(np.float32)

    label_array = restore_label_map(probabilities, info)
    assert label_array.shape == sitk.GetArrayViewFromImage(oriented).shape
    label_map = sitk.GetImageFromArray(label_array)
    label_map.CopyInformation(oriented)
    restored = restore_orientation(label_map, original)

    assert restored.GetSize() == original.GetSize()
    assert restored.GetOrigin() == original.GetOrigin()
    assert restored.GetSpacing() == original.GetSpacing()
    assert restored.GetDirection() == original.GetDirection()
    truth = sitk.GetArrayFromImage(original) > threshold
    assert truth.any() and not truth.all()
    dice = _dice(sitk.GetArrayFromImage(restored).astype(bool), truth)
    assert dice > 0.9, f"{name}: Dice {dice:.3f} between restored mask and thresholded original"


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        (("dcmqi_ct3slice",), "subfolders are not searched"),
        (("dcmqi_ct3slice", "liver.dcm"), "is a DICOM SEG object, not an image"),
        (("dcmqi_ct3slice", "dicom", "01.dcm"), "single DICOM slice; pass the folder"),
    ],
    ids=["parent-folder", "dicom-seg", "single-dicom-file"],
)
def test_real_input_refused_with_one_clear_line(path, fragment):
    with pytest.raises(InputImageError) as error:
        read_image(data_path("real_inputs", *path))
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_real_gantry_tilted_series_is_refused_with_its_tilt_angle():
    folder = data_path("real_inputs", "dcmqa_ct_gantry_tilt_ge")
    with pytest.raises(InputImageError) as error:
        read_image(folder)
    # the tilt from the files' own headers: slice step versus the normal of the slice plane
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    headers = []
    for name in files[:2]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        headers.append(reader)
    positions = [[float(v) for v in h.GetMetaData("0020|0032").split("\\")] for h in headers]
    orientation = [float(v) for v in headers[0].GetMetaData("0020|0037").split("\\")]
    normal = np.cross(orientation[:3], orientation[3:])
    step = np.subtract(positions[1], positions[0])
    along = abs(step @ normal)
    across = np.linalg.norm(step - (step @ normal) * normal)
    tilt = np.degrees(np.arctan2(across, along))
    message = str(error.value)
    assert f"is gantry-tilted ({tilt:.1f} deg" in message and "\n" not in message


def test_flipped_real_label_map_sits_on_the_dicom_grid():
    """TotalSegmentator stored its DICOM prediction flipped (LAS); reoriented it is the DICOM's grid."""
    dicom = read_image(data_path("real_inputs", "totalseg_example_ct", "example_ct_dicom"))
    labels = read_image(data_path("real_inputs", "totalseg_example_ct", "example_seg_dicom.nii.gz"))
    assert orientation_code(labels) == "LAS" and orientation_code(dicom) == "LPS"
    back = reorient(labels, orientation_code(dicom))
    assert back.GetSize() == dicom.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), dicom.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(back.GetSpacing(), dicom.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), dicom.GetDirection(), atol=1e-6)
    # and the liver label lies inside the body of the CT, voxel for voxel
    liver = sitk.GetArrayFromImage(back) == 5
    body = sitk.GetArrayFromImage(dicom) > -300
    assert liver.any() and np.count_nonzero(liver & body) / np.count_nonzero(liver) > 0.99
