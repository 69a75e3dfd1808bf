"""The CT body mask: the part of a CT worth tiling, since the air around the patient holds no structure.

A 512 x 512 abdominal CT is mostly air in its corners and in front of and behind the patient. The
sliding window skips the tiles of the whole image's grid that are mostly air (see
:func:`unetrpp.pipeline.sliding_window.predict_sliding_window`'s ``body``): 153 instead of 256 tiles on
the synthetic CT of ``benchmarks/bench_segment.py``. The tiles it keeps are the whole grid's, so they
predict what they would have predicted anyway; what no tile covers comes back as background, which is
what a trained network predicts in air (agreement with the reference way in ``benchmarks/RESULTS.md``).

The body is the patient, not only its dense voxels: the voxels above ``BODY_THRESHOLD_HU`` (fat, soft
tissue, bone), plus the air they enclose in each axial slice (aerated lung, airways, bowel gas), so the
tiles over the lung fields, where the lung model looks for tumours (ground glass is below -500 HU too), are
never skipped. Only air connected to the edge of its axial slice (outside the patient) is skipped. Filling
holes in 3D alone would not do: a chest CT cuts through the lungs and the trachea, so their air touches the
top or bottom face of the volume and is not a 3D hole; in an axial slice the chest wall closes it. After
filling, parts under a thousandth of the largest part's size (noise specks, cables) are dropped; larger
ones stay, the table with them: on the abdomen DICOM among the test data the table and the arms are
parts of 2-7 % of the body's size, and TotalSegmentator labels the left humerus in one of them, so no size
cut tells the table from an arm. Measured in ``benchmarks/RESULTS.md``.
An image whose air is not near -1000 HU (an unscaled or non-CT image) has no voxel below the threshold,
so nothing is skipped.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from unetrpp.pipeline.slice_threads import for_each_slice

__all__ = ["BODY_THRESHOLD_HU", "MIN_PART_FRACTION", "axial_axis", "body_mask", "dense_mask"]

logger = logging.getLogger(__name__)

BODY_THRESHOLD_HU = -500.0  # halfway between air (-1000 HU) and fat (-100 HU)
MIN_PART_FRACTION = 0.001  # parts of the filled mask smaller than this fraction of the largest are dropped


def dense_mask(image: sitk.Image) -> np.ndarray:
    """(z, y, x) bool array of the voxels above ``BODY_THRESHOLD_HU``, in stored order (tissue, not air)."""
    return sitk.GetArrayViewFromImage(image) > BODY_THRESHOLD_HU


def axial_axis(image: sitk.Image) -> int:
    """The array axis ((z, y, x) order) that runs closest to the patient's head-feet direction: its
    slices are the axial planes, whatever the storage orientation."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)  # columns: i, j, k in LPS
    index_axis = int(np.argmax(np.abs(direction[2, :])))
    return 2 - index_axis


def body_mask(image: sitk.Image) -> np.ndarray | None:
    """(z, y, x) bool array of the patient's voxels, in stored order: the dense voxels and the air they
    enclose in their axial slice, without parts under ``MIN_PART_FRACTION`` of the largest. None when
    every voxel or no voxel is body (nothing to skip, or an image of air that is left to be segmented
    whole)."""
    dense = dense_mask(image)
    if not dense.any() or dense.all():
        return None
    axis = axial_axis(image)
    mask = np.moveaxis(dense, axis, 0).copy()

    def fill_slice(n: int) -> None:
        mask[n] = ndimage.binary_fill_holes(mask[n])

    for_each_slice(fill_slice, range(mask.shape[0]))
    mask = np.moveaxis(mask, 0, axis)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        kept = np.flatnonzero(sizes >= MIN_PART_FRACTION * sizes.max()) + 1
        mask = np.isin(labels, kept)
    del labels
    fraction = float(mask.mean())
    if fraction == 1.0:
        return None
    logger.info("body: %.0f%% of the voxels (%.0f%% dense)", 100 * fraction, 100 * float(dense.mean()))
    return mask
