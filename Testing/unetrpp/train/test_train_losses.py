"""Deep-supervision DiceCE: reference weights, downsampled labels, sane values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from unetrpp.train.losses import DEEP_SUPERVISION_WEIGHTS, DeepSupervisionLoss, downsample_labels


def test_reference_weights_are_four_two_one_sevenths():
    assert pytest.approx((4 / 7, 2 / 7, 1 / 7)) == DEEP_SUPERVISION_WEIGHTS
    assert sum(DEEP_SUPERVISION_WEIGHTS) == pytest.approx(1.0)


def test_heads_are_weighted_and_compared_with_downsampled_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 16, 16))
    heads = [torch.randn(2, 3, 8, 16, 16), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    single = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    expected = sum(
        w * single(h, F.interpolate(labels.float(), size=h.shape[2:], mode="nearest").long())
        for w, h in zip((4 / 7, 2 / 7, 1 / 7), heads)
    )
    assert DeepSupervisionLoss()(heads, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_confident_correct_prediction_scores_near_zero_and_a_wrong_one_high():
    labels = torch.zeros(1, 1, 4, 8, 8, dtype=torch.long)
    labels[..., 1:3, 2:6, 2:6] = 1
    perfect = F.one_hot(labels[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 40 - 20
    loss = DeepSupervisionLoss()
    assert loss(perfect, labels).item() < 1e-3
    assert loss(-perfect, labels).item() > 1.5


@pytest.mark.parametrize("shape_zyx", [(1, 2, 2), (2, 3, 3), (1, 4, 1)], ids=["halve", "to-three", "mixed"])
def test_downsampling_picks_the_nearest_voxels_labels(shape_zyx):
    # Every voxel a different label (z * 16 + y * 4 + x), so the result names the voxel each output
    # voxel was taken from. Nearest neighbour as nnU-Net's deep supervision uses it (PyTorch "nearest"):
    # output index i takes input index floor(i * in / out) along each axis.
    labels = torch.arange(2 * 4 * 4).reshape(1, 1, 2, 4, 4)
    small = downsample_labels(labels, shape_zyx)
    assert small.dtype == labels.dtype and tuple(small.shape) == (1, 1, *shape_zyx)
    z, y, x = ([i * size // out for i in range(out)] for size, out in zip((2, 4, 4), shape_zyx, strict=True))
    expected = [[[16 * zz + 4 * yy + xx for xx in x] for yy in y] for zz in z]
    assert small[0, 0].tolist() == expected
    assert downsample_labels(labels, (2, 4, 4)) is labels  # the full-resolution head: unchanged
