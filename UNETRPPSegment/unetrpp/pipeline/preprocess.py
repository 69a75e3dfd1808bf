"""nnU-Net v1 (3d_fullres) preprocessing: crop to non-zero, resample to the plans' spacing, normalise.

The official UNETR++ weights were trained on arrays that went through exactly these steps, so inference
repeats them (nnU-Net v1 ``GenericPreprocessor.preprocess_test_case``), in this order:

1. Stack the channels as stored: ``(C, Z, Y, X)`` float32 (``sitk.GetArrayFromImage``; no reorientation
   here, the caller has done it).
2. Crop to the bounding box of the non-zero mask: any channel != 0, holes filled
   (``scipy.ndimage.binary_fill_holes``). The filled mask is also the normalisation mask.
3. Apply ``transpose_forward`` to the axes (and spacings).
4. Resample to ``plans.target_spacing_zyx``; new shape = round(spacing / target * shape). If the
   original spacing, or else the target spacing, is anisotropic (max / min > 3) and one axis alone is
   the coarsest, each slice across that axis is resized in-plane with cubic splines
   (``skimage.transform.resize(order=3, mode="edge", anti_aliasing=False)``) and the axis itself with
   nearest neighbour; otherwise the whole volume is resized with order 3. The mask follows with order 1
   (threshold 0.5) and nearest along the low-resolution axis, as nnU-Net resamples its ``seg``.
5. Normalise each channel. CT: clip to [lower_bound, upper_bound], then (x - mean) / sd with the
   training set's numbers. Other: (x - mean) / (std + 1e-8) with the image's own numbers, taken inside
   the mask (and 0 outside it) when ``use_nonzero_mask``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.transform import resize

from unetrpp.errors import InputImageError
from unetrpp.models.cards import ChannelNormalization, NormalizationScheme, Plans
from unetrpp.pipeline.slice_threads import for_each_slice

__all__ = [
    "PreprocessInfo",
    "preprocess",
    "mask_to_network_grid",
    "ANISOTROPY_THRESHOLD",
    "separate_axis",
    "nearest_indices",
]

logger = logging.getLogger(__name__)

ANISOTROPY_THRESHOLD = 3.0  # nnU-Net v1 RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD
_ZSCORE_EPSILON = 1e-8

Triple = tuple[int, int, int]
Spacing = tuple[float, float, float]


@dataclass(frozen=True)
class PreprocessInfo:
    """What :func:`preprocess` did, so that a prediction can be put back on the input array.

    Axis order: ``*_zyx`` fields are in the stored array order (``GetArrayFromImage``);
    ``*_transposed`` fields are in the network's order, after ``transpose_forward``.

    Attributes:
        shape_before_crop_zyx: shape of the stored array.
        crop_bbox_zyx: [start, stop) per stored axis of the non-zero crop.
        shape_after_crop_zyx: shape of the crop (stored order).
        original_spacing_zyx: spacing (mm) of the stored array.
        target_spacing_transposed: the plans' target spacing (mm), network order.
        shape_after_resampling_transposed: spatial shape of the preprocessed array.
        transpose_forward, transpose_backward: the plans' axis permutations.
        intensity_shift, intensity_scale: per channel, the array holds (clip(x) - shift) / scale
            (inside the mask; 0 outside it where the mask is used).
    """

    shape_before_crop_zyx: Triple
    crop_bbox_zyx: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    shape_after_crop_zyx: Triple
    original_spacing_zyx: Spacing
    target_spacing_transposed: Spacing
    shape_after_resampling_transposed: Triple
    transpose_forward: Triple = (0, 1, 2)
    transpose_backward: Triple = (0, 1, 2)
    intensity_shift: tuple[float, ...] = ()
    intensity_scale: tuple[float, ...] = ()

    @property
    def target_spacing_zyx(self) -> Spacing:
        """The target spacing in stored axis order."""
        t = self.target_spacing_transposed
        return (t[self.transpose_backward[0]], t[self.transpose_backward[1]], t[self.transpose_backward[2]])


def preprocess(images: Sequence[sitk.Image], plans: Plans) -> tuple[np.ndarray, PreprocessInfo]:
    """Turn the input channels into the network's input array, as nnU-Net v1 does for 3d_fullres.

    Args:
        images: one 3D image per input channel, all on one grid, already in the model's orientation.
        plans: target spacing, transposes and per-channel normalisation.

    Returns:
        ``(array, info)``: array (C, Z, Y, X) float32 in the network's axis order at the target spacing;
        ``info`` for :func:`unetrpp.pipeline.postprocess.restore_label_map`.

    Raises:
        InputImageError: wrong channel count, channels of different sizes, all-zero input, or an image
            that shrinks to nothing at the target spacing.
    """
    if len(images) != plans.num_input_channels:
        raise InputImageError(f"the model needs {plans.num_input_channels} input channels, got {len(images)}")
    if len({image.GetSize() for image in images}) != 1:
        raise InputImageError(f"input channels differ in size: {[image.GetSize() for image in images]}")
    data = np.stack([sitk.GetArrayFromImage(image).astype(np.float32, copy=False) for image in images])
    spacing_zyx: Spacing = tuple(float(s) for s in reversed(images[0].GetSpacing()))  # type: ignore[assignment]
    shape_before: Triple = tuple(int(s) for s in data.shape[1:])  # type: ignore[assignment]

    mask = ndimage.binary_fill_holes(np.any(data != 0, axis=0))
    if not mask.any():
        raise InputImageError("every voxel of every input channel is 0; nothing to segment")
    bbox = _bounding_box(mask) if plans.use_nonzero_crop else tuple((0, s) for s in shape_before)
    region = tuple(slice(start, stop) for start, stop in bbox)
    data, mask = data[(slice(None), *region)], mask[region]
    shape_after_crop: Triple = tuple(int(s) for s in data.shape[1:])  # type: ignore[assignment]

    forward = plans.transpose_forward
    data = data.transpose((0, *[a + 1 for a in forward]))
    mask = mask.transpose(forward)
    spacing_transposed = tuple(spacing_zyx[a] for a in forward)
    target = plans.target_spacing_zyx
    new_shape = tuple(
        int(n) for n in np.round(np.array(spacing_transposed) / np.array(target) * data.shape[1:])
    )
    if min(new_shape) < 1:
        raise InputImageError(
            f"the image (crop {shape_after_crop}, spacing {spacing_zyx} mm) shrinks to {new_shape} voxels at "
            f"the model's spacing {target} mm; it is too small to segment"
        )
    axis = separate_axis(spacing_transposed, target)
    logger.debug("resampling %s -> %s (separate axis %s)", data.shape[1:], new_shape, axis)
    data = np.stack([_resample(channel, new_shape, axis, order=3).astype(np.float32) for channel in data])
    use_mask = any(c.use_nonzero_mask for c in plans.channels)
    if use_mask:
        mask = _resample(mask.astype(np.float64), new_shape, axis, order=1, dtype=np.float64) >= 0.5

    shifts, scales = [], []
    for c, normalization in enumerate(plans.channels):
        shift, scale = _normalize(data[c], mask if normalization.use_nonzero_mask else None, normalization)
        shifts.append(shift)
        scales.append(scale)

    info = PreprocessInfo(
        shape_before_crop_zyx=shape_before,
        crop_bbox_zyx=tuple((int(a), int(b)) for a, b in bbox),  # type: ignore[arg-type]
        shape_after_crop_zyx=shape_after_crop,
        original_spacing_zyx=spacing_zyx,
        target_spacing_transposed=target,
        shape_after_resampling_transposed=new_shape,  # type: ignore[arg-type]
        transpose_forward=plans.transpose_forward,
        transpose_backward=plans.transpose_backward,
        intensity_shift=tuple(shifts),
        intensity_scale=tuple(scales),
    )
    return np.ascontiguousarray(data, dtype=np.float32), info


def mask_to_network_grid(mask_zyx: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    """A (z, y, x) mask of the stored array -> the preprocessed array's grid (network axis order):
    cropped, transposed and resampled by nearest neighbour, as :func:`preprocess` moved the image."""
    crop = tuple(slice(start, stop) for start, stop in info.crop_bbox_zyx)
    moved = np.asarray(mask_zyx)[crop].transpose(info.transpose_forward)
    picks = [
        nearest_indices(old, new) for old, new in zip(moved.shape, info.shape_after_resampling_transposed)
    ]
    return moved[np.ix_(*picks)]


def separate_axis(spacing: Sequence[float], target_spacing: Sequence[float]) -> int | None:
    """The axis nnU-Net v1 resamples on its own (nearest neighbour), or None for plain 3D resampling.

    nnU-Net's ``get_do_separate_z``/``get_lowres_axis``: the original spacing decides when it is
    anisotropic (max / min > 3), else the target spacing; if two axes tie for the coarsest
    spacing there is no single low-resolution axis and the volume is resampled in 3D.
    """
    for candidate in (np.asarray(spacing, dtype=float), np.asarray(target_spacing, dtype=float)):
        if candidate.max() / candidate.min() > ANISOTROPY_THRESHOLD:
            coarsest = np.flatnonzero(candidate.max() / candidate == 1)
            return int(coarsest[0]) if len(coarsest) == 1 else None
    return None


def nearest_indices(old_size: int, new_size: int) -> np.ndarray:
    """Source index for each output index of a nearest-neighbour resize along one axis.

    Same coordinates (``scale * (i + 0.5) - 0.5``) and rounding as nnU-Net's ``map_coordinates(order=0,
    mode="nearest")``; computed by that very call on a ramp so ties round exactly as scipy does.
    """
    coordinates = old_size / new_size * (np.arange(new_size) + 0.5) - 0.5
    ramp = np.arange(old_size, dtype=np.float64)
    picked = ndimage.map_coordinates(ramp, coordinates[None], order=0, mode="nearest")
    return picked.astype(np.intp)


def _resample(
    volume: np.ndarray, new_shape: Sequence[int], axis: int | None, order: int, dtype: type = np.float32
) -> np.ndarray:
    """Resize one 3D volume as nnU-Net's ``resample_data_or_seg`` does for data (float64 inside).

    With a separate axis, nnU-Net resizes every slice in-plane and then picks slices by nearest
    neighbour; picking first and resizing only the picked slices gives the same array for less work.
    """
    if tuple(volume.shape) == tuple(new_shape):
        return volume
    volume = volume.astype(np.float64, copy=False)
    if axis is None:
        return resize(volume, new_shape, order=order, mode="edge", anti_aliasing=False)
    in_plane = [n for a, n in enumerate(new_shape) if a != axis]
    source = np.moveaxis(volume, axis, 0)
    picked = nearest_indices(source.shape[0], new_shape[axis])
    out = np.empty((len(picked), *in_plane), dtype=dtype)
    first_row: dict[int, int] = {}  # upsampling repeats slices: resize each only once
    for row, index in enumerate(picked):
        first_row.setdefault(int(index), row)

    def resize_row(row: int) -> None:
        out[row] = resize(source[picked[row]], in_plane, order=order, mode="edge", anti_aliasing=False)

    for_each_slice(resize_row, list(first_row.values()))
    for row, index in enumerate(picked):
        if first_row[int(index)] != row:
            out[row] = out[first_row[int(index)]]
    return np.moveaxis(out, 0, axis)


def _normalize(
    channel: np.ndarray, mask: np.ndarray | None, normalization: ChannelNormalization
) -> tuple[float, float]:
    """Normalise ``channel`` in place; return (shift, scale) so that out = (clip(x) - shift) / scale."""
    if normalization.scheme is NormalizationScheme.CT:
        np.clip(channel, normalization.lower_bound, normalization.upper_bound, out=channel)
        shift, scale = float(normalization.mean), float(normalization.sd)  # type: ignore[arg-type]
        channel -= shift
        channel /= scale
        if mask is not None:
            channel[~mask] = 0
        return shift, scale
    values = channel[mask] if mask is not None else channel
    shift = float(values.mean(dtype=np.float64))
    scale = float(values.std(dtype=np.float64)) + _ZSCORE_EPSILON
    if mask is not None:
        channel[mask] = (values - shift) / scale
        channel[~mask] = 0
    else:
        channel -= shift
        channel /= scale
    return shift, scale


def _bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
