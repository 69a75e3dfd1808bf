"""body_mask: the voxels above -500 HU; None when nothing or everything is body."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from unetrpp.pipeline.body_crop import BODY_THRESHOLD_HU, body_mask


def _ct(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


def test_mask_is_the_voxels_above_the_threshold_in_stored_order():
    array = np.full((10, 30, 40), -1000, dtype=np.int16)
    array[2:8, 5:25, 10:35] = 40  # soft tissue
    array[4:6, 10:15, 20:25] = -850  # lung inside the body: not body itself
    array[0, 0, 0] = int(BODY_THRESHOLD_HU) + 1
    mask = body_mask(_ct(array))
    np.testing.assert_array_equal(mask, array > BODY_THRESHOLD_HU)


def test_no_mask_when_nothing_or_everything_is_body():
    assert body_mask(_ct(np.zeros((4, 20, 20), dtype=np.int16))) is None  # not in HU, or all body
    assert body_mask(_ct(np.full((4, 20, 20), -1000, dtype=np.int16))) is None  # air only
