"""What a terminal user sees when things go wrong: one line, no library noise, no traceback.

The README promises one line for a handled error. These run the real ``unetrpp`` command in a child
process where stdout and stderr are what a terminal or a reading GUI would get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from unetrpp.cli import build_parser
from unetrpp.errors import InputImageError
from unetrpp.pipeline.io import read_image

REPO_ROOT = Path(__file__).resolve().parents[2]


def _unetrpp(*argv: str, cwd: Path, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    environment = {**os.environ, "UNETRPP_HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "unetrpp", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


def test_empty_dicom_folder_fails_with_our_line_and_no_itk_warning(tmp_path):
    (tmp_path / "empty").mkdir()
    completed = _unetrpp("segment", "empty", "out.seg.nrrd", "--model", "demo", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"unetrpp: error: no DICOM image series found in folder {Path('empty')}"
    ]
    assert not (tmp_path / "out.seg.nrrd").exists()


def test_reading_an_empty_folder_prints_nothing_from_itk_and_restores_its_warnings(tmp_path, capfd):
    assert sitk.ProcessObject.GetGlobalWarningDisplay()
    with pytest.raises(InputImageError, match="no DICOM image series found"):
        read_image(tmp_path)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert sitk.ProcessObject.GetGlobalWarningDisplay()  # switched back on for everything else


def test_a_closed_pipe_ends_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line, as with `unetrpp models | head -0`
    try:
        completed = _unetrpp("models", cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert completed.stderr == ""
    assert completed.returncode == 141


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["segment", "a.nii", "b.seg.nrrd", "--progress", "json"], "the following arguments are required"),
        (
            ["segment", "a.nii", "b.seg.nrrd", "--model", "demo", "--progress=json", "--overlap", "2"],
            "argument --overlap: overlap must be in [0, 1), got 2.0",
        ),
        (["segment", "a.nii", "b.seg.nrrd", "-m", "demo", "--progress", "json", "--bogus"], "unrecognized"),
    ],
    ids=["missing-model", "overlap-out-of-range", "unknown-option"],
)
def test_usage_errors_under_json_progress_are_json_error_events(argv, fragment, tmp_path):
    completed = _unetrpp(*argv, cwd=tmp_path)
    assert completed.returncode == 2
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, completed.stdout
    event = json.loads(lines[0])
    assert event["event"] == "error" and event["error_type"] == "UsageError"
    assert fragment in event["message"] and event["message"].startswith("unetrpp")
    assert fragment in completed.stderr  # the usage text still goes to the terminal


def test_usage_errors_without_json_progress_keep_stdout_empty(tmp_path):
    completed = _unetrpp("segment", "a.nii", "b.seg.nrrd", "--overlap", "2", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "argument --overlap" in completed.stderr


def test_demo_writes_where_asked_and_its_default_folder_is_ignored_by_git(tmp_path):
    assert build_parser().parse_args(["demo", "--output", str(tmp_path)]).output == tmp_path
    default = build_parser().parse_args(["demo"]).output
    assert not default.is_absolute()
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", f"{default.as_posix()}/phantom_1000.nrrd"],
        cwd=REPO_ROOT,
        timeout=30,
    )
    assert ignored.returncode == 0, f"{default}/ is not in .gitignore"
