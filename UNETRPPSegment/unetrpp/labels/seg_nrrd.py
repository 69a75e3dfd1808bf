"""Write and read 3D Slicer's segmentation file (``.seg.nrrd``) for a label map.

The file is a gzip-compressed NRRD label map (one layer) with Slicer's segmentation header fields:
one ``Segment<N>_*`` group per structure (ID, name, colour, label value, extent, terminology tag).
It covers the full grid of the input image, never a crop, and keeps the image's geometry exactly
(origin, spacing and direction cosines, also oblique ones), so Slicer shows the segments over the
input volume without any resampling. slicerio builds the header; this module only fills it.

Example::

    >>> path = write_seg_nrrd(label_map, structures_for("synapse"), "ct.seg.nrrd")
    >>> image, segments = read_seg_nrrd(path)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import SimpleITK as sitk

from unetrpp.atomic import IncompleteWrite, atomic_output
from unetrpp.errors import OutputExistsError, UnetrppError
from unetrpp.labels.terminology import (
    Code,
    Structure,
    TerminologyEntry,
    parse_terminology_entry,
    terminology_entry_string,
)

__all__ = ["SegmentInfo", "write_seg_nrrd", "read_seg_nrrd", "summarize", "ijk_to_lps"]

logger = logging.getLogger(__name__)

# zlib's default level: on a 512x512x300 label map with 13 organs it writes in 0.75 s (level 9: 1.9 s)
# a file 3 times smaller than level 1 (0.23 MB vs 0.66 MB) for 0.1 s more.
_COMPRESSION_LEVEL = 6
_REFERENCE_GEOMETRY = "Reference image geometry"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as stored in a ``.seg.nrrd`` file.

    Attributes:
        segment_id: Slicer's segment ID (``Segment_6``).
        name: segment name.
        label_value: voxel value of the segment in its layer.
        color: display colour, each component 0-1.
        terminology: serialized terminology entry, or None when the segment has none.
        layer: index of the labelmap layer holding the segment (always 0 in files written here).
    """

    segment_id: str
    name: str
    label_value: int
    color: tuple[float, float, float]
    terminology: str | None = None
    layer: int = 0

    def terminology_entry(self) -> TerminologyEntry | None:
        """The parsed terminology entry (codes), or None."""
        return parse_terminology_entry(self.terminology) if self.terminology else None


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to physical LPS millimetres (SimpleITK's space)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def write_seg_nrrd(
    label_map: sitk.Image,
    structures: Sequence[Structure],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``label_map`` as a Slicer segmentation with one segment per structure.

    Every structure becomes a segment, also one with no voxels, so the file always lists the model's
    structures. Voxels whose value belongs to no structure (e.g. labels left out with
    ``--structures``) are written as background. The file appears atomically: it is written to a
    temporary file in the same folder and renamed, so a failure leaves nothing behind.

    Args:
        label_map: 3D integer image on the input grid (values 0 = background, else label values).
        structures: the structures to store, each with a distinct label value.
        path: output file, conventionally ending in ``.seg.nrrd``.
        overwrite: replace an existing file instead of refusing.

    Returns:
        The written path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        UnetrppError: the output folder does not exist or cannot be written.
        ValueError: ``label_map`` is not a 3D scalar integer image, or label values repeat.
    """
    slicerio = _slicerio()
    path = Path(path)
    voxels = _label_array(label_map, structures)  # (i, j, k)
    folder = path.parent
    if not folder.is_dir():
        raise UnetrppError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise UnetrppError(f"cannot write {path}: it is a folder")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")

    segmentation = {
        "voxels": voxels,
        "ijkToLPS": ijk_to_lps(label_map),
        "encoding": "gzip",
        "masterRepresentation": "Binary labelmap",
        "containedRepresentationNames": ["Binary labelmap"],
        "referenceImageExtentOffset": [0, 0, 0],
        # Written as a raw field because Slicer only reads a parameter list that ends with "&".
        "Segmentation_ConversionParameters": f"{_REFERENCE_GEOMETRY}|{_reference_geometry(label_map)}|"
        "Geometry of the image the segmentation was computed on (IJK to RAS; extent).&",
        "segments": [_segment_fields(s, voxels.shape) for s in structures],
    }

    def same_voxels(temporary: Path) -> None:
        _check_written(temporary, voxels, len(structures))

    with atomic_output(path, verify=same_voxels) as temporary:
        with open(temporary, "xb") as stream:
            slicerio.write_segmentation(stream, segmentation, compression_level=_COMPRESSION_LEVEL)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")
    logger.info("wrote %s (%d segments)", path, len(structures))
    return path


def _slicerio() -> ModuleType:
    try:
        import slicerio
    except ImportError as error:
        raise ImportError(
            "reading and writing .seg.nrrd files needs slicerio: pip install slicerio"
        ) from error
    return slicerio


def _check_written(path: Path, voxels: np.ndarray, segments: int) -> None:
    """Raise IncompleteWrite unless ``path`` reads back as exactly ``voxels`` and ``segments`` segments.

    A full read, not only the header: on a 512x512x150 label map with 4 organs it takes 0.15 s after a
    0.4 s write (measured), and it proves the whole gzip stream is on the disk.
    """
    try:
        written = _slicerio().read_segmentation(str(path))
    except Exception as error:  # pynrrd and slicerio raise several unrelated types
        raise IncompleteWrite(f"the file read back is damaged ({type(error).__name__})") from error
    if len(written["segments"]) != segments or not np.array_equal(written["voxels"], voxels):
        raise IncompleteWrite("the file read back does not hold the label map written")


def _label_array(label_map: sitk.Image, structures: Sequence[Structure]) -> np.ndarray:
    """Voxel array indexed (i, j, k), narrowest unsigned type, only the structures' labels kept."""
    if not isinstance(label_map, sitk.Image):
        raise ValueError(f"label map must be a SimpleITK image, got {type(label_map).__name__}")
    dimension, components = label_map.GetDimension(), label_map.GetNumberOfComponentsPerPixel()
    if dimension != 3 or components != 1:
        raise ValueError(
            f"label map must be a 3D scalar image, got {dimension}D with {components} components"
        )
    array = sitk.GetArrayViewFromImage(label_map)  # (k, j, i)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"label map must have an integer pixel type, got {label_map.GetPixelIDTypeAsString()}"
        )
    if array.size and array.min() < 0:
        raise ValueError("label map holds negative labels")
    values = np.array([s.label_value for s in structures], dtype=np.int64)
    if len(set(values.tolist())) != len(values):
        raise ValueError(f"structures repeat a label value: {sorted(values.tolist())}")
    top = int(values.max(initial=0))
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"label values above {np.iinfo(np.uint16).max} are not supported")
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    # A lookup table keeps the listed labels and maps every other value (top + 1 stands for all values
    # above top) to background: one pass over the volume, several times faster than np.isin.
    table = np.zeros(top + 2, dtype=dtype)
    table[values] = values
    kept = table[np.minimum(array, top + 1)]
    dropped = int(np.count_nonzero(array)) - int(np.count_nonzero(kept))
    if dropped:
        logger.info("%d voxels carry labels of no listed structure; written as background", dropped)
    return kept.transpose(2, 1, 0)


def _segment_fields(structure: Structure, shape: tuple[int, ...]) -> dict[str, object]:
    """slicerio's segment dict for one structure: full-grid extent, name and colour set by us."""
    fields: dict[str, object] = {
        "id": f"Segment_{structure.label_value}",
        "name": structure.name,
        "nameAutoGenerated": False,
        "color": list(structure.color_float),
        "colorAutoGenerated": False,
        "labelValue": structure.label_value,
        "layer": 0,
        # The full grid, not the segment's bounding box: older Slicer versions crop every segment of a
        # layer to the first segment's extent.
        "extent": [0, shape[0] - 1, 0, shape[1] - 1, 0, shape[2] - 1],
    }
    if structure.is_coded:
        fields["tags"] = {"TerminologyEntry": terminology_entry_string(structure)}
    return fields


def _reference_geometry(image: sitk.Image) -> str:
    """Slicer's serialized image geometry: IJK-to-RAS matrix row by row, then the extent; ';' after each."""
    matrix = _LPS_TO_RAS @ ijk_to_lps(image)
    size = image.GetSize()
    numbers = [repr(float(v)) for v in matrix.ravel()] + [str(v) for n in size for v in (0, n - 1)]
    return "".join(f"{v};" for v in numbers)


def read_seg_nrrd(path: str | os.PathLike[str]) -> tuple[sitk.Image, list[SegmentInfo]]:
    """Read a single-layer ``.seg.nrrd`` as a label image plus its segments.

    The image lies on the file's grid (for files written by Slicer that may be cropped to the segments;
    files written here cover the input grid).

    Raises:
        UnetrppError: missing file, not a segmentation NRRD, or segments that overlap (several layers).
    """
    slicerio = _slicerio()
    path = Path(path)
    if not path.is_file():
        raise UnetrppError(f"segmentation file {path} does not exist")
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # pynrrd and slicerio raise several unrelated types
        raise UnetrppError(f"{path} is not a readable segmentation NRRD file: {error}") from error
    voxels = segmentation["voxels"]
    if voxels.ndim != 3:
        raise UnetrppError(
            f"{path} stores overlapping segments in {voxels.shape[0]} layers; only single-layer "
            "segmentations can be read as one label map (export a labelmap from Slicer instead)"
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    matrix = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (matrix[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in matrix[:3, 3]])
    segments = []
    for index, segment in enumerate(segmentation["segments"]):
        terminology = segment.get("terminology")
        segments.append(
            SegmentInfo(
                segment_id=str(segment.get("id", f"Segment_{index}")),
                name=str(segment.get("name", segment.get("id", f"Segment_{index}"))),
                label_value=int(segment.get("labelValue", 1)),
                color=tuple(float(c) for c in segment.get("color", (0.5, 0.5, 0.5))),
                terminology=_entry_string(terminology, path) if terminology else None,
                layer=int(segment.get("layer", 0)),
            )
        )
    return image, segments


def _entry_string(terminology: dict[str, object], path: Path) -> str | None:
    """Serialize slicerio's terminology dict back to Slicer's string; None if it is not well formed."""

    def code(key: str) -> Code | None:
        value = terminology.get(key)
        return Code.parse("^".join(value)) if value else None

    try:
        category, type_ = code("category"), code("type")
        if category is None or type_ is None:
            raise ValueError("no category or type code")
        entry = TerminologyEntry(
            context=str(terminology.get("contextName", "")),
            category=category,
            type=type_,
            modifier=code("typeModifier"),
            region_context=str(terminology.get("anatomicContextName", "")),
            region=code("anatomicRegion"),
            region_modifier=code("anatomicRegionModifier"),
        )
    except ValueError as error:
        logger.warning("ignoring a malformed terminology entry in %s: %s", path, error)
        return None
    return entry.to_string()


def summarize(label_map: sitk.Image, structures: Sequence[Structure]) -> list[dict[str, object]]:
    """Per structure: ``name``, ``label_value``, ``voxels`` and ``volume_ml`` (from the voxel spacing).

    Structures with no voxels are listed with zeros, in the order given.
    """
    array = sitk.GetArrayViewFromImage(label_map)
    if not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
        raise ValueError("label map must hold non-negative integer labels")
    length = max((s.label_value for s in structures), default=0) + 1
    # Slab by slab: bincount converts its input to int64, hundreds of MB for a whole CT.
    counts = np.zeros(length, dtype=np.int64)
    for start in range(0, array.shape[0], 16):
        slab = np.bincount(array[start : start + 16].ravel(), minlength=length)
        counts += slab[:length]
    voxel_ml = float(np.prod(label_map.GetSpacing())) / 1000.0
    return [
        {
            "name": s.name,
            "label_value": s.label_value,
            "voxels": int(counts[s.label_value]),
            "volume_ml": float(counts[s.label_value]) * voxel_ml,
        }
        for s in structures
    ]
