"""Class scores on the network's grid -> label map on the stored input array, as nnU-Net v1 exports it.

nnU-Net v1 (``save_segmentation_nifti_from_softmax``) undoes :mod:`unetrpp.pipeline.preprocess` in
reverse: ``transpose_backward`` on the softmax, resample it to the cropped input shape with linear
interpolation (order 1; nearest neighbour along the low-resolution axis when the spacing is anisotropic,
same rule as preprocessing), argmax, and paste the crop into a background-filled array of the stored shape.

The sliding window hands over blended logits; their softmax is taken here, chunk by chunk, before any
interpolation, because nnU-Net v1 and the reference way of ``benchmarks/bench_segment.py`` interpolate
probabilities, and interpolating logits would put some boundaries elsewhere. With it the pipeline
agrees with the reference way on 99.9997% or more of the voxels of the demo model's phantoms (fp32,
``benchmarks/RESULTS.md``). Where no resampling is needed the softmax is skipped (it does not change an
argmax).

Memory: a 512 x 512 x 150 CT with 14 classes would need several GB if every class were resampled at
once in float64 as nnU-Net does. Here one class at a time is resampled in float32 with
``torch.nn.functional.interpolate`` (same coordinates as ``skimage.transform.resize(order=1,
mode="edge")``: ``align_corners=False`` with edge clamping) and folded into a running maximum, so the
peak is the input plus about two float32 volumes of the output size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from unetrpp.pipeline.preprocess import PreprocessInfo, nearest_indices, separate_axis

__all__ = ["restore_label_map", "keep_largest_component"]

logger = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 1 << 24  # float32 values resampled at once (64 MiB): bounds the peak memory


def restore_label_map(logits: torch.Tensor | np.ndarray, info: PreprocessInfo) -> np.ndarray:
    """Resample class probabilities to the input array's grid and take the argmax.

    Args:
        logits: (K, Z, Y, X) class logits on the grid of
            :func:`~unetrpp.pipeline.preprocess.preprocess`'s array (network axis order); any float dtype,
            CPU or CUDA (the work then stays on that device). Their softmax is what gets resampled.
        info: what preprocessing did.

    Returns:
        Label map (Z, Y, X) in the stored axis order of the input image, shape
        ``info.shape_before_crop_zyx``; 0 (background) outside the crop. uint8, or uint16 above 256 classes.

    Raises:
        ValueError: the logits do not have the preprocessed array's spatial shape.
    """
    scores = torch.as_tensor(logits)
    expected = tuple(info.shape_after_resampling_transposed)
    if scores.ndim != 4 or tuple(scores.shape[1:]) != expected:
        raise ValueError(f"logits must have shape (K, *{expected}), got {tuple(scores.shape)}")
    num_classes = scores.shape[0]
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    scores = scores.permute(0, *[a + 1 for a in info.transpose_backward])  # stored axis order (a view)
    target = tuple(info.shape_after_crop_zyx)
    axis = separate_axis(info.original_spacing_zyx, info.target_spacing_zyx)
    lead = 0 if axis is None else axis  # the axis we walk through in chunks
    scores = scores.movedim(lead + 1, 1)
    out_shape = (target[lead], *[n for a, n in enumerate(target) if a != lead])
    labels = torch.empty(
        out_shape, dtype=torch.uint8 if dtype == np.uint8 else torch.int32, device=scores.device
    )
    resampled = tuple(scores.shape[1:]) != out_shape
    rows = _RowSampler(
        scores.shape[1], out_shape[0], nearest=axis is not None, softmax=resampled, device=scores.device
    )
    chunk = max(1, _CHUNK_ELEMENTS // (num_classes * out_shape[1] * out_shape[2]))
    with torch.inference_mode():
        for start in range(0, out_shape[0], chunk):
            stop = min(start + chunk, out_shape[0])
            block = rows.sample(scores, start, stop)  # (K, rows, A, B) float32 probabilities
            if tuple(block.shape[2:]) != out_shape[1:]:
                block = F.interpolate(block, size=out_shape[1:], mode="bilinear", align_corners=False)
            labels[start:stop] = block.max(0).indices  # first maximum on ties, as numpy's argmax
    crop = np.ascontiguousarray(labels.movedim(0, lead).cpu().numpy()).astype(dtype, copy=False)

    label_map = np.zeros(info.shape_before_crop_zyx, dtype=dtype)
    label_map[tuple(slice(start, stop) for start, stop in info.crop_bbox_zyx)] = crop
    return label_map


def keep_largest_component(label_map: np.ndarray, labels: Iterable[int] | None = None) -> np.ndarray:
    """Keep only the largest connected component (6-connected) of each given label; the rest becomes 0.

    Args:
        label_map: (Z, Y, X) integer label map.
        labels: label values to clean; None means every non-zero label present.

    Returns:
        A new label map of the same shape and dtype.
    """
    result = label_map.copy()
    present = np.unique(label_map)
    wanted = present[present != 0] if labels is None else [v for v in labels if v != 0 and v in present]
    boxes = ndimage.find_objects(label_map) if len(wanted) else []
    for value in wanted:
        box = boxes[int(value) - 1]
        components, count = ndimage.label(label_map[box] == value)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region = result[box]
        region[(components != 0) & (components != int(np.argmax(sizes)))] = 0
        logger.debug("label %s: kept the largest of %d components", value, count)
    return result


class _RowSampler:
    """Rows of the output along the chunked axis: nearest neighbour (nnU-Net's separate-z order 0) or
    linear (``align_corners=False`` with edge clamping, as ``skimage.transform.resize(order=1,
    mode="edge")``). Linear interpolation is separable, so rows followed by the in-plane bilinear resize
    equal the 3D trilinear resize."""

    def __init__(
        self, old_size: int, new_size: int, *, nearest: bool, softmax: bool, device: torch.device
    ) -> None:
        self.identity = old_size == new_size
        self.softmax = softmax
        if nearest:
            self.lower = torch.as_tensor(nearest_indices(old_size, new_size), device=device)
            self.upper, self.weight = self.lower, None
            return
        source = np.maximum((np.arange(new_size) + 0.5) * (old_size / new_size) - 0.5, 0.0)
        lower = np.minimum(np.floor(source).astype(np.int64), old_size - 1)
        self.lower = torch.as_tensor(lower, device=device)
        self.upper = torch.as_tensor(np.minimum(lower + 1, old_size - 1), device=device)
        self.weight = torch.as_tensor((source - lower).astype(np.float32), device=device)

    def sample(self, scores: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the output, (K, rows, A, B) float32; softmax taken before the lerp."""
        if self.identity:
            return self._rows(scores, slice(start, stop))
        lower = self._rows(scores, self.lower[start:stop])
        if self.weight is None:
            return lower
        weight = self.weight[start:stop][None, :, None, None]
        return torch.lerp(lower, self._rows(scores, self.upper[start:stop]), weight)

    def _rows(self, scores: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
        rows = scores[:, index].float()
        return torch.softmax(rows, dim=0) if self.softmax else rows
