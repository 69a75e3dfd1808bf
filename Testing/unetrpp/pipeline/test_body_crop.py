"""body_mask: the patient (dense voxels and the air they enclose per axial slice), not the air around it;
None when nothing or everything is body."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from unetrpp.pipeline.body_crop import BODY_THRESHOLD_HU, axial_axis, body_mask


def _ct(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


def test_air_enclosed_by_the_body_is_body_and_air_outside_is_not():
    array = np.full((10, 30, 40), -1000, dtype=np.int16)
    array[:, 5:25, 10:35] = 40  # soft tissue through every slice, as a chest CT cut top and bottom
    array[:, 10:15, 20:25] = -850  # lung: open at both faces of the volume, closed in each axial slice
    array[0, 0, 0] = int(BODY_THRESHOLD_HU) + 1  # a speck in the air, not the patient
    mask = body_mask(_ct(array))
    expected = np.zeros(array.shape, dtype=bool)
    expected[:, 5:25, 10:35] = True  # the box with its lung, nothing else
    np.testing.assert_array_equal(mask, expected)


def test_axial_slices_are_found_whatever_the_storage_orientation():
    """A sagittal acquisition (i anterior-posterior, j head-feet, k left-right): the lung is closed in
    the axial planes, i.e. the planes of constant j, which are array axis 1."""
    array = np.full((30, 10, 40), -1000, dtype=np.int16)  # (k, j, i)
    array[5:25, :, 10:35] = 40
    array[10:15, :, 20:25] = -850  # open along j (head-feet), closed in every j slice
    image = _ct(array)
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    assert axial_axis(image) == 1
    expected = np.zeros(array.shape, dtype=bool)
    expected[5:25, :, 10:35] = True
    np.testing.assert_array_equal(body_mask(image), expected)
    assert axial_axis(_ct(array)) == 0  # identity direction: k is head-feet, array axis 0


def test_specks_are_dropped_but_legs_arms_and_the_table_stay():
    array = np.full((6, 40, 60), -1000, dtype=np.int16)
    array[:, 5:30, 5:25] = 40  # left leg: 500 voxels per slice
    array[:, 5:30, 35:55] = 40  # right leg, as large
    array[:, 12:20, 28:31] = 40  # an arm of 24 voxels per slice, a twentieth of a leg
    array[:, 35, 10:50] = 100  # the table under them
    array[2, 38, 58] = 100  # a noise speck: 1 voxel, under a thousandth of a leg's 3000
    mask = body_mask(_ct(array))
    expected = array > BODY_THRESHOLD_HU
    expected[2, 38, 58] = False
    np.testing.assert_array_equal(mask, expected)


def test_no_mask_when_nothing_or_everything_is_body():
    assert body_mask(_ct(np.zeros((4, 20, 20), dtype=np.int16))) is None  # not in HU, or all body
    assert body_mask(_ct(np.full((4, 20, 20), -1000, dtype=np.int16))) is None  # air only


def test_real_abdomen_ct_body_holds_every_organ_voxel_its_gas_included_and_not_the_air_around():
    """The abdomen DICOM with TotalSegmentator's labels on its grid (an independent reading of where the
    patient is): every labelled voxel is body, the gas inside stomach and bowel (labelled, below
    -500 HU) included, which a threshold alone misses; the image corners (air around) are not body."""
    from unetrpp.pipeline.geometry import orientation_code
    from unetrpp.pipeline.io import read_image
    from vendored_data import data_path

    image = read_image(data_path("real_inputs", "totalseg_example_ct/example_ct_dicom"))
    labels = sitk.ReadImage(str(data_path("real_inputs", "totalseg_example_ct/example_seg_dicom.nii.gz")))
    labels = sitk.DICOMOrient(labels, orientation_code(image))
    assert labels.GetSize() == image.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-3)
    organs = sitk.GetArrayFromImage(labels) > 0
    gas = organs & (sitk.GetArrayFromImage(image) <= BODY_THRESHOLD_HU)
    assert gas.sum() > 1000  # the case has bowel gas to test with
    mask = body_mask(image)
    assert mask[organs].all()
    assert not (sitk.GetArrayFromImage(image) > BODY_THRESHOLD_HU)[gas].any()  # what the threshold misses
    for corner in (mask[:, :40, :40], mask[:, :40, -40:], mask[:, -40:, :40], mask[:, -40:, -40:]):
        assert not corner.any()


def test_real_chest_ct_lung_fields_are_body():
    """The 3-slice chest CT (lung bases, heart, liver): the air no path through air links to the edge of
    its axial slice (found here by labelling the air's 4-connected parts, not by hole filling) is the
    lung fields and airways; all of it is body, and it is a large part of the patient, so the lung
    tiles run. The liver's manual label map is inside the body too."""
    from scipy import ndimage
    from unetrpp.pipeline.io import read_image
    from vendored_data import data_path

    image = read_image(data_path("real_inputs", "dcmqi_ct3slice/dicom"))
    array = sitk.GetArrayFromImage(image)
    enclosed = np.zeros(array.shape, dtype=bool)
    for n, plane in enumerate(array <= BODY_THRESHOLD_HU):  # identity-like direction: axis 0 is axial
        parts, _ = ndimage.label(plane)
        edge = np.unique(np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]))
        enclosed[n] = plane & ~np.isin(parts, edge)
    mask = body_mask(image)
    assert axial_axis(image) == 0
    assert enclosed.sum() > 0.1 * mask.sum()  # the lung bases: about 70,000 voxels, 17% of this body
    assert mask[enclosed].all()
    liver_path = data_path("real_inputs", "dcmqi_ct3slice/liver_seg.nrrd")
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(liver_path)))
    assert liver.shape == mask.shape and liver.any() and mask[liver > 0].all()
    assert not mask[:, :30, :30].any()  # the air in the corners is not
