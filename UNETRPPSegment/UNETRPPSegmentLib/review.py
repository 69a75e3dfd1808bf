"""Review data for a finished segmentation: per-segment volume, voxel count and flags worth a look.

Flags:
    ``empty``: the model found nothing for this structure.
    ``fragmented``: more than one large connected component (each at least ``large_fraction`` of the
        segment), where an organ is expected to be in one piece.
    ``left/right swapped?``: a left/right pair (e.g. "left kidney" and "right kidney") whose centroids
        lie on the wrong sides of each other in patient (RAS) coordinates. Official weights never saw
        orientation metadata, so a wrong orientation guess swaps the sides without any error.

Qt-free (numpy, vtk, slicer); the widget shows the result in its review table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import vtk
from vtk.util import numpy_support

__all__ = [
    "FLAG_EMPTY",
    "FLAG_FRAGMENTED",
    "FLAG_SWAPPED",
    "SegmentSummary",
    "summarize_mask",
    "flag_swapped_sides",
    "review_label_map",
    "review_segmentation_node",
]

FLAG_EMPTY = "empty"
FLAG_FRAGMENTED = "fragmented"
FLAG_SWAPPED = "left/right swapped?"
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SegmentSummary:
    """One row of the review table.

    Attributes:
        centroid_ras: mean voxel position in the segmentation's own RAS coordinates (mm), None if empty.
        large_components: connected components holding at least ``large_fraction`` of the voxels.
    """

    segment_id: str
    name: str
    color_rgb: tuple[float, float, float]
    voxel_count: int
    volume_ml: float
    centroid_ras: tuple[float, float, float] | None
    large_components: int
    flags: tuple[str, ...] = ()


def _component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the face-connected (6-neighbour) components of a (Z, Y, X) mask."""
    image = vtk.vtkImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    connectivity = vtk.vtkImageConnectivityFilter()
    connectivity.SetInputData(image)
    connectivity.SetScalarRange(1, 1)
    connectivity.SetExtractionModeToAllRegions()
    connectivity.Update()
    return numpy_support.vtk_to_numpy(connectivity.GetExtractedRegionSizes()).astype(np.int64)


def _index_range(occupied: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index where a 1D boolean profile is True."""
    indices = np.flatnonzero(occupied)
    return int(indices[0]), int(indices[-1]) + 1


def summarize_mask(
    segment_id: str,
    name: str,
    color_rgb: Sequence[float],
    mask: np.ndarray,
    ijk_to_ras: np.ndarray,
    *,
    large_fraction: float = 0.1,
) -> SegmentSummary:
    """Volume, centroid and component flags of one binary mask.

    Args:
        mask: (Z, Y, X) array, non-zero inside the segment; voxel (k, j, i) has IJK index (i, j, k).
        ijk_to_ras: 4x4 matrix from IJK index to RAS (mm).
        large_fraction: a component counts as large from this fraction of the segment's voxels on.
    """
    ijk_to_ras = np.asarray(ijk_to_ras, dtype=float)
    inside = np.asarray(mask) != 0
    voxel_count = int(np.count_nonzero(inside))
    voxel_volume_mm3 = abs(float(np.linalg.det(ijk_to_ras[:3, :3])))
    flags: list[str] = []
    centroid = None
    large = 0
    if voxel_count == 0:
        flags.append(FLAG_EMPTY)
    else:
        # Work inside the bounding box only: a small organ in a large CT costs little.
        (k0, k1), (j0, j1), (i0, i1) = (
            _index_range(inside.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))
        )
        box = inside[k0:k1, j0:j1, i0:i1]
        k, j, i = np.nonzero(box)
        mean_ijk = np.array([i.mean() + i0, j.mean() + j0, k.mean() + k0, 1.0])
        centroid = tuple(float(v) for v in (ijk_to_ras @ mean_ijk)[:3])
        sizes = _component_sizes(box)
        large = int((sizes >= large_fraction * voxel_count).sum())
        if large > 1:
            flags.append(FLAG_FRAGMENTED)
    return SegmentSummary(
        segment_id=segment_id,
        name=name,
        color_rgb=tuple(float(c) for c in color_rgb),
        voxel_count=voxel_count,
        volume_ml=voxel_count * voxel_volume_mm3 / 1000.0,
        centroid_ras=centroid,
        large_components=large,
        flags=tuple(flags),
    )


def flag_swapped_sides(summaries: Sequence[SegmentSummary]) -> tuple[SegmentSummary, ...]:
    """Add ``FLAG_SWAPPED`` to both members of each left/right pair whose sides look exchanged.

    In RAS coordinates +x points to the patient's right, so a right structure's centroid must have a
    larger x than its left partner's.
    """
    by_structure: dict[str, dict[str, int]] = {}
    for index, summary in enumerate(summaries):
        match = _SIDE.search(summary.name)
        if match is None or summary.centroid_ras is None:
            continue
        structure = " ".join(_SIDE.sub(" ", summary.name).lower().split())
        by_structure.setdefault(structure, {})[match.group(1).lower()] = index
    swapped: set[int] = set()
    for sides in by_structure.values():
        if "left" in sides and "right" in sides:
            left_x = summaries[sides["left"]].centroid_ras[0]
            right_x = summaries[sides["right"]].centroid_ras[0]
            if right_x < left_x:
                swapped.update(sides.values())
    return tuple(
        replace(summary, flags=(*summary.flags, FLAG_SWAPPED)) if index in swapped else summary
        for index, summary in enumerate(summaries)
    )


def review_label_map(
    label_map: np.ndarray,
    ijk_to_ras: np.ndarray,
    segments: Sequence[tuple[str, str, int, Sequence[float]]],
    *,
    large_fraction: float = 0.1,
) -> tuple[SegmentSummary, ...]:
    """Review a label map: ``segments`` lists (segment_id, name, label_value, color_rgb)."""
    label_map = np.asarray(label_map)
    summaries = [
        summarize_mask(
            segment_id, name, color, label_map == label_value, ijk_to_ras, large_fraction=large_fraction
        )
        for segment_id, name, label_value, color in segments
    ]
    return flag_swapped_sides(summaries)


def _oriented_image_to_mask(image) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X) mask of a ``vtkOrientedImageData`` and the 4x4 matrix from array index to RAS."""
    extent = image.GetExtent()
    shape_zyx = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    if min(shape_zyx) <= 0 or image.GetPointData().GetScalars() is None:
        return np.zeros((1, 1, 1), dtype=bool), np.eye(4)
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape_zyx)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    offset = np.eye(4)
    offset[:3, 3] = (extent[0], extent[2], extent[4])  # array index 0 is IJK index extent[min]
    return array, image_to_ras @ offset


def review_segmentation_node(segmentation_node, *, large_fraction: float = 0.1) -> tuple[SegmentSummary, ...]:
    """Review every segment of a ``vtkMRMLSegmentationNode`` (binary labelmap representation).

    Segments that share a labelmap layer (as read from a ``.seg.nrrd``) are read from that layer,
    converted to an array once; others are extracted one by one.
    """
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    summaries = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        layer = segment.GetRepresentation(labelmap_name)
        if layer is not None and layer.IsA("vtkOrientedImageData"):
            key = layer.__this__  # the C++ object's address: one entry per shared layer
            if key not in layers:
                layers[key] = _oriented_image_to_mask(layer)
            array, ijk_to_ras = layers[key]
            mask = array == segment.GetLabelValue()
        else:
            image = slicer.vtkOrientedImageData()
            segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
            array, ijk_to_ras = _oriented_image_to_mask(image)
            mask = array != 0
        summaries.append(
            summarize_mask(
                segment_id,
                segment.GetName(),
                segment.GetColor(),
                mask,
                ijk_to_ras,
                large_fraction=large_fraction,
            )
        )
    return flag_swapped_sides(summaries)
