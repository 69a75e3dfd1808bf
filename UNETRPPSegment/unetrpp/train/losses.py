"""Dice + cross-entropy over the deep-supervision heads, weighted as the reference does.

UNETR++ (like nnU-Net) trains three output heads: full resolution and two coarser decoder stages. The
reference weighs their losses 1, 1/2, 1/4 and normalises to sum 1 (4/7, 2/7, 1/7); the coarse heads are
compared with labels downsampled by nearest neighbour to their size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["DEEP_SUPERVISION_WEIGHTS", "DeepSupervisionLoss", "downsample_labels"]

DEEP_SUPERVISION_WEIGHTS: tuple[float, ...] = (4 / 7, 2 / 7, 1 / 7)


def downsample_labels(labels: torch.Tensor, shape_zyx: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label batch (B, 1, Z, Y, X) to (B, 1, *shape_zyx)."""
    if tuple(labels.shape[2:]) == tuple(shape_zyx):
        return labels
    return F.interpolate(labels.float(), size=tuple(shape_zyx), mode="nearest").to(labels.dtype)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of MONAI ``DiceCELoss`` (softmax, one-hot labels, batch Dice) over the heads.

    Args:
        weights: one weight per head, highest resolution first (default 4/7, 2/7, 1/7).

    ``forward(outputs, labels)``: ``outputs`` is a tensor (B, K, Z, Y, X) or a list of them (the
    heads, full resolution first); ``labels`` is (B, 1, Z, Y, X) integer class indices.
    """

    def __init__(self, weights: Sequence[float] = DEEP_SUPERVISION_WEIGHTS) -> None:
        super().__init__()
        if not weights or min(weights) < 0:
            raise ValueError(f"deep-supervision weights must be non-negative, got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        # batch=True: Dice over the whole batch (nnU-Net's "batch Dice"), so a class missing from one
        # patch does not produce a meaningless per-sample score.
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        heads = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        if len(heads) > len(self.weights):
            raise ValueError(f"{len(heads)} output heads but only {len(self.weights)} loss weights")
        weights = self.weights[: len(heads)]
        total = sum(weights)
        loss = heads[0].new_zeros(())
        for weight, logits in zip(weights, heads):
            target = downsample_labels(labels, logits.shape[2:])
            loss = loss + (weight / total) * self.dice_ce(logits.float(), target)
        return loss
