"""Evaluation of files and folders: label maps and .seg.nrrd, reports, clear errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.cli import main
from unetrpp.errors import InputImageError, OutputExistsError
from unetrpp.evaluate.report import evaluate
from unetrpp.labels.seg_nrrd import write_seg_nrrd
from unetrpp.labels.terminology import structures_from_labels

SPACING_XYZ = (0.8, 0.8, 2.5)


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # stored RAS
    return image


def _pair(shift: int) -> tuple[sitk.Image, sitk.Image]:
    """Truth: label 6 block and label 1 block; prediction: label 6 shifted along x, label 1 exact."""
    truth = np.zeros((12, 30, 30), dtype=np.uint8)
    truth[2:8, 5:15, 5:15] = 6
    truth[3:6, 20:25, 20:25] = 1
    prediction = truth.copy()
    prediction[prediction == 6] = 0
    prediction[2:8, 5:15, 5 + shift : 15 + shift] = 6
    return _image(prediction), _image(truth)


def test_label_map_files_give_the_expected_scores_and_reports(tmp_path):
    prediction, truth = _pair(2)
    sitk.WriteImage(prediction, str(tmp_path / "pred.nii.gz"))
    sitk.WriteImage(truth, str(tmp_path / "truth.nrrd"))
    report = evaluate(tmp_path / "pred.nii.gz", tmp_path / "truth.nrrd")
    scores = {s.label_value: s for s in report.cases[0].scores}
    assert scores[6].dice == pytest.approx(8 / 10)  # 10 voxels wide, shifted 2: overlap 8/10
    assert scores[6].hd95_mm == pytest.approx(2 * SPACING_XYZ[0])
    assert scores[1].dice == 1.0
    assert report.mean_dice == pytest.approx((0.8 + 1.0) / 2)

    report.write(tmp_path / "scores.csv")
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert rows[-1]["structure"] == "all structures"
    assert float(rows[-1]["dice"]) == pytest.approx(0.9)
    report.write(tmp_path / "scores.json")
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["mean_dice"] == pytest.approx(0.9)
    assert "| **mean** | **90.00** |" in report.to_markdown()
    with pytest.raises(OutputExistsError):
        report.write(tmp_path / "scores.csv")


def test_seg_nrrd_files_are_named_by_their_segments(tmp_path):
    prediction, truth = _pair(0)
    structures = structures_from_labels("btcv", [(1, "spleen"), (6, "liver")])
    write_seg_nrrd(prediction, structures, tmp_path / "case.seg.nrrd")
    write_seg_nrrd(truth, structures, tmp_path / "truth.seg.nrrd")
    report = evaluate(tmp_path / "case.seg.nrrd", tmp_path / "truth.seg.nrrd")
    assert [(s.name, s.dice) for s in report.cases[0].scores] == [("spleen", 1.0), ("liver", 1.0)]


def test_folders_pair_cases_by_name_and_missing_truth_is_an_error(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for name, shift in (("case_a", 0), ("case_b", 5)):
        prediction, truth = _pair(shift)
        sitk.WriteImage(prediction, str(tmp_path / "pred" / f"{name}.nii.gz"))
        sitk.WriteImage(truth, str(tmp_path / "gt" / f"{name}.nrrd"))
    report = evaluate(tmp_path / "pred", tmp_path / "gt", with_hd95=False)
    assert [c.name for c in report.cases] == ["case_a", "case_b"]
    liver = {c.name: c.scores[1].dice for c in report.cases}
    assert liver == {"case_a": 1.0, "case_b": pytest.approx(0.5)}
    assert math.isnan(report.cases[0].scores[0].hd95_mm)  # not computed
    sitk.WriteImage(_pair(0)[0], str(tmp_path / "pred" / "case_c.nii.gz"))
    with pytest.raises(InputImageError, match="case_c"):
        evaluate(tmp_path / "pred", tmp_path / "gt")


def test_different_grids_are_refused_with_a_clear_message(tmp_path):
    prediction, truth = _pair(0)
    prediction.SetSpacing((1.0, 1.0, 2.5))
    sitk.WriteImage(prediction, str(tmp_path / "pred.nii.gz"))
    sitk.WriteImage(truth, str(tmp_path / "truth.nii.gz"))
    with pytest.raises(InputImageError, match="different voxel grids"):
        evaluate(tmp_path / "pred.nii.gz", tmp_path / "truth.nii.gz")


def test_cli_prints_the_table_and_writes_files(tmp_path, capsys):
    prediction, truth = _pair(2)
    sitk.WriteImage(prediction, str(tmp_path / "pred.nii.gz"))
    sitk.WriteImage(truth, str(tmp_path / "truth.nii.gz"))
    code = main(
        ["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "truth.nii.gz"), "--label-set", "btcv"]
        + ["--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| liver (6) | 80.00 | 1.60 |" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in data["structures"]][:2] == ["spleen", "right kidney"]
    assert (tmp_path / "r.md").read_text().startswith("| structure |")
    assert main(["evaluate", str(tmp_path / "missing.nii.gz"), str(tmp_path / "truth.nii.gz")]) == 2


def test_a_prediction_cropped_to_its_segments_is_padded_back_onto_the_truth_grid(tmp_path):
    prediction, truth = _pair(0)
    # Slicer may save a segmentation cropped to its segments: same spacing and axes, whole-voxel offset.
    cropped = sitk.RegionOfInterest(prediction, size=[26, 26, 10], index=[3, 3, 1])
    sitk.WriteImage(cropped, str(tmp_path / "pred.nrrd"))
    sitk.WriteImage(truth, str(tmp_path / "truth.nrrd"))
    report = evaluate(tmp_path / "pred.nrrd", tmp_path / "truth.nrrd")
    assert [s.dice for s in report.cases[0].scores] == [1.0, 1.0]
    shifted = sitk.RegionOfInterest(prediction, size=[26, 26, 10], index=[3, 3, 1])
    shifted.SetOrigin([o + 0.3 for o in shifted.GetOrigin()])  # not on the truth's voxel lattice
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nrrd"))
    with pytest.raises(InputImageError, match="different voxel grids"):
        evaluate(tmp_path / "shifted.nrrd", tmp_path / "truth.nrrd")
