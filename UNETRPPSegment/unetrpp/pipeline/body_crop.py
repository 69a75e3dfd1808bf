"""The CT body mask: the part of a CT worth tiling, since the air around the patient holds no structure.

A 512 x 512 abdominal CT is mostly air in its corners and in front of and behind the patient. The
sliding window skips the tiles of the whole image's grid that are mostly air (see
:func:`unetrpp.pipeline.sliding_window.predict_sliding_window`'s ``body``): 153 instead of 256 tiles on
the synthetic CT of ``benchmarks/bench_segment.py``. The tiles it keeps are the whole grid's, so they
predict what they would have predicted anyway; what no tile covers comes back as background, which is
what a trained network predicts in air (agreement with the reference way in ``benchmarks/RESULTS.md``).

The body is every voxel above ``BODY_THRESHOLD_HU``: fat, soft tissue, bone, the table and clothing,
but not air. Lungs and bowel gas are surrounded by tissue, so the tiles over them hold plenty of body.
An image whose air is not near -1000 HU (an unscaled or non-CT image) has no voxel below the threshold,
so nothing is skipped.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

__all__ = ["BODY_THRESHOLD_HU", "body_mask"]

logger = logging.getLogger(__name__)

BODY_THRESHOLD_HU = -500.0  # halfway between air (-1000 HU) and fat (-100 HU)


def body_mask(image: sitk.Image) -> np.ndarray | None:
    """(z, y, x) bool array of the voxels above ``BODY_THRESHOLD_HU``, in stored order; None when every
    voxel or no voxel is body (nothing to skip, or an image of air that is left to be segmented whole)."""
    mask = sitk.GetArrayViewFromImage(image) > BODY_THRESHOLD_HU
    fraction = float(mask.mean())
    if fraction in (0.0, 1.0):
        return None
    logger.info("body: %.0f%% of the voxels", 100 * fraction)
    return mask
