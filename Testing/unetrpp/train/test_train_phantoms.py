"""Phantoms: reproducible, anatomically sided in patient coordinates, CT-like, on random grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.train.phantoms import PHANTOM_LABELS, PhantomOptions, generate_phantom

# Coarse grids keep these tests fast; the anatomy does not depend on the spacing.
COARSE = PhantomOptions(spacing_xy_mm=(2.0, 2.5), spacing_z_mm=(3.0, 5.0))


def _centroids_lps(phantom) -> dict[int, np.ndarray]:
    """Physical (LPS) centroid of every label, whatever the storage orientation."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(phantom.label_map)
    return {value: np.array(stats.GetCentroid(value)) for value in stats.GetLabels()}


def test_same_seed_gives_the_same_phantom_and_other_seeds_differ():
    first, again = generate_phantom(3, COARSE), generate_phantom(3, COARSE)
    other = generate_phantom(4, COARSE)
    assert np.array_equal(sitk.GetArrayFromImage(first.image), sitk.GetArrayFromImage(again.image))
    assert np.array_equal(sitk.GetArrayFromImage(first.label_map), sitk.GetArrayFromImage(again.label_map))
    assert first.image.GetSpacing() == again.image.GetSpacing()
    assert first.image.GetSpacing() != other.image.GetSpacing()


@pytest.mark.parametrize("seed", [0, 1, 2, 5], ids=lambda s: f"seed{s}")
def test_organs_sit_on_the_anatomical_side_in_patient_coordinates(seed):
    phantom = generate_phantom(seed, COARSE)
    centre = _centroids_lps(phantom)
    assert set(centre) == {value for value, _ in PHANTOM_LABELS}
    body_x = np.mean([c[0] for c in centre.values()])
    # LPS: +x is the patient's left, +y posterior.
    assert centre[6][0] < body_x < centre[1][0]  # liver on the right, spleen on the left
    assert centre[2][0] < body_x < centre[3][0]  # right kidney right, left kidney left
    assert centre[9][0] < centre[8][0]  # inferior vena cava right of the aorta
    assert centre[2][1] > centre[6][1] and centre[3][1] > centre[7][1]  # kidneys behind liver, stomach
    assert abs(centre[8][0] - body_x) < 40  # aorta near the midline


def test_image_and_truth_share_one_grid_in_the_chosen_storage_orientation():
    phantom = generate_phantom(7, COARSE)
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(phantom.image, getter)() == getattr(phantom.label_map, getter)()
    reoriented = sitk.DICOMOrient(phantom.image, phantom.orientation)
    assert reoriented.GetDirection() == phantom.image.GetDirection()
    orientations = {generate_phantom(seed, COARSE).orientation for seed in range(8)}
    assert len(orientations) > 1


def test_intensities_look_like_ct():
    phantom = generate_phantom(11, COARSE)
    image = sitk.GetArrayFromImage(phantom.image)
    labels = sitk.GetArrayFromImage(phantom.label_map)
    assert image.dtype == np.int16
    assert image.min() == -1000  # air outside the body
    assert (image > 500).sum() > 0  # cortical bone
    fat = image[(labels == 0) & (image > -200) & (image < -50)]
    assert fat.size > 0
    # Organs are distinct on average but overlap with noise: liver brighter than gallbladder.
    assert image[labels == 6].mean() > image[labels == 4].mean() + 40


def test_spacing_follows_the_options():
    options = PhantomOptions(spacing_xy_mm=(0.7, 1.0), spacing_z_mm=(2.0, 5.0), scale=0.4)
    phantom = generate_phantom(2, options)
    spacing = sorted(phantom.image.GetSpacing())
    assert spacing[0] == pytest.approx(spacing[1])
    assert 0.7 <= spacing[0] <= 1.0
    assert 2.0 <= spacing[2] <= 5.0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="spacing_xy_mm"):
        PhantomOptions(spacing_xy_mm=(1.0, 0.5))
    with pytest.raises(ValueError, match="scale"):
        PhantomOptions(scale=5.0)
