"""Read one image series from a DICOM folder with SimpleITK, refusing series that no regular grid holds.

* A folder may hold several series. We take the one with the most slices, or the one ``series_uid``
  names. Two largest series of equal size are ambiguous: the error lists every UID with its slice count,
  so the user can pass ``--series UID``. Non-image objects (SEG, RTSTRUCT, SR, ...) are never candidates.
  Subfolders are not searched.
* **Gantry-tilted series are refused.** Their slices are stacked along a direction that is not
  perpendicular to the slice plane (a sheared grid). SimpleITK still returns an orthogonal grid, so
  every slice after the first would sit at the wrong physical place, and so would the mask. Regularise
  the series first (Slicer's DICOM "acquisition geometry regularization", or dcm2niix) and segment the
  resulting volume.
* **Series with variable slice spacing or missing slices are refused** for the same reason: a regular
  grid cannot hold them without moving slices. Both checks compare every slice's Image Position
  (Patient) with the grid SimpleITK built; a deviation above 10 % of the smallest voxel spacing refuses.
  GDCM leaves a file whose header it cannot parse (a truncated copy) out of the series without a word;
  when such a file leaves the gap, the error names it instead of the spacing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import InputImageError
from unetrpp.events import EventCallback, warn
from unetrpp.pipeline.itk_warnings import itk_warnings_off

__all__ = [
    "read_dicom_series",
    "select_series",
    "is_dicom_file",
    "NON_IMAGE_MODALITIES",
    "GRID_TOLERANCE_VOXELS",
]

logger = logging.getLogger(__name__)

GRID_TOLERANCE_VOXELS = 0.1  # how far (in voxels of the smallest spacing) a slice may sit off the grid
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"})


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICOM Part 10 preamble marker."""
    with path.open("rb") as stream:
        stream.seek(128)
        return stream.read(4) == b"DICM"


def read_dicom_series(
    folder: Path, series_uid: str | None = None, on_event: EventCallback | None = None
) -> sitk.Image:
    """Read the chosen image series of ``folder`` (see the module docstring); InputImageError if refused.

    ``on_event`` gets a WarningEvent when the largest of several series was chosen without ``series_uid``.
    """
    with itk_warnings_off():  # we diagnose empty folders and irregular slices ourselves
        return _read_series(folder, series_uid, on_event)


def select_series(folder: Path, series_uid: str | None = None) -> tuple[str, list[str]]:
    """(UID, file names in slice order) of the series :func:`read_dicom_series` reads; slice ``k`` of its
    image comes from file ``k``. A DICOM SEG references exactly these files."""
    with itk_warnings_off():
        return _select_series(folder, series_uid)


def _read_series(folder: Path, series_uid: str | None, on_event: EventCallback | None) -> sitk.Image:
    uid, files = _select_series(folder, series_uid, on_event)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputImageError(f"cannot read DICOM series {uid} in {folder} (damaged files?)") from error
    if len(files) > 1:
        _check_slice_geometry(image, reader, f"DICOM series {uid} in {folder}", folder)
    if reader.HasMetaDataKey(0, "0008|0060"):  # the series reader keeps no tags on the image; the
        image.SetMetaData("0008|0060", reader.GetMetaData(0, "0008|0060"))  # modality check wants this one
    logger.info("read DICOM series %s (%d files) from %s", uid, len(files), folder)
    return image


def _select_series(
    folder: Path, series_uid: str | None, on_event: EventCallback | None = None
) -> tuple[str, list[str]]:
    series = _image_series(folder)
    if not series:
        hint = (
            "; subfolders are not searched: pass the series folder itself" if _has_subfolders(folder) else ""
        )
        raise InputImageError(f"no DICOM image series found in folder {folder}{hint}")
    listing = ", ".join(f"{uid or '<no UID>'} ({len(files)} slices)" for uid, files in series.items())
    if series_uid is not None:
        if series_uid not in series:
            raise InputImageError(f"no DICOM series {series_uid} in {folder}; available: {listing}")
        uid = series_uid
    else:
        counts = sorted((len(files) for files in series.values()), reverse=True)
        if len(counts) > 1 and counts[0] == counts[1]:
            raise InputImageError(
                f"{folder} holds several DICOM series of equal size; choose one with --series UID: {listing}"
            )
        uid = max(series, key=lambda key: len(series[key]))
        if len(series) > 1:
            message = (
                f"{folder} holds {len(series)} DICOM series; read the largest, {uid} ({len(series[uid])} "
                f"slices); pass --series UID for another: {listing}"
            )
            warn(on_event, message, logger)
    return uid, series[uid]


def _has_subfolders(folder: Path) -> bool:
    return any(child.is_dir() for child in folder.iterdir())


def _image_series(folder: Path) -> dict[str, list[str]]:
    """Series UID -> sorted file names, for every series in ``folder`` that holds image pixels."""
    series: dict[str, list[str]] = {}
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        header = sitk.ImageFileReader()
        header.SetFileName(files[0])
        try:
            header.ReadImageInformation()
        except RuntimeError:
            logger.info("skipping DICOM series %s: no readable image in %s", uid, files[0])
            continue
        modality = header.GetMetaData("0008|0060").strip() if header.HasMetaDataKey("0008|0060") else ""
        if modality.upper() in NON_IMAGE_MODALITIES:
            logger.info("skipping DICOM series %s: modality %s holds no image", uid, modality)
            continue
        series[uid] = files
    return series


def _check_slice_geometry(image: sitk.Image, reader: sitk.ImageSeriesReader, name: str, folder: Path) -> None:
    """Refuse a series whose slices do not sit where the regular grid SimpleITK built puts them; a gap
    left by a damaged file of ``folder`` names that file."""
    if image.GetDimension() != 3 or image.GetSize()[2] != len(reader.GetFileNames()):
        return  # multi-frame files: GDCM placed the frames itself
    positions, orientations = [], []
    for k in range(image.GetSize()[2]):
        if not (reader.HasMetaDataKey(k, "0020|0032") and reader.HasMetaDataKey(k, "0020|0037")):
            logger.warning("%s: slice %d has no position/orientation tags; geometry not checked", name, k)
            return
        positions.append(_numbers(reader.GetMetaData(k, "0020|0032")))
        orientations.append(_numbers(reader.GetMetaData(k, "0020|0037")))
    positions_mm = np.array(positions)
    if any(len(o) != 6 for o in orientations) or positions_mm.shape[1] != 3:
        return
    if np.abs(np.array(orientations) - orientations[0]).max() > 1e-3:
        raise InputImageError(f"{name} mixes slices of different orientations (a localizer?); not one volume")
    expected = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(len(positions))])
    deviation = np.linalg.norm(positions_mm - expected, axis=1).max()
    tolerance = GRID_TOLERANCE_VOXELS * min(image.GetSpacing())
    if deviation <= tolerance:
        return
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    steps = np.diff(positions_mm, axis=0)
    along = steps @ normal
    across = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    tilt_deg = float(np.degrees(np.arctan2(across.max(), np.abs(along).max())))
    if across.max() > tolerance:
        raise InputImageError(
            f"{name} is gantry-tilted ({tilt_deg:.1f} deg: slices not stacked perpendicular to their plane); "
            "regularise it first (Slicer DICOM acquisition geometry regularization, or dcm2niix)"
        )
    damaged = _damaged_dicom_files(folder, reader.GetFileNames())
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise InputImageError(
            f"{name}: {damaged[0]}{more} is damaged (its DICOM header cannot be read; a truncated copy?), "
            "so its slice is missing from the series; replace it with an intact copy"
        )
    raise InputImageError(
        f"{name} has irregular slice spacing ({np.abs(along).min():.3g} to {np.abs(along).max():.3g} mm; "
        "missing or duplicate slices?); resample it to a regular grid first"
    )


def _damaged_dicom_files(folder: Path, listed: Sequence[str]) -> list[Path]:
    """Files of ``folder`` that look like DICOM but that no series lists and whose header cannot be read.

    GDCM leaves such files out of every series without a word. This reads headers, so it only runs once
    a series has been refused.
    """
    names = {Path(file).name for file in listed}
    damaged = []
    for path in sorted(folder.iterdir()):
        if path.name in names or not path.is_file():
            continue
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        try:
            if not is_dicom_file(path):
                continue
            header.ReadImageInformation()
        except (OSError, RuntimeError):
            damaged.append(path)
    return damaged


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split("\\") if v.strip()]
    except ValueError:
        return []
