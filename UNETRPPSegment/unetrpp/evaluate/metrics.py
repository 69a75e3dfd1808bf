"""Dice and 95th-percentile Hausdorff distance per structure, spacing-aware (MONAI's implementations).

Conventions (as in the BTCV / Synapse evaluations the paper reports):
* a structure absent from both prediction and truth has no score (NaN) and is left out of means;
* absent from the truth but predicted: Dice 0, HD95 infinite; present in the truth but not predicted:
  Dice 0, HD95 infinite.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["StructureScore", "dice_per_label", "hd95_per_label", "score_label_maps"]


@dataclass(frozen=True)
class StructureScore:
    """Scores of one structure in one case; NaN when the structure is in neither map."""

    label_value: int
    name: str
    dice: float
    hd95_mm: float
    truth_voxels: int
    predicted_voxels: int


def _one_hot(array: np.ndarray, value: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array == value))[None, None]


def dice_per_label(
    prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]
) -> tuple[tuple[int, float], ...]:
    """Dice of each label value between two integer label arrays of one shape."""
    from monai.metrics import compute_dice

    _check_shapes(prediction, truth)
    result = []
    for value in labels:
        predicted, expected = _one_hot(prediction, value), _one_hot(truth, value)
        if not expected.any() and not predicted.any():
            result.append((int(value), math.nan))
            continue
        dice = compute_dice(predicted.float(), expected.float(), include_background=True, ignore_empty=False)
        result.append((int(value), float(dice.item())))
    return tuple(result)


def hd95_per_label(
    prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int], spacing_zyx: Sequence[float]
) -> tuple[tuple[int, float], ...]:
    """95th-percentile symmetric Hausdorff distance (mm) of each label; spacing in array order (z, y, x)."""
    from monai.metrics import compute_hausdorff_distance

    _check_shapes(prediction, truth)
    result = []
    for value in labels:
        predicted, expected = _one_hot(prediction, value), _one_hot(truth, value)
        has_prediction, has_truth = bool(predicted.any()), bool(expected.any())
        if not has_prediction and not has_truth:
            result.append((int(value), math.nan))
        elif has_prediction != has_truth:
            result.append((int(value), math.inf))
        else:
            with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument use
                warnings.simplefilter("ignore", FutureWarning)
                distance = compute_hausdorff_distance(
                    predicted.float(),
                    expected.float(),
                    include_background=True,
                    percentile=95,
                    spacing=[float(s) for s in spacing_zyx],
                )
            result.append((int(value), float(distance.item())))
    return tuple(result)


def score_label_maps(
    prediction: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[tuple[int, str]],
    spacing_zyx: Sequence[float],
    *,
    with_hd95: bool = True,
) -> tuple[StructureScore, ...]:
    """Dice and HD95 of every (label value, name) between two label arrays (z, y, x) on one grid."""
    values = [value for value, _ in labels]
    dice = dict(dice_per_label(prediction, truth, values))
    hd95 = dict(hd95_per_label(prediction, truth, values, spacing_zyx)) if with_hd95 else {}
    return tuple(
        StructureScore(
            int(value),
            name,
            dice[value],
            hd95.get(value, math.nan),
            int(np.count_nonzero(truth == value)),
            int(np.count_nonzero(prediction == value)),
        )
        for value, name in labels
    )


def _check_shapes(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
