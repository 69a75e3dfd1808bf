"""Class scores go back to the stored input array as nnU-Net v1 exports them; largest-component cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from skimage.transform import resize
from unetrpp.models.cards import ChannelNormalization, Plans
from unetrpp.pipeline.postprocess import keep_largest_component, restore_label_map
from unetrpp.pipeline.preprocess import PreprocessInfo, preprocess

# name: (spacing_zyx, target (network order), transpose_forward)
CASES = {
    "isotropic-3d": ((1.5, 1.0, 1.2), (1.0, 1.0, 1.0), (0, 1, 2)),
    "anisotropic": ((4.0, 0.8, 0.8), (2.5, 1.0, 1.0), (0, 1, 2)),
    "anisotropic-target": ((1.0, 1.0, 1.0), (3.5, 1.0, 1.0), (0, 1, 2)),
    "transposed": ((0.8, 0.9, 4.0), (3.0, 1.0, 1.0), (2, 0, 1)),
    "same-spacing": ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0, 1, 2)),
}


def _info(spacing_zyx, target, transpose) -> PreprocessInfo:
    array = np.zeros((11, 25, 21), dtype=np.float32)
    array[1:9, 2:22, 3:18] = 1.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    plans = Plans(
        channels=(ChannelNormalization("nonCT"),),
        target_spacing_zyx=target,
        patch_size_zyx=(8, 8, 8),
        num_classes=4,
        transpose_forward=transpose,
        transpose_backward=tuple(int(a) for a in np.argsort(transpose)),
    )
    return preprocess([image], plans)[1]


def _smooth_logits(shape, num_classes, seed=0) -> np.ndarray:
    """Smooth random fields: few near-ties, like a real network's output."""
    rng = np.random.default_rng(seed)
    fields = [ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 8 for _ in range(num_classes)]
    return np.stack(fields).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits.astype(np.float64) - logits.max(0))
    return exp / exp.sum(0)


def _nnunet_style_export(probabilities: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    """Independent reference: transpose back, per-class skimage resize order 1 (nearest along the
    low-resolution axis when anisotropic), argmax, paste into zeros."""
    scores = probabilities.transpose((0, *[a + 1 for a in info.transpose_backward])).astype(np.float64)
    spacing, target = np.array(info.original_spacing_zyx), np.array(info.target_spacing_zyx)
    axis = None
    for candidate in (spacing, target):
        if candidate.max() / candidate.min() > 3:
            coarse = np.flatnonzero(candidate == candidate.max())
            axis = int(coarse[0]) if len(coarse) == 1 else None
            break
    shape = info.shape_after_crop_zyx
    resampled = []
    for channel in scores:
        if channel.shape == shape:
            resampled.append(channel)
        elif axis is None:
            resampled.append(resize(channel, shape, order=1, mode="edge", anti_aliasing=False))
        else:
            in_plane = [n for a, n in enumerate(shape) if a != axis]
            moved = np.moveaxis(channel, axis, 0)
            slices = np.stack([resize(s, in_plane, order=1, mode="edge", anti_aliasing=False) for s in moved])
            old, new = moved.shape[0], shape[axis]
            source = np.clip(np.floor(old / new * (np.arange(new) + 0.5)).astype(int), 0, old - 1)
            resampled.append(np.moveaxis(slices[source], 0, axis))
    label_map = np.zeros(info.shape_before_crop_zyx, dtype=np.uint8)
    label_map[tuple(slice(a, b) for a, b in info.crop_bbox_zyx)] = np.argmax(np.stack(resampled), axis=0)
    return label_map


@pytest.mark.parametrize("as_type", ["numpy-float32", "torch-float16"], ids=lambda t: t)
@pytest.mark.parametrize("case_name", list(CASES), ids=list(CASES))
def test_restore_matches_nnunet_style_export(case_name, as_type):
    info = _info(*CASES[case_name])
    logits = _smooth_logits(info.shape_after_resampling_transposed, 4)
    if as_type == "torch-float16":
        logits = logits.astype(np.float16).astype(np.float32)  # the values the sliding window hands over
        given = torch.from_numpy(logits).half()
    else:
        given = logits
    label_map = restore_label_map(given, info)
    expected = _nnunet_style_export(_softmax(logits), info)  # nnU-Net v1 resamples probabilities
    assert label_map.shape == info.shape_before_crop_zyx and label_map.dtype == np.uint8
    mismatch = np.count_nonzero(label_map != expected) / label_map.size
    assert mismatch < 1e-3, f"{mismatch:.2%} voxels differ"
    outside = np.ones(label_map.shape, dtype=bool)
    outside[tuple(slice(a, b) for a, b in info.crop_bbox_zyx)] = False
    assert not label_map[outside].any()


def test_labelled_box_returns_to_its_voxels():
    """Preprocess an image, threshold the network-grid array as a stand-in model, restore: same box."""
    array = np.zeros((12, 40, 44), dtype=np.float32)
    array[1:11, 3:37, 2:40] = 10.0  # body
    array[4:8, 10:26, 12:30] = 100.0  # organ
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 3.0))
    plans = Plans(
        channels=(ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=0.0, upper_bound=200.0),),
        target_spacing_zyx=(2.0, 1.1, 1.1),
        patch_size_zyx=(8, 16, 16),
        num_classes=2,
    )
    data, info = preprocess([image], plans)
    organ = (data[0] > 55.0).astype(np.float32)
    label_map = restore_label_map(np.stack([1.0 - organ, organ]), info)
    truth = array == 100.0
    dice = 2 * np.count_nonzero(label_map.astype(bool) & truth) / (np.count_nonzero(label_map) + truth.sum())
    assert dice > 0.9
    assert not label_map[0].any() and not label_map[:, :3].any()  # outside the crop stays background


def test_many_classes_give_uint16():
    info = _info(*CASES["same-spacing"])
    logits = np.zeros((300, *info.shape_after_resampling_transposed), dtype=np.float32)
    logits[299] = 1.0
    label_map = restore_label_map(logits, info)
    assert label_map.dtype == np.uint16
    assert set(np.unique(label_map)) == {0, 299}


def test_wrong_shape_is_a_programming_error():
    info = _info(*CASES["isotropic-3d"])
    with pytest.raises(ValueError, match="logits must have shape"):
        restore_label_map(np.zeros((2, 3, 4, 5), dtype=np.float32), info)


def test_keep_largest_component_per_label():
    label_map = np.zeros((10, 20, 20), dtype=np.uint8)
    label_map[1:5, 1:8, 1:8] = 1  # big
    label_map[7:9, 15:18, 15:18] = 1  # small island of 1
    label_map[1:4, 12:19, 1:5] = 2  # big
    label_map[8, 1, 1] = 2  # single-voxel island of 2
    label_map[6, 10, 10] = 3  # single component: untouched
    cleaned = keep_largest_component(label_map, [1, 2, 3])
    assert cleaned.dtype == label_map.dtype and cleaned is not label_map
    assert not cleaned[7:9, 15:18, 15:18].any() and cleaned[8, 1, 1] == 0
    assert (
        (cleaned[1:5, 1:8, 1:8] == 1).all()
        and (cleaned[1:4, 12:19, 1:5] == 2).all()
        and cleaned[6, 10, 10] == 3
    )
    only_one = keep_largest_component(label_map, [1])
    assert only_one[8, 1, 1] == 2 and not only_one[7:9, 15:18, 15:18].any()
    np.testing.assert_array_equal(keep_largest_component(label_map, None), cleaned)


def test_keep_largest_component_diagonal_neighbours_are_separate():
    label_map = np.zeros((3, 3, 3), dtype=np.uint8)
    label_map[0, 0, 0] = label_map[1, 1, 1] = label_map[1, 1, 2] = 5  # corner touch only: 6-connectivity
    cleaned = keep_largest_component(label_map, [5])
    assert cleaned[0, 0, 0] == 0 and cleaned[1, 1, 1] == 5 and cleaned[1, 1, 2] == 5


def test_ties_go_to_the_lowest_class_like_numpy_argmax():
    info = _info(*CASES["anisotropic"])
    logits = np.full((4, *info.shape_after_resampling_transposed), 0.25, dtype=np.float32)
    logits[2:, :3] = 0.5  # classes 2 and 3 tie in the first slices: 2 wins
    label_map = restore_label_map(logits, info)
    np.testing.assert_array_equal(label_map, _nnunet_style_export(_softmax(logits), info))
    assert set(np.unique(label_map)) == {0, 2}
