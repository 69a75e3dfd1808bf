"""``unetrpp batch`` end to end with the tiny UNETR++ of ``test_cli_segment`` on real files: every case of
a folder or CSV gets its ``.seg.nrrd`` on its own grid, bad cases fail alone with their line, the report
lists all, the exit status tells; a second run skips what matches and redoes what changed; a real
SIGKILL mid-run, then the same command, keeps the finished case untouched and leaves no temporary."""

from __future__ import annotations

import csv
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
import test_cli_segment
from test_cli_segment import _synthetic_ct
from unetrpp.cli import main
from unetrpp.labels.seg_nrrd import read_seg_nrrd

model_file = test_cli_segment.model_file  # the tiny UNETR++ fixture, shared rather than rebuilt
_TEMPORARY = ".unetrpp-"
_SMALL = {"size_xyz": (24, 20, 8)}  # one tile: a case in a fraction of a second


def _cohort(folder: Path) -> Path:
    """Two good cases with odd names, one unreadable, one a single slice, one not a CT."""
    folder.mkdir()
    sitk.WriteImage(_synthetic_ct(), str(folder / "case one.nii.gz"))
    sitk.WriteImage(_synthetic_ct(size_xyz=(40, 36, 10), spacing=(1.0, 1.1, 3.0)), str(folder / "ünï.nrrd"))
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    sitk.WriteImage(_synthetic_ct(size_xyz=(48, 40, 1)), str(folder / "flat.mha"))
    mr = np.random.default_rng(0).integers(100, 2000, size=(14, 40, 48)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(folder / "mr.nrrd"))
    (folder / "notes.txt").write_text("not a case")
    return folder


def _batch(*args: object) -> list[str]:
    return ["batch", *map(str, args), "--device", "cpu"]


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.endswith(".seg.nrrd")}


def test_folder_cohort_writes_each_case_on_its_grid_reports_all_and_fails_bad_cases_alone(
    model_file, tmp_path, capsys
):
    source, out = _cohort(tmp_path / "in"), tmp_path / "out"
    status = main(_batch(source, out, "--model", model_file, "--progress", "json", "--summary", "--labelmap"))
    events = _events(capsys.readouterr().out)
    assert status == 3  # the run finished, some cases failed

    assert sum(e.get("stage") == "load_model" for e in events) == 1  # the model is loaded once
    starts = [e["case"] for e in events if e["event"] == "case_start"]
    assert starts == sorted(["case one", "ünï", "broken", "flat", "mr"])
    done = {e["case"]: e for e in events if e["event"] == "case_done"}
    assert {c: e["status"] for c, e in done.items()} == {
        "broken": "failed",
        "case one": "done",
        "flat": "failed",
        "mr": "failed",
        "ünï": "done",
    }
    assert "broken.nii.gz" in done["broken"]["error"] and done["broken"]["error_type"] == "InputImageError"
    assert "2D" in done["flat"]["error"] or "slice" in done["flat"]["error"]
    assert "expects CT in Hounsfield units" in done["mr"]["error"]
    tagged = [e for e in events if e["event"] == "progress"]
    assert tagged and {e["case"] for e in tagged} == {"case one", "ünï"}
    assert events[-1]["event"] == "batch_result"
    assert (events[-1]["done"], events[-1]["failed"], events[-1]["total"]) == (2, 3, 5)

    for name, file in (("case one", "case one.nii.gz"), ("ünï", "ünï.nrrd")):
        image = sitk.ReadImage(str(source / file))
        labels, _ = read_seg_nrrd(out / f"{name}.seg.nrrd")
        assert labels.GetSize() == image.GetSize()
        np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(labels.GetSpacing(), image.GetSpacing(), atol=1e-6)
        counts = np.bincount(sitk.GetArrayFromImage(labels).ravel(), minlength=14)
        assert [s["voxels"] for s in done[name]["structures"]] == [int(c) for c in counts[1:]]
        label_map = sitk.ReadImage(str(out / f"{name}.labels.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(label_map), sitk.GetArrayFromImage(labels))
        assert json.loads((out / f"{name}.summary.json").read_text(encoding="utf-8"))["case"] == name

    report = json.loads((out / "batch_report.json").read_text(encoding="utf-8"))
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 3, "not_run": 0}
    assert report["model"] == "tiny-synapse" and len(report["weights_sha256"]) == 64
    rows = list(csv.DictReader((out / "batch_report.csv").open(encoding="utf-8")))
    assert [r["case"] for r in rows] == sorted(["case one", "ünï", "broken", "flat", "mr"])
    by_case = {r["case"]: r for r in rows}
    assert by_case["broken"]["error"] == done["broken"]["error"]
    spleen = done["case one"]["structures"][0]
    assert float(by_case["case one"]["spleen mL"]) == pytest.approx(spleen["volume_ml"], abs=1e-3)
    assert not [p for p in out.iterdir() if _TEMPORARY in p.name]


def test_a_second_run_skips_what_matches_and_redoes_what_changed(model_file, tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(_synthetic_ct(**_SMALL), str(source / f"{name}.nii.gz"))
    assert main(_batch(source, out, "--model", model_file)) == 0
    first = _mtimes(out)

    assert main(_batch(source, out, "--model", model_file)) == 0
    assert _mtimes(out) == first  # untouched
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out

    os.utime(source / "b.nii.gz", ns=(1, 1))  # a replaced scan re-runs its case only
    assert main(_batch(source, out, "--model", model_file)) == 0
    again = _mtimes(out)
    assert again["a.seg.nrrd"] == first["a.seg.nrrd"] and again["b.seg.nrrd"] != first["b.seg.nrrd"]

    assert main(_batch(source, out, "--model", model_file, "--structures", "liver")) == 0  # an option
    labels, structures = read_seg_nrrd(out / "a.seg.nrrd")
    assert [s.name for s in structures] == ["liver"]
    assert "2 done, 0 skipped" in capsys.readouterr().out

    sitk.WriteImage(_synthetic_ct(**_SMALL), str(source / "c.nii.gz"))
    (out / "c.seg.nrrd").write_bytes(b"the user's own file")
    assert main(_batch(source, out, "--model", model_file, "--structures", "liver")) == 3
    assert (out / "c.seg.nrrd").read_bytes() == b"the user's own file"  # never replaced unasked
    assert "did not write it; pass --overwrite" in capsys.readouterr().err
    assert main(_batch(source, out, "--model", model_file, "--structures", "liver", "--overwrite")) == 0


def test_csv_cohort_and_bad_case_lists_refused_in_one_line(model_file, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    sitk.WriteImage(_synthetic_ct(**_SMALL), str(scans / "x.nii.gz"))
    listing = tmp_path / "cohort.csv"
    listing.write_text("case,CT\npatient 1,scans/x.nii.gz\n", encoding="utf-8")
    assert main(_batch(listing, tmp_path / "out", "--model", model_file)) == 0
    assert (tmp_path / "out" / "patient 1.seg.nrrd").is_file()
    capsys.readouterr()

    bad = {
        "name,CT\na,scans/x.nii.gz\n": "no 'case' column",
        "case,CT,T1\na,scans/x.nii.gz,scans/x.nii.gz\n": "needs 1",
        "case,CT\na,scans/x.nii.gz\nA,scans/x.nii.gz\n": "would write the same output",
        "case,CT\n../up,scans/x.nii.gz\n": "cannot name a file",
        "case,CT\na,\n": "no value in column(s) CT",
    }
    for text, message in bad.items():
        listing.write_text(text, encoding="utf-8")
        assert main(_batch(listing, tmp_path / "bad", "--model", model_file)) == 2, text
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error, error
    assert main(_batch(tmp_path / "missing", tmp_path / "bad", "--model", model_file)) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list((tmp_path / "bad").glob("*.seg.nrrd"))


def test_sigkill_mid_run_then_the_same_command_keeps_finished_cases_and_redoes_the_cut_one(
    model_file, tmp_path
):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    sitk.WriteImage(_synthetic_ct(**_SMALL), str(source / "1 first.nii.gz"))
    sitk.WriteImage(_synthetic_ct(), str(source / "2 second.nii.gz"))  # 4 tiles
    sitk.WriteImage(_synthetic_ct(**_SMALL), str(source / "3 third.nii.gz"))
    command = [sys.executable, "-m", "unetrpp", *_batch(source, out, "--model", model_file)]
    command += ["--progress", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def kill_in_the_second_case():
            for line in process.stdout:
                event = json.loads(line)
                if event["event"] == "progress" and event["case"] == "2 second":  # its tiles begin
                    process.send_signal(signal.SIGKILL)
                    return

        reader = threading.Thread(target=kill_in_the_second_case, daemon=True)
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "the second case never started its tiles"
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert sorted(_mtimes(out)) == ["1 first.seg.nrrd"]
    first = _mtimes(out)["1 first.seg.nrrd"]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    done = {e["case"]: e["status"] for e in _events(completed.stdout) if e["event"] == "case_done"}
    assert done == {"1 first": "skipped", "2 second": "done", "3 third": "done"}
    assert _mtimes(out)["1 first.seg.nrrd"] == first
    assert sorted(_mtimes(out)) == ["1 first.seg.nrrd", "2 second.seg.nrrd", "3 third.seg.nrrd"]
    assert not [p for p in out.iterdir() if _TEMPORARY in p.name]
    report = json.loads((out / "batch_report.json").read_text(encoding="utf-8"))
    assert [c["status"] for c in report["cases"]] == ["skipped", "done", "done"]


def test_dicom_seg_for_dicom_cases_and_a_one_line_failure_for_the_others(model_file, tmp_path, capsys):
    """--dicom-seg: the DICOM folder case gets <case>.seg.dcm with the .seg.nrrd's structures and voxel
    counts; a NIfTI case fails alone, before its inference, saying a SEG needs a DICOM input."""
    import shutil

    from unetrpp.labels.dicom_seg import read_dicom_seg
    from unetrpp.labels.terminology import structures_for
    from vendored_data import data_path

    source = tmp_path / "cohort"
    source.mkdir()
    shutil.copytree(data_path("real_inputs", "dcmqi_ct3slice/dicom"), source / "chest")
    sitk.WriteImage(_synthetic_ct(**_SMALL), str(source / "nifti.nii.gz"))
    out = tmp_path / "out"
    argv = _batch(source, out, "--model", model_file, "--progress", "json", "--dicom-seg", "--overlap", "0")
    assert main(argv) == 3
    done = {e["case"]: e for e in _events(capsys.readouterr().out) if e["event"] == "case_done"}
    assert done["chest"]["status"] == "done"
    assert done["nifti"]["status"] == "failed" and "DICOM" in done["nifti"]["error"]
    assert not (out / "nifti.seg.nrrd").exists()  # refused before inference

    labels = sitk.GetArrayFromImage(read_seg_nrrd(out / "chest.seg.nrrd")[0])
    seg, names = read_dicom_seg(out / "chest.seg.dcm")
    values = {s.name: s.label_value for s in structures_for("synapse")}
    counts = np.bincount(sitk.GetArrayFromImage(seg).ravel(), minlength=max(names) + 1)
    assert names and all(counts[number] == (labels == values[name]).sum() for number, name in names.items())
    assert set(names.values()) == {name for name, value in values.items() if (labels == value).any()}
