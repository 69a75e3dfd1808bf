"""Reading volumes: every supported format round-trips, DICOM series are chosen and checked, bad input fails
with one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.errors import InputImageError
from unetrpp.pipeline.io import check_same_grid, read_image, read_inputs, validate_image
from vendored_data import data_path


def _volume(shape_zyx=(6, 7, 8), spacing=(0.8, 0.9, 2.5), origin=(-10.0, 5.0, 30.0), dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-100, 1000, shape_zyx).astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    return image


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _write_dicom_series(
    folder: Path,
    series_uid: str,
    num_slices: int,
    *,
    positions_mm=None,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    modality="CT",
    prefix="s",
) -> None:
    """Write a real (minimal) DICOM series, one file per slice, with SimpleITK's GDCM writer."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(series_uid) + num_slices)
    if positions_mm is None:
        positions_mm = [(0.0, 0.0, 2.0 * k) for k in range(num_slices)]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, position in enumerate(positions_mm):
        slice_image = sitk.GetImageFromArray(rng.integers(0, 1000, (1, 16, 16)).astype(np.int16))
        slice_image.SetSpacing((0.7, 0.7, 2.0))
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
            "0018|0050": "2.0",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(slice_image)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"], ids=lambda s: s)
def test_file_formats_round_trip_voxels_and_geometry(tmp_path, suffix):
    image = _volume()
    path = _write(image, tmp_path / f"volume{suffix}")
    read = read_image(path)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_dicom_folder_picks_the_series_with_most_slices(tmp_path):
    _write_dicom_series(tmp_path, "1.2.3.4.10", 5, prefix="a")
    _write_dicom_series(tmp_path, "1.2.3.4.20", 3, prefix="b")
    image = read_image(tmp_path)
    assert image.GetSize() == (16, 16, 5)
    np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.7, 2.0), rtol=1e-4)
    assert read_image(tmp_path, series_uid="1.2.3.4.20").GetSize() == (16, 16, 3)


def test_dicom_folder_with_two_equal_series_lists_them(tmp_path):
    _write_dicom_series(tmp_path, "1.2.3.4.10", 4, prefix="a")
    _write_dicom_series(tmp_path, "1.2.3.4.20", 4, prefix="b")
    with pytest.raises(InputImageError, match=r"several DICOM series of equal size.*--series") as error:
        read_image(tmp_path)
    assert "1.2.3.4.10 (4 slices)" in str(error.value) and "1.2.3.4.20 (4 slices)" in str(error.value)


def test_unknown_series_uid_lists_available_ones(tmp_path):
    _write_dicom_series(tmp_path, "1.2.3.4.10", 3)
    with pytest.raises(
        InputImageError, match=r"no DICOM series 9\.9\.9.*available: 1\.2\.3\.4\.10 \(3 slices\)"
    ):
        read_image(tmp_path, series_uid="9.9.9")


def test_dicom_seg_objects_are_not_image_candidates(tmp_path):
    _write_dicom_series(tmp_path, "1.2.3.4.10", 2, prefix="a")
    _write_dicom_series(tmp_path, "1.2.3.4.30", 3, prefix="seg", modality="SEG")
    assert read_image(tmp_path).GetSize() == (16, 16, 2)


def test_gantry_tilted_dicom_series_is_refused(tmp_path):
    # slices step 2 mm along z but also 0.7 mm along y: a sheared (tilted) stack
    positions = [(0.0, 0.7 * k, 2.0 * k) for k in range(4)]
    _write_dicom_series(tmp_path, "1.2.3.4.10", 4, positions_mm=positions)
    with pytest.raises(InputImageError, match="gantry-tilted"):
        read_image(tmp_path)


def test_dicom_series_with_missing_slice_is_refused(tmp_path):
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)]
    _write_dicom_series(tmp_path, "1.2.3.4.10", 5, positions_mm=positions)
    with pytest.raises(InputImageError, match="irregular slice spacing"):
        read_image(tmp_path)


def test_a_truncated_dicom_slice_is_named_not_reported_as_irregular_spacing(tmp_path):
    # GDCM leaves a file it cannot parse out of the series, so five slices of a real series with the
    # middle one cut in half read as a stack with a gap; the error must name the damaged file.
    folder = tmp_path / "series"
    folder.mkdir()
    for source in sorted(data_path("real_inputs", "totalseg_example_ct", "example_ct_dicom").iterdir())[:5]:
        shutil.copy(source, folder)
    damaged = sorted(folder.iterdir())[2]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(InputImageError) as refused:
        read_image(folder)
    message = str(refused.value)
    assert "\n" not in message and "irregular" not in message
    assert f"{damaged} is damaged" in message and "missing from the series" in message


def test_single_dicom_file_asks_for_the_folder(tmp_path):
    _write_dicom_series(tmp_path, "1.2.3.4.10", 3)
    with pytest.raises(InputImageError, match="single DICOM slice; pass the folder"):
        read_image(tmp_path / "s000.dcm")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputImageError, match="no DICOM image series found"):
        read_image(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(InputImageError, match="input not found"):
        read_image(tmp_path / "absent.nii.gz")


def test_corrupt_file(tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputImageError, match="cannot read .*garbage.nii.gz"):
        read_image(garbage)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"], ids=lambda s: s)
def test_truncated_files_are_refused_not_zero_filled(tmp_path, suffix):
    # ITK's NIfTI reader alone would fill the missing half with zeros and say nothing
    whole = _write(_volume(shape_zyx=(20, 30, 30)), tmp_path / f"whole{suffix}")
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputImageError, match=r"cannot read .*truncated"):
        read_image(truncated)


def test_2d_image_is_refused(tmp_path):
    path = _write(
        sitk.GetImageFromArray(np.arange(20, dtype=np.float32).reshape(4, 5)), tmp_path / "flat.nrrd"
    )
    with pytest.raises(InputImageError, match=r"2D image \(size 5x4\)"):
        read_image(path)


def test_single_slice_volume_is_refused_but_three_slices_work(tmp_path):
    one = _write(_volume(shape_zyx=(1, 7, 8)), tmp_path / "one.nrrd")
    with pytest.raises(InputImageError, match=r"single slice \(size 8x7x1\)"):
        read_image(one)
    assert read_image(_write(_volume(shape_zyx=(3, 7, 8)), tmp_path / "three.nrrd")).GetSize() == (8, 7, 3)


def test_4d_image_for_a_single_channel_model_is_refused(tmp_path):
    array = np.random.default_rng(0).random((2, 4, 5, 6)).astype(np.float32)
    path = _write(sitk.GetImageFromArray(array, isVector=False), tmp_path / "four.nii.gz")
    with pytest.raises(InputImageError, match=r"is 4D \(size 6x5x4x2\)"):
        read_inputs([path], 1)


def test_4d_file_with_another_frame_count_than_the_model_inputs_says_how_many_it_holds(tmp_path):
    array = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    path = _write(sitk.GetImageFromArray(array, isVector=False), tmp_path / "ch3_4d.nrrd")
    with pytest.raises(InputImageError) as refused:
        read_inputs([path], 2, channel_names=("T2", "ADC"), model_name="prostate")
    message = str(refused.value)
    assert "\n" not in message and "single volume" not in message
    assert message.startswith("model prostate needs 2 inputs (T2, ADC), got 1:")
    assert f"{path} holds 3 volumes (a 4D image)" in message and "one file per input" in message


def test_vector_image_is_refused(tmp_path):
    rgb = sitk.GetImageFromArray(
        np.ones((4, 5, 6, 3), dtype=np.uint8) * np.arange(3, dtype=np.uint8), isVector=True
    )
    path = _write(rgb, tmp_path / "rgb.nrrd")
    with pytest.raises(InputImageError, match="3 values per voxel"):
        read_image(path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_voxels_are_refused(tmp_path, bad_value):
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    array[1, 2, 3] = bad_value
    array[2, 2, 3] = bad_value
    path = _write(sitk.GetImageFromArray(array), tmp_path / "bad.nrrd")
    with pytest.raises(InputImageError, match="has 2 NaN or infinite voxels"):
        read_image(path)


@pytest.mark.parametrize(
    "spacing", [(100.0, 1.0, 1.0), (1e-4, 1.0, 1.0)], ids=["absurd-100mm", "tiny-1e-4mm"]
)
def test_absurd_spacing_is_refused(tmp_path, spacing):
    image = _volume()
    image.SetSpacing(spacing)
    with pytest.raises(InputImageError, match="voxel spacing .* must lie between 0.001 and 50 mm"):
        read_image(_write(image, tmp_path / "spacing.nrrd"))


def test_zero_spacing_in_header_is_refused(tmp_path):
    (tmp_path / "zero.raw").write_bytes(np.arange(64, dtype=np.float32).tobytes())
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 0 0 0\n"
    (tmp_path / "zero.mhd").write_text(header + "ElementType = MET_FLOAT\nElementDataFile = zero.raw\n")
    with pytest.raises(InputImageError, match="zero or invalid voxel spacing"):
        read_image(tmp_path / "zero.mhd")


@pytest.mark.parametrize("value", [0, 7], ids=["all-zero", "constant"])
def test_empty_volume_is_refused(tmp_path, value):
    path = _write(sitk.GetImageFromArray(np.full((4, 5, 6), value, dtype=np.int16)), tmp_path / "empty.nrrd")
    with pytest.raises(InputImageError, match=f"empty: every voxel has the value {value}"):
        read_image(path)


def test_sheared_direction_is_refused():
    image = _volume()
    image.SetDirection((1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with pytest.raises(InputImageError, match="non-orthonormal direction"):
        validate_image(image, "sheared")


def test_wrong_number_of_inputs_names_the_model_and_channels(tmp_path):
    path = _write(_volume(), tmp_path / "flair.nii.gz")
    with pytest.raises(InputImageError, match=r"model tumor needs 4 inputs \(FLAIR, T1w, T1gd, T2w\), got 1"):
        read_inputs([path], 4, channel_names=("FLAIR", "T1w", "T1gd", "T2w"), model_name="tumor")
    with pytest.raises(InputImageError, match=r"needs 1 input, got 2"):
        read_inputs([path, path], 1)


def test_one_4d_file_with_as_many_channels_is_split_in_order(tmp_path):
    array = np.random.default_rng(1).random((4, 5, 6, 7)).astype(np.float32)  # (t, z, y, x)
    path = _write(sitk.GetImageFromArray(array, isVector=False), tmp_path / "brats.nii.gz")
    channels = read_inputs(path, 4)
    assert len(channels) == 4
    for c, channel in enumerate(channels):
        assert channel.GetDimension() == 3
        np.testing.assert_array_equal(sitk.GetArrayFromImage(channel), array[c])


def test_channels_must_share_one_grid(tmp_path):
    first = _write(_volume(seed=1), tmp_path / "a.nii.gz")
    shifted = _volume(seed=2)
    shifted.SetOrigin((-10.0, 5.0, 35.0))
    with pytest.raises(InputImageError, match=r"b.nii.gz is not on the grid of .*a.nii.gz: origin"):
        read_inputs([first, _write(shifted, tmp_path / "b.nii.gz")], 2)
    resized = _write(_volume(shape_zyx=(6, 7, 9), seed=3), tmp_path / "c.nii.gz")
    with pytest.raises(InputImageError, match="size 9x7x6 vs 8x7x6"):
        read_inputs([first, resized], 2)
    respaced = _volume(seed=4)
    respaced.SetSpacing((0.8, 0.9, 3.0))
    with pytest.raises(InputImageError, match="spacing"):
        read_inputs([first, _write(respaced, tmp_path / "d.nii.gz")], 2)
    same_grid = read_inputs([first, _write(_volume(seed=5), tmp_path / "e.nii.gz")], 2)
    assert [image.GetSize() for image in same_grid] == [(8, 7, 6), (8, 7, 6)]


def test_check_same_grid_on_images_in_memory_names_the_direction_mismatch():
    first, second = _volume(seed=1), _volume(seed=2)
    second.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    with pytest.raises(InputImageError, match="input 2 is not on the grid of input 1: direction"):
        check_same_grid([first, second])
    check_same_grid([first, _volume(seed=3)])  # same grid: no error
