"""The CT body box: the part of a CT worth tiling, since the air around the patient holds no structure.

A 512 x 512 abdominal CT is mostly air in its corners and in front of and behind the patient. The
sliding window skips the tiles that barely touch the body's bounding box (plus a margin): 160 instead of
256 on the synthetic CT of ``benchmarks/bench_segment.py``. The tiles it keeps are those of the whole
image's grid, so the body gets the same prediction as without the box; what no tile covers comes back
as background, which is what a trained network predicts in air anyway (agreement with the reference way
in ``benchmarks/RESULTS.md``).

The body is every voxel above ``BODY_THRESHOLD_HU``: fat, soft tissue, bone, the table and clothing,
but not air. Lungs and bowel gas lie inside the box because tissue surrounds them. An image whose air
is not near -1000 HU (an unscaled or non-CT image) has no voxel below the threshold, so nothing is cut.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

__all__ = ["BODY_THRESHOLD_HU", "BODY_MARGIN_MM", "body_bounding_box"]

logger = logging.getLogger(__name__)

BODY_THRESHOLD_HU = -500.0  # halfway between air (-1000 HU) and fat (-100 HU)
BODY_MARGIN_MM = 10.0  # air kept around the body, so border tiles still see the skin's edge

BoundingBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def body_bounding_box(image: sitk.Image, margin_mm: float = BODY_MARGIN_MM) -> BoundingBox | None:
    """[start, stop) per stored axis (z, y, x) of the voxels above ``BODY_THRESHOLD_HU``, grown by
    ``margin_mm`` and clipped to the image; None when the box would be the whole image or is empty
    (an image of air only is left to the normal pipeline, which segments it whole)."""
    body = sitk.GetArrayViewFromImage(image) > BODY_THRESHOLD_HU
    shape = body.shape
    box = []
    for axis, spacing in zip(range(3), reversed(image.GetSpacing())):
        hits = np.flatnonzero(np.any(body, axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return None
        margin = int(np.ceil(margin_mm / spacing))
        box.append((max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, shape[axis])))
    if all(start == 0 and stop == size for (start, stop), size in zip(box, shape)):
        return None
    logger.info("body box %s of %s voxels (z, y, x)", [b - a for a, b in box], shape)
    return tuple(box)  # type: ignore[return-value]
