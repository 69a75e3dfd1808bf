"""Bring a volume into a model's axis orientation and put a label map back on the input grid exactly.

Orientation codes are SimpleITK's DICOMOrient codes: three letters, each naming the patient direction
towards which the i, j, k voxel index increases (an identity direction matrix is ``"LPS"``; a usual
RAS-ordered NIfTI is ``"RAS"``). nnU-Net v1 networks only ever saw voxel arrays, so orientation is a
permutation and flip of the array axes: no voxel is interpolated on the way in or out.

Oblique images go to the closest orientation code. Their direction cosines stay oblique (only
permuted and sign-flipped), so every voxel keeps its physical position and the way back is exact.

``"native"`` (:data:`NATIVE_ORIENTATION`) is no reorientation at all: the network gets the voxel order
as stored, as nnU-Net v1 does. For models whose training data has no meaningful anatomical orientation
(ACDC: oblique short-axis stacks under a fake header), where any canonical code could move the
acquisition's slice axis into the network's in-plane axes.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import UnetrppError
from unetrpp.models.cards import NATIVE_ORIENTATION

__all__ = [
    "NATIVE_ORIENTATION",
    "check_orientation_code",
    "orientation_code",
    "reorient",
    "restore_orientation",
]

_AXIS_LETTERS = ("LR", "PA", "IS")


def orientation_code(image: sitk.Image) -> str:
    """The closest 3-letter orientation code of ``image`` (``"LPS"`` for an identity direction)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, orientation: str) -> sitk.Image:
    """Permute and flip the axes of ``image`` so that its orientation code is ``orientation``.

    Args:
        image: 3D image, any direction (oblique ones go to the closest code).
        orientation: target code such as ``"RAS"`` or ``"LPS"`` (case-insensitive), or ``"native"``
            to keep the stored voxel order (the image itself is returned).

    Returns:
        A new image holding the same voxels at the same physical points; only the axis order and
        directions differ. Undo it for a label map with :func:`restore_orientation`.

    Raises:
        UnetrppError: ``orientation`` is not a valid code.
    """
    code = check_orientation_code(orientation)
    if code == NATIVE_ORIENTATION or orientation_code(image) == code:
        return image
    return sitk.DICOMOrient(image, code)


def restore_orientation(label_map: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Move a label map computed on a reoriented grid back onto ``reference``'s grid, voxel for voxel.

    ``label_map`` must lie on a grid that is an axis permutation/flip of ``reference``'s (as
    :func:`reorient` makes). Voxel values are moved by index, never interpolated.

    Returns:
        The label map with the size, origin, spacing and direction of ``reference`` (copied exactly).

    Raises:
        ValueError: ``label_map``'s grid is not a permutation/flip of ``reference``'s (a pipeline bug).
    """
    permutation, flips = _signed_permutation(label_map, reference)
    _check_same_points(label_map, reference, permutation, flips)
    array = sitk.GetArrayFromImage(label_map)  # (k, j, i)
    array = np.transpose(array, (2, 1, 0))  # label index order (i, j, k)
    array = np.flip(array, axis=tuple(a for a in range(3) if flips[a])) if any(flips) else array
    # label axis a becomes reference axis permutation[a]
    array = np.transpose(array, np.argsort(permutation))
    restored = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    restored.CopyInformation(reference)
    return restored


def check_orientation_code(orientation: str) -> str:
    """The upper-case code (or ``"native"``), or a one-line error when it is not one of L/R, P/A and I/S
    each."""
    if str(orientation).strip().lower() == NATIVE_ORIENTATION:
        return NATIVE_ORIENTATION
    code = str(orientation).strip().upper()
    axes = [next((n for n, pair in enumerate(_AXIS_LETTERS) if letter in pair), -1) for letter in code]
    if sorted(axes) == [0, 1, 2]:
        return code
    raise UnetrppError(
        f"orientation {orientation!r} is not a 3-letter code with one of L/R, one of P/A and one of I/S "
        f"(e.g. RAS or LPS), nor {NATIVE_ORIENTATION!r} (the stored voxel order)"
    )


def _signed_permutation(label_map: sitk.Image, reference: sitk.Image) -> tuple[list[int], list[bool]]:
    """For each label-map axis a: the reference axis it runs along and whether it runs backwards.

    The relation is solved (inverse, not transpose), so it is an exact signed permutation also for
    direction cosines that are orthonormal only to the 1e-3 that input validation allows.
    """
    label_direction = np.array(label_map.GetDirection(), dtype=float).reshape(3, 3)
    reference_direction = np.array(reference.GetDirection(), dtype=float).reshape(3, 3)
    # column a: label axis a in reference axes
    relation = np.linalg.solve(reference_direction, label_direction)
    permutation = [int(np.argmax(np.abs(relation[:, a]))) for a in range(3)]
    flips = [bool(relation[permutation[a], a] < 0) for a in range(3)]
    exact = np.zeros((3, 3))
    for a in range(3):
        exact[permutation[a], a] = -1.0 if flips[a] else 1.0
    if sorted(permutation) != [0, 1, 2] or np.abs(relation - exact).max() > 1e-4:
        raise ValueError("label map directions are not an axis permutation/flip of the reference's")
    return permutation, flips


def _check_same_points(
    label_map: sitk.Image, reference: sitk.Image, permutation: list[int], flips: list[bool]
) -> None:
    ref_size, ref_spacing = reference.GetSize(), reference.GetSpacing()
    size_ok = all(label_map.GetSize()[a] == ref_size[permutation[a]] for a in range(3))
    spacing_ok = all(
        abs(label_map.GetSpacing()[a] - ref_spacing[permutation[a]]) <= 1e-5 * ref_spacing[permutation[a]]
        for a in range(3)
    )
    corner = [0, 0, 0]
    for a in range(3):
        if flips[a]:
            corner[permutation[a]] = ref_size[permutation[a]] - 1
    expected_origin = np.array(reference.TransformIndexToPhysicalPoint(corner))
    origin_ok = np.abs(expected_origin - label_map.GetOrigin()).max() <= 1e-3 * min(ref_spacing)
    if not (size_ok and spacing_ok and origin_ok):
        raise ValueError(
            f"label map grid (size {label_map.GetSize()}, spacing {label_map.GetSpacing()}, origin "
            f"{label_map.GetOrigin()}) is not a reorientation of the reference grid (size {ref_size})"
        )
