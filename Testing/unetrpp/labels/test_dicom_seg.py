"""``unetrpp segment DICOM_FOLDER out.seg.nrrd --dicom-seg out.dcm`` on real CT series, read back with
pydicom (frame by frame, through each frame's source reference), highdicom and dcmqi's
``segimage2itkimage``: masks equal the ``.seg.nrrd`` on every source frame, codes and colours are the
terminology table's, references and UIDs are the source's. Refusals are one line and lose nothing;
``unetrpp evaluate`` reads DICOM SEG files (ours and dcmqi's) on either side."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import unetrpp
from tiny_models import ct_plans, save_tiny_synapse
from unetrpp.cli import main
from unetrpp.errors import DicomSegError
from unetrpp.labels.dicom_seg import find_dicom_source, write_dicom_seg
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.labels.terminology import structures_for
from unetrpp.pipeline.dicom import read_dicom_series

REAL = Path(__file__).resolve().parents[2] / "data" / "real_inputs"
CT3 = REAL / "dcmqi_ct3slice" / "dicom"
# Its de-identification blanked the Study, Series and SOP Instance UIDs: no SEG can reference it.
BLANKED_UIDS = REAL / "totalseg_example_ct" / "example_ct_dicom"

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny random UNETR++ at 6 mm in-plane: a 512 x 512 CT takes a few tiles, yet labels many organs."""
    return save_tiny_synapse(tmp_path_factory.mktemp("model") / "tiny.unetrpp", ct_plans((3.0, 6.0, 6.0)))


def _segment(model_file: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "segment", str(folder), str(out / "out.seg.nrrd"), "--dicom-seg", str(out / "out.dcm"),
        "--model", str(model_file), "--progress", "json", "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(model_file, tmp_path_factory) -> dict:
    """One real run on the real 3-slice CT: its folder, outputs and JSON events."""
    out = tmp_path_factory.mktemp("ct3slice")
    stdout = io.StringIO()  # capsys is function-scoped; the run is shared by the module
    with contextlib.redirect_stdout(stdout):
        status = main(_segment(model_file, CT3, out))
    assert status == 0
    events = [json.loads(line) for line in stdout.getvalue().splitlines()]
    return {"folder": CT3, "out": out, "events": events}


def _source(folder: Path) -> dict[str, pydicom.Dataset]:
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]
    return {str(d.SOPInstanceUID): d for d in datasets}


def _seg_nrrd(run: dict) -> tuple[sitk.Image, np.ndarray, dict[str, int]]:
    image, segments = read_seg_nrrd(run["out"] / "out.seg.nrrd")
    return image, sitk.GetArrayFromImage(image), {s.name: s.label_value for s in segments}


def _slice_of(uid: str, folder: Path, image: sitk.Image) -> int:
    """The label-map slice a source instance lies on, from its own Image Position (Patient)."""
    position = [float(v) for v in _source(folder)[uid].ImagePositionPatient]
    index = image.TransformPhysicalPointToContinuousIndex(position)
    assert np.allclose(index[:2], 0, atol=1e-3)
    return round(index[2])


def test_the_seg_references_the_source_and_copies_patient_and_study(run):
    seg = pydicom.dcmread(run["out"] / "out.dcm")
    source = _source(run["folder"])
    first = next(iter(source.values()))
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyID"):
        assert seg.get(keyword) == first.get(keyword), keyword
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID and seg.SOPInstanceUID not in source
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} <= set(source)
    event = run["events"][-1]
    assert event["event"] == "result" and event["dicom_seg"] == str(run["out"] / "out.dcm")


def test_frames_hold_the_seg_nrrd_masks_on_their_source_frames_and_only_non_empty_ones(run):
    seg = pydicom.dcmread(run["out"] / "out.dcm")
    image, labels, values = _seg_nrrd(run)
    numbers = {int(s.SegmentNumber): values[s.SegmentLabel] for s in seg.SegmentSequence}
    present = {v for v in values.values() if np.any(labels == v)}
    assert set(numbers.values()) == present and len(present) >= 2
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    seen = set()
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = _slice_of(uid, run["folder"], image)
        np.testing.assert_array_equal(frame.astype(bool), labels[k] == numbers[number])
        seen.add((number, k))
    expected = {(n, k) for n, v in numbers.items() for k in range(labels.shape[0]) if np.any(labels[k] == v)}
    assert seen == expected and len(frames) == len(expected)


def test_segments_carry_the_table_codes_colour_and_algorithm(run):
    seg = hd.seg.segread(run["out"] / "out.dcm")
    table = {s.name: s for s in structures_for("synapse")}
    lateral = 0
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        structure = table[description.SegmentLabel]
        category = description.SegmentedPropertyCategoryCodeSequence[0]
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", structure.category.value)
        assert (type_item.CodingSchemeDesignator, type_item.CodeValue) == ("SCT", structure.type.value)
        modifiers = type_item.get("SegmentedPropertyTypeModifierCodeSequence", [])
        assert [m.CodeValue for m in modifiers] == ([structure.modifier.value] if structure.modifier else [])
        lateral += bool(modifiers)
        assert description.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "tiny-synapse" and algorithm.AlgorithmVersion == unetrpp.__version__
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        rgb = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.subtract(rgb, structure.color_rgb)).max() <= 1
    assert lateral >= 1  # the seeded network labels a kidney: the laterality path is exercised


def test_dcmqi_reads_the_same_masks_codes_and_colours(run, tmp_path):
    image, labels, values = _seg_nrrd(run)
    out = tmp_path / "dcmqi"
    out.mkdir()
    command = [
        "segimage2itkimage",
        "--inputDICOM",
        str(run["out"] / "out.dcm"),
        "--outputDirectory",
        str(out),
    ]
    done = subprocess.run([*command, "-t", "nrrd"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "meta.json").read_text())
    table = {s.name: s for s in structures_for("synapse")}
    attributes = [a for group in meta["segmentAttributes"] for a in group]
    assert {a["SegmentLabel"] for a in attributes} == {n for n, v in values.items() if np.any(labels == v)}
    for attribute in attributes:
        structure = table[attribute["SegmentLabel"]]
        assert attribute["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == structure.type.value
        modifier = attribute.get("SegmentedPropertyTypeModifierCodeSequence", {}).get("CodeValue")
        assert modifier == (structure.modifier.value if structure.modifier else None)
        assert np.abs(np.subtract(attribute["recommendedDisplayRGBValue"], structure.color_rgb)).max() <= 1
        mask = sitk.ReadImage(str(out / f"{attribute['labelID']}.nrrd"))
        on_grid = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(on_grid) > 0, labels == values[attribute["SegmentLabel"]]
        )


def test_evaluate_pairs_our_seg_with_the_seg_nrrd_by_name(run, tmp_path):
    report = tmp_path / "scores.json"
    assert (
        main(
            ["evaluate", str(run["out"] / "out.dcm"), str(run["out"] / "out.seg.nrrd"), "--json", str(report)]
        )
        == 0
    )
    _, labels, values = _seg_nrrd(run)
    scores = {s["label_value"]: s for s in json.loads(report.read_text())["cases"][0]["scores"]}
    present = {v for v in values.values() if np.any(labels == v)}
    assert {v for v, s in scores.items() if s["dice"] is not None} == present
    assert all(scores[v]["dice"] == 1.0 and scores[v]["hd95_mm"] == 0.0 for v in present)


def test_evaluate_reads_dcmqi_liver_seg_as_truth_and_as_prediction(tmp_path):
    liver_dcm = REAL / "dcmqi_ct3slice" / "liver.dcm"
    liver_nrrd = REAL / "dcmqi_ct3slice" / "liver_seg.nrrd"  # the label map dcmqi made liver.dcm from
    for prediction, truth in ((liver_nrrd, liver_dcm), (liver_dcm, liver_nrrd)):
        report = tmp_path / f"{prediction.stem}.json"
        assert main(["evaluate", str(prediction), str(truth), "--json", str(report), "--no-hd95"]) == 0
        (score,) = json.loads(report.read_text())["cases"][0]["scores"]
        truth_voxels = int(np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(liver_nrrd)))))
        assert score["dice"] == 1.0 and score["truth_voxels"] == truth_voxels


def _refused(argv: list[str], capsys) -> dict:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert events[-1]["event"] == "error"
    return {"events": events, "error": events[-1]}


def test_a_non_dicom_input_is_refused_before_any_work(model_file, tmp_path, capsys):
    image = tmp_path / "ct.nii.gz"
    sitk.WriteImage(read_dicom_series(CT3), str(image))
    refused = _refused(_segment(model_file, image, tmp_path), capsys)
    assert "--dicom-seg needs a DICOM folder" in refused["error"]["message"]
    assert [e["event"] for e in refused["events"]] == ["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_an_existing_seg_is_kept_without_overwrite_and_replaced_with_it(model_file, tmp_path, capsys):
    (tmp_path / "out.dcm").write_bytes(b"mine")
    refused = _refused(_segment(model_file, CT3, tmp_path), capsys)
    assert refused["error"]["error_type"] == "OutputExistsError" and "out.dcm" in refused["error"]["message"]
    assert (tmp_path / "out.dcm").read_bytes() == b"mine" and not (tmp_path / "out.seg.nrrd").exists()
    assert main(_segment(model_file, CT3, tmp_path, "--overwrite")) == 0
    assert pydicom.dcmread(tmp_path / "out.dcm").SOPClassUID == SEGMENTATION_STORAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm", "out.seg.nrrd"]  # no temporary left


def test_a_gantry_tilted_series_is_refused_in_one_line_before_inference(model_file, tmp_path, capsys):
    refused = _refused(_segment(model_file, REAL / "dcmqa_ct_gantry_tilt_ge", tmp_path), capsys)
    assert "gantry-tilted" in refused["error"]["message"]
    assert not [e for e in refused["events"] if e["event"] == "progress"]
    assert list(tmp_path.iterdir()) == []


def test_a_series_that_cannot_carry_a_seg_still_gets_its_seg_nrrd_and_a_one_line_refusal(
    model_file, tmp_path, capsys
):
    refused = _refused(_segment(model_file, BLANKED_UIDS, tmp_path), capsys)
    kinds = [e["event"] for e in refused["events"]]
    warning = next(e for e in refused["events"] if e["event"] == "warning")
    assert "lack a SOPClassUID" in warning["message"] and kinds.index("warning") < kinds.index("progress")
    message = refused["error"]["message"]
    assert refused["error"]["error_type"] == "DicomSegError"
    assert "lack a SOPClassUID" in message and "out.seg.nrrd only" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.seg.nrrd"]
    read_seg_nrrd(tmp_path / "out.seg.nrrd")


def test_a_label_map_off_the_source_frames_is_refused(tmp_path):
    image = read_dicom_series(CT3)
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    labels[10:20, 10:20, 1] = 6
    labels.SetOrigin(np.add(image.GetOrigin(), (0.0, 0.0, 5.0)).tolist())  # slices 5 mm off their frames
    with pytest.raises(DicomSegError, match="does not lie on source image"):
        write_dicom_seg(
            labels, structures_for("synapse"), find_dicom_source(CT3), tmp_path / "o.dcm", model_name="m"
        )
    assert list(tmp_path.iterdir()) == []


def test_without_highdicom_the_option_fails_before_any_work_naming_the_extra(model_file, tmp_path):
    program = (
        "import sys; sys.modules['highdicom'] = None\n"  # how Python reports a package that is not there
        "from unetrpp.cli import main\n"
        f"sys.exit(main({_segment(model_file, CT3, tmp_path)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert 'pip install "unetrpp[dicom]"' in line
    assert [json.loads(x)["event"] for x in done.stdout.splitlines()] == ["error"]
    assert list(tmp_path.iterdir()) == []
