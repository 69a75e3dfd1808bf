"""DICOM Segmentation objects (Segmentation Storage, BINARY): written from a label map on a DICOM series'
grid, and read back as a label map (for ``unetrpp evaluate``), with highdicom.

A DICOM SEG must reference the very instances it was computed on, so it is only written from a DICOM
folder input: the series :func:`unetrpp.pipeline.dicom.select_series` picks, slice ``k`` of the label map
being file ``k`` of that series. The object shares the source's Study Instance UID and Frame of Reference,
copies its patient and study modules (highdicom does this from the first source instance), references the
source series and, per frame, the source instance, and gets new Series and SOP Instance UIDs. Each
non-empty structure becomes one segment with its name as label, the SNOMED CT category, type, laterality
modifier and anatomic region of ``data/structures.tsv``, the table's colour as CIELab, algorithm type
AUTOMATIC and an algorithm identification (Artificial Intelligence, the model's name, this package's
version). Only frames where a segment has voxels are stored.

When the checks run (``unetrpp segment --dicom-seg``):

1. before any work: highdicom is installed, the output file is free, the first input is a DICOM folder
   (:func:`find_dicom_source`); then the source headers are read (:func:`check_dicom_source`: one SOP
   class, single-frame images of one size, each with a position, one orientation, one Frame of
   Reference). A failure there is a warning at once; the ``.seg.nrrd`` is still computed and written and
   the run then ends with that one-line error (exit 2), so the user learns it early and keeps the result.
2. while reading (before inference): a gantry-tilted series, missing or uneven slices and mixed
   orientations are refused by the reader for every output, since no regular grid holds them.
3. after the ``.seg.nrrd`` is written: each label-map slice must lie exactly on its source frame
   (:func:`write_dicom_seg`); otherwise the SEG is refused in one line and the ``.seg.nrrd`` is kept.

highdicom and pydicom are an optional extra: ``pip install "unetrpp[dicom]"``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import SimpleITK as sitk

from unetrpp.atomic import atomic_output
from unetrpp.errors import DicomSegError, InputImageError, OutputExistsError, UnetrppError
from unetrpp.labels.terminology import Code, Structure

__all__ = [
    "DICOM_EXTRA",
    "DicomSource",
    "require_highdicom",
    "find_dicom_source",
    "check_dicom_source",
    "write_dicom_seg",
    "read_dicom_seg",
    "is_dicom_seg",
]

DICOM_EXTRA = 'pip install "unetrpp[dicom]"'
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_MANUFACTURER = "UNETRPP"
# A new series needs a number; source + 1000 sorts the result after its source in PACS series lists.
_SERIES_NUMBER_OFFSET = 1000
# What a SEG copies or references; de-identification sometimes blanks them.
_REQUIRED_UIDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)
_POSITION_TOLERANCE_VOXELS = 0.1  # as the reader's grid check (pipeline.dicom.GRID_TOLERANCE_VOXELS)


@dataclass(frozen=True)
class DicomSource:
    """The DICOM series a label map was computed on: ``files[k]`` holds slice ``k``."""

    folder: Path
    series_uid: str
    files: tuple[Path, ...]


def require_highdicom() -> ModuleType:
    """highdicom, or a one-line UnetrppError naming the install command (checked before any work)."""
    try:
        import highdicom
    except ImportError as error:
        raise UnetrppError(f"DICOM SEG files need highdicom and pydicom: {DICOM_EXTRA}") from error
    return highdicom


def find_dicom_source(input_path: str | os.PathLike[str], series_uid: str | None = None) -> DicomSource:
    """The series of a DICOM folder input that the reader segments; UnetrppError for any other input."""
    from unetrpp.pipeline.dicom import select_series

    path = Path(input_path)
    if not path.is_dir():
        raise UnetrppError(
            f"--dicom-seg needs a DICOM folder as the (first) input, not {path}: a DICOM SEG references the "
            "source's DICOM instances; write the .seg.nrrd only, or segment the DICOM series itself"
        )
    uid, files = select_series(path, series_uid)
    return DicomSource(path, uid, tuple(Path(f) for f in files))


def check_dicom_source(source: DicomSource) -> None:
    """Refuse (DicomSegError) a series whose headers cannot make one plain stack of SEG source frames."""
    from pydicom import dcmread

    name = f"DICOM series {source.series_uid} in {source.folder}"
    headers = [dcmread(f, stop_before_pixels=True) for f in source.files]
    for keyword in _REQUIRED_UIDS:
        if any(not str(h.get(keyword, "") or "").strip() for h in headers):
            raise DicomSegError(
                f"no DICOM SEG for {name}: its images lack a {keyword} (removed by de-identification?), "
                "which a SEG must reference"
            )
    if len({str(h.get("SOPClassUID", "")) for h in headers}) != 1:
        raise DicomSegError(f"no DICOM SEG for {name}: its files mix SOP classes")
    if any(int(h.get("NumberOfFrames", 1) or 1) != 1 for h in headers):
        raise DicomSegError(f"no DICOM SEG for {name}: only series of single-frame images are supported")
    if len({(h.get("Rows"), h.get("Columns")) for h in headers}) != 1:
        raise DicomSegError(f"no DICOM SEG for {name}: its images differ in size")
    if len({str(h.FrameOfReferenceUID) for h in headers}) != 1:
        raise DicomSegError(f"no DICOM SEG for {name}: its images do not share one Frame of Reference UID")
    if any("ImagePositionPatient" not in h or "ImageOrientationPatient" not in h for h in headers):
        raise DicomSegError(f"no DICOM SEG for {name}: some images lack Image Position/Orientation (Patient)")
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise DicomSegError(f"no DICOM SEG for {name}: it mixes slices of different orientations")


def write_dicom_seg(
    label_map: sitk.Image,
    structures: Sequence[Structure],
    source: DicomSource,
    path: str | os.PathLike[str],
    *,
    model_name: str,
    overwrite: bool = False,
) -> Path:
    """Write the non-empty ``structures`` of ``label_map`` (on ``source``'s grid) as a DICOM SEG.

    Raises:
        DicomSegError: the label map's slices do not lie on the source frames, or no structure has voxels
            (a SEG holds at least one segment).
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    hd = require_highdicom()
    from pydicom import dcmread
    from pydicom.sr.codedict import codes

    import unetrpp

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")
    datasets = [dcmread(f) for f in source.files]
    _check_on_source_frames(label_map, datasets, source)
    array = sitk.GetArrayViewFromImage(label_map)  # (k, j, i): frame k, row j, column i
    present = [s for s in structures if np.any(array == s.label_value)]
    if not present:
        raise DicomSegError(f"no DICOM SEG written to {path}: no structure has voxels (a SEG needs one)")
    # Segment numbers run 1..N in structure order; the table maps label values onto them.
    table = np.zeros(max(int(array.max()), max(s.label_value for s in present)) + 1, dtype=np.uint16)
    for number, structure in enumerate(present, start=1):
        table[structure.label_value] = number
    segment_numbers = table[array]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=unetrpp.__version__
    )
    descriptions = [_description(hd, n, s, algorithm) for n, s in enumerate(present, start=1)]
    with warnings.catch_warnings():  # highdicom's remarks on the source's own values (person names)
        warnings.simplefilter("ignore", UserWarning)
        seg = _segmentation(hd, datasets, segment_numbers, descriptions, model_name)
    with atomic_output(path, suffix=".dcm") as temporary:
        seg.save_as(temporary)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")
    return path


def _segmentation(
    hd: ModuleType, datasets: Sequence[Any], segment_numbers: np.ndarray, descriptions: list[Any], model: str
) -> Any:
    import unetrpp

    series_number = int(datasets[0].get("SeriesNumber", 0) or 0) + _SERIES_NUMBER_OFFSET
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=segment_numbers,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        manufacturer_model_name=model,
        software_versions=f"unetrpp {unetrpp.__version__}",
        device_serial_number="0",
        series_description=f"UNETR++ {model}",
        omit_empty_frames=True,
        # An empty Specific Character Set means the default repertoire, which is what None writes.
        specific_character_set=datasets[0].get("SpecificCharacterSet") or None,
    )


def _description(hd: ModuleType, number: int, structure: Structure, algorithm: Any) -> Any:
    """One segment: label, SNOMED CT category/type (+ laterality, region), CIELab colour, AUTOMATIC."""
    category = structure.category or Code("SCT", "85756007", "Tissue")
    type_ = structure.type or Code("SCT", "85756007", "Tissue")  # an uncoded card label: generic tissue
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.name,
        segmented_property_category=_coded(hd, category),
        segmented_property_type=_coded(hd, type_),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=structure.name,
        anatomic_regions=[_coded(hd, structure.region)] if structure.region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*structure.color_rgb),
    )
    if structure.modifier is not None:  # laterality: PS3.3 C.8.20.2, inside the type's code item
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(hd, structure.modifier)
        ]
    return description


def _coded(hd: ModuleType, code: Code) -> Any:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _check_on_source_frames(label_map: sitk.Image, datasets: Sequence[Any], source: DicomSource) -> None:
    """Refuse unless slice k of ``label_map`` is exactly the pixel grid of source file k."""
    name = f"DICOM series {source.series_uid} in {source.folder}"
    size = label_map.GetSize()
    if label_map.GetDimension() != 3 or size[2] != len(datasets):
        raise DicomSegError(f"no DICOM SEG for {name}: the label map has not one slice per source image")
    direction = np.asarray(label_map.GetDirection()).reshape(3, 3)
    tolerance = _POSITION_TOLERANCE_VOXELS * min(label_map.GetSpacing())
    for k, dataset in enumerate(datasets):
        orientation = np.array([float(v) for v in dataset.ImageOrientationPatient])
        position = np.array([float(v) for v in dataset.ImagePositionPatient])
        expected = np.array(label_map.TransformIndexToPhysicalPoint((0, 0, k)))
        if (
            (int(dataset.Columns), int(dataset.Rows)) != size[:2]
            or np.abs(orientation - direction[:, :2].T.ravel()).max() > 1e-3
            or np.linalg.norm(position - expected) > tolerance
        ):
            raise DicomSegError(
                f"no DICOM SEG for {name}: slice {k} of the label map does not lie on source image "
                f"{Path(source.files[k]).name} (not one plain stack)"
            )


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """True for a DICOM Part 10 file of the Segmentation Storage SOP class (read from its header only)."""
    from unetrpp.pipeline.dicom import is_dicom_file

    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return False
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def read_dicom_seg(path: str | os.PathLike[str]) -> tuple[sitk.Image, dict[int, str]]:
    """A DICOM SEG as a label image of segment numbers on the frames it stores, and {number: label}.

    The image's axes follow SimpleITK's DICOM reader (rows, columns, then the slice normal), so it lies on
    the source series' grid up to a whole-slice offset.

    Raises:
        InputImageError: not a readable SEG, or segments that overlap (no single label map holds them).
    """
    hd = require_highdicom()
    path = Path(path)
    try:
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=True)
    except Exception as error:  # pydicom and highdicom raise many unrelated types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputImageError(f"cannot read DICOM SEG {path}: {message}") from error
    array = np.asarray(volume.array)
    affine = np.asarray(volume.affine, dtype=float)
    # highdicom's axes are (slice, row, column); SimpleITK indexes (column, row, slice).
    axes = affine[:3, [2, 1, 0]]
    if np.dot(np.cross(axes[:, 0], axes[:, 1]), axes[:, 2]) < 0:  # slices run against the normal
        origin = affine[:3, :3] @ np.array([array.shape[0] - 1, 0, 0]) + affine[:3, 3]
        array, axes[:, 2] = array[::-1], -axes[:, 2]
    else:
        origin = affine[:3, 3]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.uint16)))
    spacing = np.linalg.norm(axes, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (axes / spacing).ravel()])
    image.SetOrigin([float(v) for v in origin])
    names = {int(n): str(seg.get_segment_description(n).SegmentLabel) for n in seg.segment_numbers}
    return image, names
