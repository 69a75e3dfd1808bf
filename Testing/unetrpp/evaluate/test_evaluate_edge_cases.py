"""``unetrpp evaluate`` refuses what would give a silently wrong report (review F-28): an image given
as a segmentation, and a folder holding two files of one case."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.cli import main
from unetrpp.errors import InputImageError
from unetrpp.evaluate.report import evaluate
from unetrpp.pipeline.io import read_image
from vendored_data import data_path


def _label_map() -> sitk.Image:
    array = np.zeros((6, 20, 20), dtype=np.uint8)
    array[1:5, 4:12, 4:12] = 1
    array[2:4, 14:18, 14:18] = 2
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    return image


def test_a_real_ct_given_as_the_truth_is_refused_in_one_line(tmp_path, capsys):
    ct = read_image(data_path("real_inputs", "dcmqi_ct3slice/dicom"))
    lowest = float(sitk.GetArrayViewFromImage(ct).min())
    assert lowest < 0  # air in HU: what a label map never holds
    sitk.WriteImage(ct, str(tmp_path / "ct.nrrd"))
    liver = data_path("real_inputs", "dcmqi_ct3slice/liver_seg.nrrd")
    status = main(["evaluate", str(liver), str(tmp_path / "ct.nrrd"), "--no-hd95"])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.count("\n") == 1
    assert "ct.nrrd is not a label map" in captured.err and f"down to {lowest:g}" in captured.err


def test_a_float_image_with_fractional_values_is_refused(tmp_path):
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(_label_map(), sitk.sitkFloat32), 1.0)
    sitk.WriteImage(smooth, str(tmp_path / "truth.nii.gz"))
    sitk.WriteImage(_label_map(), str(tmp_path / "prediction.nii.gz"))
    message = r"truth\.nii\.gz is not a label map: it holds non-whole 32-bit float"
    with pytest.raises(InputImageError, match=message):
        evaluate(tmp_path / "prediction.nii.gz", tmp_path / "truth.nii.gz", with_hd95=False)


def test_a_float_label_map_with_whole_values_is_still_scored(tmp_path):
    sitk.WriteImage(sitk.Cast(_label_map(), sitk.sitkFloat32), str(tmp_path / "truth.nii.gz"))
    sitk.WriteImage(_label_map(), str(tmp_path / "prediction.nii.gz"))
    report = evaluate(tmp_path / "prediction.nii.gz", tmp_path / "truth.nii.gz", with_hd95=False)
    assert [(s.label_value, s.dice) for s in report.cases[0].scores] == [(1, 1.0), (2, 1.0)]  # identical maps


@pytest.mark.parametrize("side", ["prediction", "truth"])
def test_a_folder_with_two_files_of_one_case_is_refused(tmp_path, side):
    for folder in ("prediction", "truth"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(_label_map(), str(tmp_path / folder / "case1.nii.gz"))
    sitk.WriteImage(_label_map(), str(tmp_path / side / "case1.nrrd"))
    with pytest.raises(InputImageError, match=r"two files for case 'case1' \(case1\.nii\.gz, case1\.nrrd\)"):
        evaluate(tmp_path / "prediction", tmp_path / "truth", with_hd95=False)
