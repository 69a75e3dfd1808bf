"""Dice and HD95 on hand-built masks whose answers follow from geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from unetrpp.evaluate.metrics import dice_per_label, hd95_per_label, score_label_maps


def _two_cubes(side: int, offset: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 cube in the truth; the same cube shifted by ``offset`` voxels along ``axis`` predicted."""
    truth = np.zeros((40, 40, 40), dtype=np.uint8)
    truth[5 : 5 + side, 5 : 5 + side, 5 : 5 + side] = 1
    return np.roll(truth, offset, axis=axis), truth


@pytest.mark.parametrize(
    ("side", "offset", "axis", "spacing_zyx"),
    [
        (10, 1, 2, (1.0, 1.0, 1.0)),
        (12, 3, 2, (3.0, 0.8, 0.5)),
        (12, 2, 0, (3.0, 0.8, 0.5)),
        (8, 4, 1, (2.0, 1.5, 1.0)),
    ],
    ids=["1-voxel-x-isotropic", "3-voxels-x-anisotropic", "2-voxels-z-anisotropic", "4-voxels-y"],
)
def test_shifted_cube_scores_follow_from_the_shift(side, offset, axis, spacing_zyx):
    prediction, truth = _two_cubes(side, offset, axis)
    # Overlap is side^2 * (side - offset); both cubes have side^3 voxels: Dice = 2 |A n B| / (|A| + |B|).
    expected_dice = 2 * side**2 * (side - offset) / (2 * side**3)
    ((_, dice),) = dice_per_label(prediction, truth, [1])
    assert dice == pytest.approx(expected_dice)
    # The leading face lies ``offset`` voxels from the other cube's face, and those faces hold over 5 % of
    # the surface, so the 95th percentile of surface distances is that shift in millimetres.
    ((_, hd95),) = hd95_per_label(prediction, truth, [1], spacing_zyx)
    assert hd95 == pytest.approx(offset * spacing_zyx[axis])


def test_identical_masks_score_one_and_zero_distance():
    _, truth = _two_cubes(6, 0, 0)
    (score,) = score_label_maps(truth, truth, [(1, "cube")], (1.0, 1.0, 1.0))
    assert score.dice == 1.0 and score.hd95_mm == 0.0 and score.truth_voxels == score.predicted_voxels == 216


def test_absent_structures_follow_the_conventions():
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    prediction = np.zeros_like(truth)
    prediction[6:8, 6:8, 6:8] = 2
    scores = {
        s.label_value: s
        for s in score_label_maps(prediction, truth, [(1, "a"), (2, "b"), (3, "c")], (1, 1, 1))
    }
    assert scores[1].dice == 0.0 and math.isinf(scores[1].hd95_mm)  # missed
    assert scores[2].dice == 0.0 and math.isinf(scores[2].hd95_mm)  # predicted but not there
    assert math.isnan(scores[3].dice) and math.isnan(scores[3].hd95_mm)  # in neither: no score


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), [1])
