"""Read clinical volumes with SimpleITK and refuse, in one line, anything that cannot be segmented.

Supported inputs: NIfTI (``.nii``, ``.nii.gz``), NRRD/NHDR, MetaImage (``.mha``, ``.mhd``) and a folder
holding a DICOM series. SimpleITK is the only reader, so every file gets the same (LPS) geometry
convention; we never fall back to a second library that could disagree on orientation.

DICOM folders are read by :mod:`unetrpp.pipeline.dicom`: the series with the most slices (or
``series_uid``); gantry-tilted series and series with irregular slice spacing are refused, because a
regular grid would silently misplace their slices and so the mask.

Volumes are checked for what would break preprocessing or silently give nonsense: 3D (a 3D file with a
single slice along any axis is refused as effectively 2D; two or more slices are accepted, so a
3-slice CT works), one scalar value per voxel, finite values, positive spacing between 1e-3 and 50 mm,
orthonormal direction cosines, and not every voxel equal. NIfTI files are checked before ITK reads them
(:mod:`unetrpp.pipeline.nifti_header`: truncation, voxel sizes, NaN voxels, qform against sform), since
ITK repairs those without a word. What reading had to decide or repair, and ITK's own warnings, become
``warning`` events, so the Slicer panel shows them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import InputImageError
from unetrpp.events import EventCallback, warn
from unetrpp.pipeline.dicom import (
    GRID_TOLERANCE_VOXELS,
    NON_IMAGE_MODALITIES,
    is_dicom_file,
    read_dicom_series,
)
from unetrpp.pipeline.itk_warnings import itk_warnings_captured
from unetrpp.pipeline.nifti_header import check_nifti_file, qform_sform_warning

__all__ = [
    "read_image",
    "read_inputs",
    "validate_image",
    "check_same_grid",
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 50.0
SUPPORTED = "NIfTI, NRRD/NHDR, MHA/MHD or a DICOM series folder"

# Tolerance for "all channels share one grid", in voxels (the same as for DICOM slice placement).
_GRID_TOLERANCE_VOXELS = GRID_TOLERANCE_VOXELS
_DIRECTION_TOLERANCE = 1e-4


def read_image(
    path: PathLike, *, series_uid: str | None = None, on_event: EventCallback | None = None
) -> sitk.Image:
    """Read one 3D scalar volume from a file or a DICOM series folder and validate it.

    Args:
        path: image file (NIfTI, NRRD/NHDR, MHA/MHD) or a folder holding a DICOM series.
        series_uid: DICOM only: the Series Instance UID to read when the folder holds several series.
        on_event: receives a WarningEvent for what reading had to decide or repair (ITK's warnings,
            a NIfTI qform/sform choice, a DICOM series chosen among several); also logged.

    Returns:
        The image as stored (pixel type and geometry unchanged; a 4D file whose 4th axis has size 1
        is returned as its 3D volume).

    Raises:
        InputImageError: the path is missing or unreadable, or the volume fails :func:`validate_image`.
    """
    image = _read_raw(Path(path), series_uid, on_event)
    return validate_image(image, name=str(path))


def read_inputs(
    paths: PathLike | Sequence[PathLike],
    num_channels: int,
    *,
    series_uid: str | None = None,
    channel_names: Sequence[str] | None = None,
    model_name: str | None = None,
    on_event: EventCallback | None = None,
) -> list[sitk.Image]:
    """Read the input channels of one case and check that they share a single voxel grid.

    A single 4D file (or vector image) whose last axis (or component count) equals ``num_channels``
    is split into its channels, in stored order, as the Medical Segmentation Decathlon stores BraTS.

    Args:
        paths: one path per channel, in the order the model expects (``channel_names``).
        num_channels: how many channels the model takes.
        series_uid: passed to :func:`read_image` for every DICOM folder.
        channel_names, model_name: only used to make the error messages precise.
        on_event: passed to :func:`read_image`.

    Returns:
        One validated 3D image per channel.

    Raises:
        InputImageError: wrong number of inputs, unreadable or invalid input, or channels on different grids.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    who = f"model {model_name}" if model_name else "the model"
    names = f" ({', '.join(channel_names)})" if channel_names else ""
    plural = "input" if num_channels == 1 else "inputs"
    count_error = f"{who} needs {num_channels} {plural}{names}, got {len(paths)}"
    if len(paths) == 1 and num_channels > 1:
        raw = _read_raw(Path(paths[0]), series_uid, on_event)
        channels = _split_channels(raw, num_channels)
        if channels is None:
            raise InputImageError(
                f"{count_error}: {paths[0]} holds {_volume_count(raw)}; give one file per input, or one "
                f"4D file of {num_channels} volumes"
            )
        images = [validate_image(c, name=f"{paths[0]} channel {i + 1}") for i, c in enumerate(channels)]
        return images
    if len(paths) != num_channels:
        raise InputImageError(count_error)
    images = [read_image(p, series_uid=series_uid, on_event=on_event) for p in paths]
    check_same_grid(images, [str(p) for p in paths])
    return images


def validate_image(image: sitk.Image, name: str = "input image") -> sitk.Image:
    """Check that ``image`` is a segmentable 3D scalar volume; return it (3D view of a 1-frame 4D image).

    Raises:
        InputImageError: naming ``name`` and the first problem found.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB image); "
            "a single-channel 3D volume is needed (pass each channel as its own file)"
        )
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputImageError(f"{name} has complex-valued voxels; a real-valued 3D volume is needed")
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        size = image.GetSize()
    if image.GetDimension() == 2:
        raise InputImageError(f"{name} is a 2D image (size {_fmt_size(size)}); a 3D volume is needed")
    if image.GetDimension() != 3:
        raise InputImageError(
            f"{name} is {image.GetDimension()}D (size {_fmt_size(size)}); a single 3D volume is needed "
            "(pass each channel or time point as its own 3D file)"
        )
    if min(size) < 2:
        raise InputImageError(
            f"{name} is a single slice (size {_fmt_size(size)}); a 3D volume with at least 2 slices is needed"
        )
    spacing = image.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        raise InputImageError(
            f"{name} has voxel spacing {_fmt_vec(spacing)} mm; each spacing must lie between "
            f"{MIN_SPACING_MM:g} and {MAX_SPACING_MM:g} mm (fix the header)"
        )
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or np.abs(direction.T @ direction - np.eye(3)).max() > 1e-3:
        raise InputImageError(
            f"{name} has non-orthonormal direction cosines (a sheared grid); fix the header"
        )
    if not all(np.isfinite(image.GetOrigin())):
        raise InputImageError(f"{name} has a non-finite origin {_fmt_vec(image.GetOrigin())}")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise InputImageError(f"{name} has {bad} NaN or infinite voxels; replace them before segmenting")
    low, high = array.min(), array.max()
    if low == high:
        raise InputImageError(f"{name} is empty: every voxel has the value {low:g}")
    return image


def _read_raw(path: Path, series_uid: str | None, on_event: EventCallback | None = None) -> sitk.Image:
    """Read without validating. A file's ITK warnings become warning events (a DICOM folder's are
    silenced: its problems get our own one-line errors, without ITK's lines before them)."""
    if not path.exists():
        raise InputImageError(f"input not found: {path}")
    if path.is_dir():
        return read_dicom_series(path, series_uid, on_event)
    if path.name.lower().endswith(".seg.nrrd"):
        raise InputImageError(
            f"{path} is a Slicer segmentation (.seg.nrrd), not an image; pass the scan it was made on"
        )
    nifti = check_nifti_file(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    with itk_warnings_captured() as itk_warnings:
        image = _read_file(path)
    for message in itk_warnings:
        warn(on_event, f"reading {path}: {message}", logger)
    if nifti is not None:
        geometry = qform_sform_warning(path, nifti, image)
        if geometry is not None:
            warn(on_event, geometry, logger)
    return image


def _read_file(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        if "spacing" in str(error).lower():
            raise InputImageError(
                f"{path} has zero or invalid voxel spacing in its header; fix the header"
            ) from error
        raise InputImageError(f"cannot read {path}: not a readable {SUPPORTED} (file damaged?)") from error
    if is_dicom_file(path):
        modality = reader.GetMetaData("0008|0060").strip() if reader.HasMetaDataKey("0008|0060") else ""
        if modality.upper() in NON_IMAGE_MODALITIES:
            raise InputImageError(
                f"{path} is a DICOM {modality} object, not an image; pass the image series folder"
            )
        if image.GetDimension() == 2 or min(image.GetSize()) < 2:
            raise InputImageError(
                f"{path} is a single DICOM slice; pass the folder that holds the whole series"
            )
    return image


def _split_channels(image: sitk.Image, num_channels: int) -> list[sitk.Image] | None:
    """The channels of a 4D image (last axis) or vector image; None unless it holds ``num_channels``."""
    if image.GetNumberOfComponentsPerPixel() == num_channels and image.GetDimension() == 3:
        return [sitk.VectorIndexSelectionCast(image, c) for c in range(num_channels)]
    if image.GetDimension() == 4 and image.GetSize()[3] == num_channels:
        return [image[:, :, :, c] for c in range(num_channels)]
    return None


def _volume_count(image: sitk.Image) -> str:
    """How many volumes ``image`` holds, in words ("3 volumes (a 4D image)", "a single volume")."""
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        return f"{components} values per voxel (a vector image)"
    if image.GetDimension() == 4 and image.GetSize()[3] > 1:
        return f"{image.GetSize()[3]} volumes (a 4D image)"
    return "a single volume"


def check_same_grid(images: Sequence[sitk.Image], names: Sequence[str] | None = None) -> None:
    """Raise InputImageError naming the first channel whose size, spacing, origin or direction differs.

    Tolerances: spacing 1e-4 relative, origin 0.1 voxel, direction cosines 1e-4.
    """
    if names is None:
        names = [f"input {n + 1}" for n in range(len(images))]
    first = images[0]
    spacing0 = np.array(first.GetSpacing())
    for image, name in zip(images[1:], names[1:], strict=True):
        problem = None
        if image.GetSize() != first.GetSize():
            problem = f"size {_fmt_size(image.GetSize())} vs {_fmt_size(first.GetSize())}"
        elif np.abs(np.array(image.GetSpacing()) - spacing0).max() > 1e-4 * spacing0.max():
            problem = f"spacing {_fmt_vec(image.GetSpacing())} vs {_fmt_vec(first.GetSpacing())} mm"
        elif (
            np.abs(np.array(image.GetOrigin()) - first.GetOrigin()).max()
            > _GRID_TOLERANCE_VOXELS * spacing0.min()
        ):
            problem = f"origin {_fmt_vec(image.GetOrigin())} vs {_fmt_vec(first.GetOrigin())} mm"
        elif np.abs(np.array(image.GetDirection()) - first.GetDirection()).max() > _DIRECTION_TOLERANCE:
            problem = f"direction {_fmt_vec(image.GetDirection())} vs {_fmt_vec(first.GetDirection())}"
        if problem:
            raise InputImageError(
                f"input {name} is not on the grid of {names[0]}: {problem}; resample it onto the first input"
            )


def _fmt_size(size: Sequence[int]) -> str:
    return "x".join(str(s) for s in size)


def _fmt_vec(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
