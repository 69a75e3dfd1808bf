"""Preprocessing equals an independent nnU-Net-v1-style computation on synthetic images.

The expected arrays are built here from scipy.ndimage.zoom (the interpolation skimage's ``resize`` wraps,
with ``grid_mode=True`` and edge mode), skimage's output clipping, an explicit nearest-neighbour formula
for the low-resolution axis and expected shapes worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from unetrpp.errors import InputImageError
from unetrpp.models.cards import ChannelNormalization, Plans
from unetrpp.pipeline.preprocess import mask_to_network_grid, nearest_indices, preprocess, separate_axis

BBOX = ((1, 9), (2, 22), (3, 18))  # non-zero region of the synthetic image, stored (z, y, x) order
SHAPE = (11, 25, 21)

# name: (spacing_zyx, target (network order), transpose_forward, expected low-res axis, expected shape)
CASES = {
    # anisotropy 1.5 -> 3D cubic; crop (8, 20, 15) * (1.5, 1.0, 1.2) = (12, 20, 18)
    "isotropic-3d": ((1.5, 1.0, 1.2), (1.0, 1.0, 1.0), (0, 1, 2), None, (12, 20, 18)),
    # original 4.0 / 0.8 = 5 > 3 -> axis 0 alone; (8 * 1.6, 20 * 0.8, 15 * 0.8) = (12.8, 16, 12) -> 13
    "anisotropic-original": ((4.0, 0.8, 0.8), (2.5, 1.0, 1.0), (0, 1, 2), 0, (13, 16, 12)),
    # original isotropic, target 3.5 / 1 > 3 -> axis 0; (8 / 3.5, 20, 15) = (2.29, 20, 15) -> (2, 20, 15)
    "anisotropic-target": ((1.0, 1.0, 1.0), (3.5, 1.0, 1.0), (0, 1, 2), 0, (2, 20, 15)),
    # two axes tie for the coarsest spacing -> no single low-res axis -> 3D; (28, 70, 15)
    "two-coarse-axes": ((3.5, 3.5, 1.0), (1.0, 1.0, 1.0), (0, 1, 2), None, (28, 70, 15)),
    # x is coarse and goes first: transposed crop (15, 8, 20), spacing (4.0, 0.8, 0.9), target (3, 1, 1)
    # -> (20, 6.4, 18) -> (20, 6, 18); low-res axis 0 of the transposed array
    "transposed": ((0.8, 0.9, 4.0), (3.0, 1.0, 1.0), (2, 0, 1), 0, (20, 6, 18)),
}

NORMALIZATIONS = {
    "ct": ChannelNormalization("CT", False, mean=100.0, sd=50.0, lower_bound=-50.0, upper_bound=400.0),
    "ct-masked": ChannelNormalization("CT", True, mean=100.0, sd=50.0, lower_bound=-50.0, upper_bound=400.0),
    "zscore": ChannelNormalization("nonCT", False),
    "zscore-masked": ChannelNormalization("nonCT", True),
}


def _synthetic(spacing_zyx, seed=0) -> sitk.Image:
    """Smooth blob plus noise inside BBOX, zeros outside, a zero-valued hole inside (filled by the mask)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    array = np.zeros(SHAPE, dtype=np.float32)
    region = tuple(slice(a, b) for a, b in BBOX)
    blob = 450.0 * np.exp(-(z**2 + y**2 + x**2) * 2.0) - 60.0
    array[region] = (blob + rng.normal(0.0, 25.0, SHAPE))[region]
    array[4:6, 10:13, 8:11] = 0.0  # a hole: still inside the (filled) non-zero mask
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    return image


def _plans(target, transpose, normalization, num_channels=1) -> Plans:
    backward = tuple(int(a) for a in np.argsort(transpose))
    return Plans(
        channels=(normalization,) * num_channels,
        target_spacing_zyx=target,
        patch_size_zyx=(8, 16, 16),
        num_classes=2,
        transpose_forward=transpose,
        transpose_backward=backward,
    )


def _expected_resize(volume: np.ndarray, new_shape, axis, order: int) -> np.ndarray:
    """skimage.resize(order, mode='edge', anti_aliasing=False) per nnU-Net v1, written independently."""
    volume = volume.astype(np.float64)

    def zoom_clip(v, shape):
        out = ndimage.zoom(
            v, np.array(shape) / np.array(v.shape), order=order, mode="nearest", grid_mode=True
        )
        assert out.shape == tuple(shape)
        return np.clip(out, v.min(), v.max())

    if axis is None:
        return zoom_clip(volume, new_shape)
    in_plane = [n for a, n in enumerate(new_shape) if a != axis]
    moved = np.moveaxis(volume, axis, 0)
    resized = np.stack([zoom_clip(s, in_plane) for s in moved])
    old, new = moved.shape[0], new_shape[axis]
    source = np.clip(np.floor(old / new * (np.arange(new) + 0.5)).astype(int), 0, old - 1)  # round half up
    return np.moveaxis(resized[source], 0, axis)


def _expected(image: sitk.Image, case, normalization) -> np.ndarray:
    spacing, target, transpose, axis, new_shape = case
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = ndimage.binary_fill_holes(array != 0)
    region = tuple(slice(a, b) for a, b in BBOX)
    cropped, mask = array[region].transpose(transpose), mask[region].transpose(transpose)
    data = _expected_resize(cropped, new_shape, axis, order=3).astype(np.float32)
    mask = _expected_resize(mask.astype(float), new_shape, axis, order=1) >= 0.5
    inside = mask if normalization.use_nonzero_mask else np.ones_like(mask)
    if normalization.scheme.value == "CT":
        out = (
            np.clip(data, normalization.lower_bound, normalization.upper_bound) - normalization.mean
        ) / 50.0
    else:
        values = data[inside].astype(np.float64)
        out = (data - values.mean()) / (values.std() + 1e-8)
    return np.where(inside, out, 0.0)


@pytest.mark.parametrize("norm_name", list(NORMALIZATIONS), ids=list(NORMALIZATIONS))
@pytest.mark.parametrize("case_name", list(CASES), ids=list(CASES))
def test_preprocess_matches_independent_computation(case_name, norm_name):
    case = CASES[case_name]
    spacing, target, transpose, axis, new_shape = case
    normalization = NORMALIZATIONS[norm_name]
    image = _synthetic(spacing)
    array, info = preprocess([image], _plans(target, transpose, normalization))

    assert array.dtype == np.float32 and array.shape == (1, *new_shape)
    assert separate_axis(tuple(spacing[a] for a in transpose), target) == axis
    assert info.crop_bbox_zyx == BBOX
    assert info.shape_before_crop_zyx == SHAPE
    assert info.shape_after_crop_zyx == (8, 20, 15)
    assert info.shape_after_resampling_transposed == new_shape
    np.testing.assert_allclose(array[0], _expected(image, case, normalization), rtol=1e-5, atol=2e-5)


def test_nearest_indices_round_half_up_like_nnunet():
    # downsampling by 2: coordinates 0.5, 2.5, ... round up, as scipy's map_coordinates(order=0) does
    np.testing.assert_array_equal(nearest_indices(10, 5), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(nearest_indices(3, 6), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(nearest_indices(7, 7), np.arange(7))


def test_normalisation_is_reported_in_info():
    image = _synthetic((1.5, 1.0, 1.2))
    array, info = preprocess([image], _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["zscore-masked"]))
    inside = array[0] != 0
    assert abs(float(array[0][inside].mean())) < 1e-4 and abs(float(array[0][inside].std()) - 1.0) < 1e-3
    assert len(info.intensity_shift) == 1 and info.intensity_scale[0] > 0
    _, ct_info = preprocess([image], _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["ct"]))
    assert ct_info.intensity_shift == (100.0,) and ct_info.intensity_scale == (50.0,)


def test_images_are_taken_as_stored_whatever_their_direction():
    image = _synthetic((1.5, 1.0, 1.2))
    flipped = sitk.Image(image)
    flipped.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    flipped.SetOrigin((50.0, 20.0, -3.0))
    plans = _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["ct"])
    np.testing.assert_array_equal(preprocess([image], plans)[0], preprocess([flipped], plans)[0])


def test_crop_covers_the_non_zero_union_of_all_channels():
    first = np.zeros(SHAPE, dtype=np.float32)
    second = np.zeros(SHAPE, dtype=np.float32)
    first[2:4, 3:5, 4:6] = 10.0
    second[6:8, 15:20, 10:12] = 20.0
    images = [sitk.GetImageFromArray(a) for a in (first, second)]
    plans = _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["zscore-masked"], num_channels=2)
    array, info = preprocess(images, plans)
    assert info.crop_bbox_zyx == ((2, 8), (3, 20), (4, 12))
    assert array.shape == (2, 6, 17, 8)


def test_no_crop_when_the_plans_say_so():
    image = _synthetic((1.0, 1.0, 1.0))
    plans = Plans(
        channels=(NORMALIZATIONS["zscore"],), target_spacing_zyx=(1.0, 1.0, 1.0), patch_size_zyx=(8, 8, 8),
        num_classes=2, use_nonzero_crop=False,
    )  # fmt: skip
    array, info = preprocess([image], plans)
    assert info.crop_bbox_zyx == ((0, 11), (0, 25), (0, 21)) and array.shape == (1, *SHAPE)


def test_bad_inputs_fail_with_one_line():
    image = _synthetic((1.0, 1.0, 1.0))
    with pytest.raises(InputImageError, match="needs 2 input channels, got 1"):
        preprocess([image], _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["zscore"], num_channels=2))
    zeros = sitk.GetImageFromArray(np.zeros((4, 5, 6), dtype=np.float32))
    with pytest.raises(InputImageError, match="every voxel of every input channel is 0"):
        preprocess([zeros], _plans((1.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["zscore"]))
    with pytest.raises(InputImageError, match="too small to segment"):
        preprocess([image], _plans((40.0, 1.0, 1.0), (0, 1, 2), NORMALIZATIONS["zscore"]))


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1)], ids=["as-stored", "transposed"])
def test_a_mask_moves_onto_the_preprocessed_grid_like_the_image(transpose):
    """A mask of the image's own bright block lands where preprocessing put the block."""
    array = np.zeros((20, 30, 40), dtype=np.float32)
    array[:, :, 3:] = 10.0  # a zero border that the non-zero crop removes
    array[6:14, 9:21, 12:30] = 500.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 1.0, 2.5))  # x, y, z
    target_zyx = (2.0, 2.0, 1.6)
    channel = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1000.0, upper_bound=1000.0)
    plans = Plans(
        (channel,),
        tuple(target_zyx[a] for a in transpose),
        (8, 8, 8),
        2,
        transpose,
        tuple(int(a) for a in np.argsort(transpose)),
    )
    data, info = preprocess([image], plans)
    moved = mask_to_network_grid(array > 100.0, info)
    assert moved.shape == data.shape[1:] and moved.dtype == bool
    bright = data[0] > 250.0  # the block after cubic resampling, halfway between its values
    agreement = (moved == bright).mean()
    assert agreement > 0.97  # the two differ only on the block's resampled edge
    assert moved.sum() > 0
