"""``unetrpp segment`` end to end: a synthetic CT and a tiny UNETR++ saved in this project's format
give a ``.seg.nrrd`` that the real Slicer core loads with the expected names and SNOMED CT codes;
``--progress json`` is parsed; every bad input exits 2 with one line and leaves no file behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_models import ct_plans, save_tiny_synapse
from unetrpp.cli import main
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.labels.terminology import structures_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_synapse(tmp_path_factory.mktemp("model") / "tiny.unetrpp", ct_plans((3.0, 1.5, 1.5)))


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _synthetic_ct(size_xyz=(48, 40, 14), spacing=(1.2, 1.3, 2.5)) -> sitk.Image:
    z, y, x = np.mgrid[: size_xyz[2], : size_xyz[1], : size_xyz[0]]
    body = ((x - 24) / 20) ** 2 + ((y - 20) / 16) ** 2 < 1
    organ = ((x - 16) / 7) ** 2 + ((y - 18) / 6) ** 2 + ((z - 7) / 4) ** 2 < 1
    array = np.where(body, 40, -1000) + np.where(organ, 60, 0)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, -25.0, 100.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # stored RAS, as many NIfTI files
    return image


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_segment_cli_writes_a_seg_nrrd_that_slicer_loads_with_names_and_snomed_codes(
    model_file, tmp_path, slicer_app
):
    import slicer

    ct = _write(_synthetic_ct(), tmp_path / "ct.nii.gz")
    output, summary, labelmap = (
        tmp_path / "ct.seg.nrrd",
        tmp_path / "summary.json",
        tmp_path / "labels.nii.gz",
    )
    command = [sys.executable, "-m", "unetrpp", "segment", str(ct), str(output), "--model", str(model_file)]
    command += [
        "--device",
        "cpu",
        "--progress",
        "json",
        "--summary",
        str(summary),
        "--labelmap",
        str(labelmap),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr

    events = _json_lines(completed.stdout)  # every stdout line is one JSON object
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["load_model", "read", "preprocess", "inference", "resample", "write"]
    progress = [e for e in events if e["event"] == "progress"]
    total = progress[0]["total"]
    assert total >= 2 and {e["total"] for e in progress} == {total}
    assert [e["done"] for e in progress] == list(range(total + 1))
    assert all(e["stage"] == "inference" for e in progress)
    assert events.index(progress[0]) > stages.index("inference")
    result = events[-1]
    assert result["event"] == "result" and result["output"] == str(output)
    assert [s["name"] for s in result["structures"]] == [s.name for s in structures_for("synapse")]

    written = json.loads(summary.read_text())
    assert written["structures"] == result["structures"]
    input_image = sitk.ReadImage(str(ct))
    label_image = sitk.ReadImage(str(labelmap))
    assert label_image.GetSize() == input_image.GetSize()
    np.testing.assert_allclose(label_image.GetOrigin(), input_image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(label_image.GetSpacing(), input_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(label_image.GetDirection(), input_image.GetDirection(), atol=1e-6)
    counts = np.bincount(sitk.GetArrayFromImage(label_image).ravel(), minlength=14)
    assert [s["voxels"] for s in result["structures"]] == [int(c) for c in counts[1:]]

    node = slicer_app.load_segmentation(output)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 13
    terminologies = slicer_app.logic("Terminologies")
    for structure in structures_for("synapse"):
        segment = segmentation.GetSegment(f"Segment_{structure.label_value}")
        assert segment.GetName() == structure.name
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == structure.type.value
    assert segmentation.GetSegment("Segment_6").GetName() == "liver"
    liver = slicer.vtkSlicerTerminologyEntry()
    terminologies.DeserializeTerminologyEntry(segmentation.GetSegment("Segment_6").GetTerminology(), liver)
    assert liver.GetTypeObject().GetCodeValue() == "10200004"

    volume = slicer_app.load_volume(ct)
    geometry = segmentation.GetConversionParameter("Reference image geometry")
    reference = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, reference, False)
    assert reference.GetDimensions() == volume.GetImageData().GetDimensions()


def test_table_output_structure_subset_and_overwrite(model_file, tmp_path, capsys):
    ct = _write(_synthetic_ct(), tmp_path / "ct.nrrd")
    output = tmp_path / "out.seg.nrrd"
    argv = ["segment", str(ct), str(output), "--model", str(model_file), "--progress", "none"]
    argv += ["--structures", "liver,Spleen", "--device", "cpu", "--accumulation", "float32"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["structure", "voxels", "volume", "mL"]
    assert [line.split()[0] for line in lines[1:3]] == ["spleen", "liver"]
    assert lines[-1] == f"wrote {output}"
    first = sitk.GetArrayFromImage(read_seg_nrrd(output)[0])
    assert set(np.unique(first)) <= {0, 1, 6}
    stamp = output.stat().st_mtime_ns
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert output.stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == 0
    # same input, same model, same options: the same labels again
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_seg_nrrd(output)[0]), first)


def test_body_crop_is_on_by_default_and_precision_is_reported(model_file, tmp_path, capsys):
    ct = _write(_synthetic_ct(size_xyz=(160, 40, 14)), tmp_path / "ct.nrrd")  # air beyond x = 44
    runs = {}
    for flags in ([], ["--no-body-crop"]):
        output = tmp_path / f"out{len(flags)}.seg.nrrd"
        argv = ["segment", str(ct), str(output), "--model", str(model_file), "--progress", "json"]
        assert main([*argv, "--device", "cpu", "--precision", "fp32", *flags]) == 0
        events = _json_lines(capsys.readouterr().out)
        runs[bool(flags)] = events
    tiles = {key: {e["total"] for e in events if e["event"] == "progress"} for key, events in runs.items()}
    assert max(tiles[False]) < max(tiles[True])
    stages = [e["message"] for e in runs[False] if e["event"] == "stage" and e["stage"] == "inference"]
    assert stages == ["Sliding window on cpu (fp32)"]


def test_quality_paper_is_the_official_settings_in_one_switch(model_file, tmp_path, capsys):
    """--quality paper runs every tile with 8 mirrorings in fp32: the same labels as those options given
    one by one, the tiles of a run without air skipping; options that change the preset are refused."""
    from unetrpp.labels.seg_nrrd import read_seg_nrrd

    ct = _write(_synthetic_ct(size_xyz=(160, 40, 14)), tmp_path / "ct.nrrd")  # air beyond x = 44
    base = ["--model", str(model_file), "--progress", "json", "--device", "cpu"]
    runs = {
        "paper": ["--quality", "paper"],
        "by-hand": ["--tta", "--no-body-crop", "--precision", "fp32", "--accumulation", "float32"],
        "fast": [],
    }
    labels, events = {}, {}
    for name, flags in runs.items():
        output = tmp_path / f"{name}.seg.nrrd"
        assert main(["segment", str(ct), str(output), *base, *flags]) == 0
        events[name] = _json_lines(capsys.readouterr().out)
        labels[name] = sitk.GetArrayFromImage(read_seg_nrrd(output)[0])
    np.testing.assert_array_equal(labels["paper"], labels["by-hand"])
    tiles = {name: max(e["total"] for e in run if e["event"] == "progress") for name, run in events.items()}
    assert tiles["paper"] == tiles["by-hand"] > tiles["fast"]  # every tile, the air's included
    stages = [e["message"] for e in events["paper"] if e["event"] == "stage" and e["stage"] == "inference"]
    assert stages == ["Sliding window on cpu (fp32, 8 mirrorings)"]

    refused = tmp_path / "refused.seg.nrrd"
    assert main(["segment", str(ct), str(refused), *base, "--quality", "paper", "--overlap", "0.25"]) == 2
    error = _json_lines(capsys.readouterr().out)[-1]
    assert error["event"] == "error" and "the paper preset runs overlap=0.5, not 0.25" in error["message"]
    assert not refused.exists()


def test_progress_bar_goes_to_stderr_and_stdout_keeps_only_the_table(model_file, tmp_path, capsys):
    ct = _write(_synthetic_ct(), tmp_path / "ct.mha")
    output = tmp_path / "out.seg.nrrd"
    argv = [
        "segment",
        str(ct),
        str(output),
        "--model",
        str(model_file),
        "--progress",
        "bar",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "preprocess: " in captured.err and "inference" in captured.err and "tile" in captured.err
    assert captured.out.splitlines()[0].split() == ["structure", "voxels", "volume", "mL"]
    assert captured.out.splitlines()[-1] == f"wrote {output}"
    assert len(captured.out.splitlines()) == 13 + 2


def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    good = _write(_synthetic_ct(), tmp_path / "good.nrrd")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not a gzipped NIfTI file at all")
    flat = _write(sitk.Image(32, 32, sitk.sitkInt16), tmp_path / "flat.nrrd")
    four_d = sitk.JoinSeries([_synthetic_ct(), _synthetic_ct(), _synthetic_ct()])
    nan = sitk.Cast(_synthetic_ct(), sitk.sitkFloat32)
    nan[5, 5, 5] = float("nan")
    absurd = _synthetic_ct(spacing=(1.2, 1.3, 900.0))
    zero_spacing = tmp_path / "zero_spacing.nhdr"
    raw = tmp_path / "zero_spacing.raw"
    np.full((6, 8, 8), 40, np.int16).tofile(raw)
    zero_spacing.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8 6\nspacings: 1 1 0\nencoding: raw\n"
        f"endian: little\ndata file: {raw.name}\n\n"
    )
    existing = tmp_path / "existing.seg.nrrd"
    existing.write_bytes(b"keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out = str(tmp_path / "out.seg.nrrd")
    return {
        "corrupt-file": [str(corrupt), out],
        "missing-file": [str(tmp_path / "missing.nii.gz"), out],
        "2d-image": [str(flat), out],
        "4d-image": [str(_write(four_d, tmp_path / "four_d.nii.gz")), out],
        "two-inputs-for-one": [str(good), str(good), out],
        "nan-voxels": [str(_write(nan, tmp_path / "nan.nrrd")), out],
        "zero-spacing": [str(zero_spacing), out],
        "absurd-spacing": [str(_write(absurd, tmp_path / "absurd.nrrd")), out],
        "empty-volume": [str(_write(sitk.Image(20, 20, 8, sitk.sitkInt16), tmp_path / "empty.nrrd")), out],
        "existing-output": [str(good), str(existing)],
        "unwritable-folder": [str(good), str(a_file / "out.seg.nrrd")],
        "labelmap-exists": [str(good), out, "--labelmap", str(existing)],
    }


BAD_CASES = [
    "corrupt-file",
    "missing-file",
    "2d-image",
    "4d-image",
    "two-inputs-for-one",
    "nan-voxels",
    "zero-spacing",
    "absurd-spacing",
    "empty-volume",
    "existing-output",
    "unwritable-folder",
    "labelmap-exists",
]


# Why each case is refused: the error type and fragments of the message that name the problem (and the
# file), so that a case refused for an unrelated reason, before inference, does not pass.
REFUSALS = {
    "corrupt-file": ("InputImageError", ["cannot read", "corrupt.nii.gz", "damaged"]),
    "missing-file": ("InputImageError", ["not found", "missing.nii.gz"]),
    "2d-image": ("InputImageError", ["flat.nrrd is a 2D image", "3D volume is needed"]),
    "4d-image": ("InputImageError", ["four_d.nii.gz is 4D", "single 3D volume"]),
    "two-inputs-for-one": ("InputImageError", ["needs 1 input (CT), got 2"]),
    "nan-voxels": ("InputImageError", ["nan.nrrd has 1 NaN or infinite voxels"]),
    "zero-spacing": ("InputImageError", ["zero_spacing.nhdr has zero or invalid voxel spacing"]),
    "absurd-spacing": ("InputImageError", ["absurd.nrrd has voxel spacing (1.2, 1.3, 900)", "and 50 mm"]),
    "empty-volume": ("InputImageError", ["empty.nrrd is empty", "the value 0"]),
    "existing-output": ("OutputExistsError", ["existing.seg.nrrd already exists", "--overwrite"]),
    "unwritable-folder": ("UnetrppError", ["a_file is a file, not a folder"]),
    "labelmap-exists": ("OutputExistsError", ["existing.seg.nrrd already exists", "--overwrite"]),
}


def test_every_bad_case_has_its_refusal():
    assert set(REFUSALS) == set(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES, ids=BAD_CASES)
def test_bad_input_exits_2_with_one_line_an_error_event_and_no_file_left(model_file, tmp_path, capsys, case):
    paths = _bad_inputs(tmp_path)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    argv = ["segment", *paths, "--model", str(model_file), "--progress", "json", "--device", "cpu"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    error_lines = captured.err.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("unetrpp: error: "), captured.err
    events = _json_lines(captured.out)
    assert events[-1]["event"] == "error"
    assert events[-1]["message"] in error_lines[0]
    error_type, fragments = REFUSALS[case]
    assert events[-1]["error_type"] == error_type
    for fragment in fragments:
        assert fragment in events[-1]["message"], (fragment, events[-1]["message"])
    assert not [e for e in events if e["event"] == "progress"]  # refused before any inference
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before  # nothing written, nothing half-written, nothing changed


@contextlib.contextmanager
def _folder_no_file_can_be_created_in(tmp_path: Path):
    """A read-only folder for anyone: mode 0o500 stops a normal user; root, whom permission bits do not
    stop, cannot create a file in sysfs either (it has no file creation), so root gets /sys."""
    if os.name == "posix" and os.geteuid() == 0:
        assert Path("/sys").is_dir(), "root without /sys: no folder here is read-only for root"
        yield Path("/sys")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        yield locked
    finally:
        locked.chmod(0o700)


def test_read_only_output_folder_is_refused(model_file, tmp_path, capsys):
    good = _write(_synthetic_ct(), tmp_path / "good.nrrd")
    with _folder_no_file_can_be_created_in(tmp_path) as locked:
        before = sorted(locked.iterdir())
        argv = ["segment", str(good), str(locked / "out.seg.nrrd"), "--model", str(model_file)]
        assert main(argv) == 2
        assert f"cannot write to folder {locked}" in capsys.readouterr().err
        assert sorted(locked.iterdir()) == before


def test_bad_input_in_a_real_process_prints_one_line_on_stderr(model_file, tmp_path):
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_text("NRRD0004\ntype: nonsense\n")
    command = [sys.executable, "-m", "unetrpp", "segment", str(corrupt), str(tmp_path / "o.seg.nrrd")]
    command += ["--model", str(model_file), "--progress", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith("unetrpp: error: ") and "corrupt.nrrd" in completed.stderr
    error = _json_lines(completed.stdout)[-1]
    assert error["event"] == "error" and error["error_type"] == "InputImageError"
    assert sorted(os.listdir(tmp_path)) == ["corrupt.nrrd"]


def test_interrupt_during_inference_exits_130_and_leaves_no_file(model_file, tmp_path):
    ct = _write(_synthetic_ct(size_xyz=(96, 96, 24)), tmp_path / "ct.nrrd")
    command = [sys.executable, "-m", "unetrpp", "segment", str(ct), str(tmp_path / "out.seg.nrrd")]
    command += ["--model", str(model_file), "--progress", "json", "--device", "cpu", "--tta"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Read until the first progress line, on a thread: a child that hangs before it fails the test.
        def interrupt_at_first_progress():
            for line in process.stdout:
                if json.loads(line)["event"] == "progress":
                    process.send_signal(signal.SIGINT)
                    return

        reader = threading.Thread(target=interrupt_at_first_progress, daemon=True)
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "no progress line within 120 s"
        remaining, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, errors
    assert "cancelled" in errors
    assert all(json.loads(line)["event"] != "error" for line in remaining.splitlines())
    assert sorted(os.listdir(tmp_path)) == ["ct.nrrd"]


def test_segment_help_does_not_import_torch():
    code = "import sys; from unetrpp.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr
