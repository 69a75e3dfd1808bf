"""Reorientation is an exact, reversible permutation/flip: voxels keep their physical points both ways."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation
from unetrpp.errors import UnetrppError
from unetrpp.pipeline.geometry import orientation_code, reorient, restore_orientation

# direction matrices (columns = physical direction of the i, j, k axes, LPS world)
GEOMETRIES = {
    "axial-LPS": (np.eye(3), (0.8, 0.8, 2.5)),
    "axial-RAS": (np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 2.5)),
    "sagittal": (np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), (1.0, 1.0, 4.8)),
    "coronal": (np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]), (0.5, 0.5, 3.0)),
    "anisotropic-LAS": (np.diag([1.0, -1.0, 1.0]), (0.4, 0.6, 6.0)),
    "oblique": (Rotation.from_euler("xyz", [18.5, -7.0, 25.0], degrees=True).as_matrix(), (0.5, 0.7, 3.0)),
    "oblique-45deg": (Rotation.from_euler("z", 45.0, degrees=True).as_matrix(), (1.0, 1.0, 2.0)),
}


def _image(direction: np.ndarray, spacing, shape_zyx=(7, 9, 11), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(0, 200, shape_zyx).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((12.5, -30.25, 101.0))
    image.SetDirection(direction.flatten().tolist())
    return image


def _assert_same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


@pytest.mark.parametrize("target", ["RAS", "LPS", "PIR", "native"], ids=lambda t: t)
@pytest.mark.parametrize("name", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_reorient_then_restore_is_the_identity(name, target):
    direction, spacing = GEOMETRIES[name]
    image = _image(direction, spacing)
    reoriented = reorient(image, target)
    assert orientation_code(reoriented) == (orientation_code(image) if target == "native" else target)
    # a permutation/flip: the same voxel values, the same number of voxels, no interpolation
    assert sorted(sitk.GetArrayFromImage(reoriented).ravel()) == sorted(sitk.GetArrayFromImage(image).ravel())
    restored = restore_orientation(reoriented, image)
    _assert_same_grid(restored, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("target", ["RAS", "native"], ids=lambda t: t)
@pytest.mark.parametrize("name", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_labelled_cube_lands_on_the_same_physical_points(name, target):
    direction, spacing = GEOMETRIES[name]
    image = _image(direction, spacing)
    cube = np.zeros((7, 9, 11), dtype=np.uint8)
    cube[1:4, 2:6, 6:10] = 3  # an off-centre box, so any flip or swap would move it
    label_map = sitk.GetImageFromArray(cube)
    label_map.CopyInformation(image)

    reoriented = reorient(label_map, target)
    original_points = _labelled_points(label_map)
    reoriented_points = _labelled_points(reoriented)
    np.testing.assert_allclose(
        np.sort(reoriented_points, axis=0), np.sort(original_points, axis=0), atol=1e-6
    )

    restored = restore_orientation(reoriented, image)
    _assert_same_grid(restored, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), cube)


def _labelled_points(label_map: sitk.Image) -> np.ndarray:
    """Physical (LPS, mm) centres of every labelled voxel, sorted lexicographically."""
    indices_zyx = np.argwhere(sitk.GetArrayFromImage(label_map) > 0)
    points = np.array(
        [label_map.TransformIndexToPhysicalPoint(tuple(int(v) for v in idx[::-1])) for idx in indices_zyx]
    )
    return points[np.lexsort(points.T[::-1])]


def test_oblique_directions_keep_their_cosines():
    direction, spacing = GEOMETRIES["oblique"]
    reoriented = reorient(_image(direction, spacing), "RAS")
    new_direction = np.array(reoriented.GetDirection()).reshape(3, 3)
    # every new axis is +/- one of the old axes: same set of cosines, only permuted and sign-flipped
    relation = direction.T @ new_direction
    np.testing.assert_allclose(np.sort(np.abs(relation), axis=None), [0] * 6 + [1] * 3, atol=1e-12)


def test_image_already_in_the_target_orientation_is_unchanged():
    image = _image(*GEOMETRIES["axial-RAS"])
    assert reorient(image, "ras") is image


def test_restore_refuses_a_label_map_on_another_grid():
    image = _image(*GEOMETRIES["axial-LPS"])
    other = reorient(image, "RAS")
    other.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not a reorientation of the reference grid"):
        restore_orientation(other, image)
    rotated = _image(*GEOMETRIES["oblique"])
    with pytest.raises(ValueError, match="not an axis permutation"):
        restore_orientation(rotated, image)


def test_native_keeps_the_stored_voxel_order_of_an_oblique_stack():
    """The slice axis of an oblique short-axis stack (thick k) stays the array's first axis."""
    direction, spacing = GEOMETRIES["oblique"]
    image = _image(direction, (1.5, 1.5, 10.0))
    for code in ("native", "NATIVE", " Native "):
        kept = reorient(image, code)
        _assert_same_grid(kept, image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(kept), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("code", ["RAX", "RRS", "RA", "left", "nativ", "as-stored"], ids=lambda c: c)
def test_invalid_orientation_code(code):
    with pytest.raises(UnetrppError, match="is not a 3-letter code"):
        reorient(_image(*GEOMETRIES["axial-LPS"]), code)
