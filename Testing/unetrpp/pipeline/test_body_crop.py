"""body_bounding_box: the box of the voxels above -500 HU, grown by the margin in mm, clipped."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from unetrpp.pipeline.body_crop import BODY_MARGIN_MM, BODY_THRESHOLD_HU, body_bounding_box


def _ct(array: np.ndarray, spacing_xyz=(0.8, 0.8, 2.5)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    return image


def test_box_is_the_body_extent_plus_the_margin_in_voxels_of_each_axis():
    array = np.full((40, 100, 120), -1000, dtype=np.int16)
    array[10:30, 30:70, 25:95] = 40  # soft tissue
    array[15:20, 40:50, 50:60] = -850  # lung inside the body: kept inside the box
    box = body_bounding_box(_ct(array))
    margin_z, margin_xy = int(np.ceil(BODY_MARGIN_MM / 2.5)), int(np.ceil(BODY_MARGIN_MM / 0.8))
    assert box == (
        (10 - margin_z, 30 + margin_z),
        (30 - margin_xy, 70 + margin_xy),
        (25 - margin_xy, 95 + margin_xy),
    )


def test_box_is_clipped_at_the_image_border():
    array = np.full((12, 50, 60), -1000, dtype=np.int16)
    array[:, 2:20, 30:58] = int(BODY_THRESHOLD_HU) + 1
    box = body_bounding_box(_ct(array))
    assert box == ((0, 12), (0, 20 + 13), (30 - 13, 60))


def test_no_box_when_nothing_would_be_cut_or_there_is_no_body():
    body_everywhere = np.zeros((8, 30, 30), dtype=np.int16)  # not in HU, or a body filling the field
    assert body_bounding_box(_ct(body_everywhere)) is None
    air_only = np.full((8, 30, 30), -1000, dtype=np.int16)
    assert body_bounding_box(_ct(air_only)) is None
    touching = np.full((8, 30, 30), -1000, dtype=np.int16)
    touching[0, 0, 0] = touching[-1, -1, -1] = 100  # the margin reaches every border
    assert body_bounding_box(_ct(touching)) is None
