"""``unetrpp segment`` on the wrong kind of scan: the bundled CT ``demo`` model on real MRs prints exactly one
``unetrpp: warning:`` line (whatever ``--progress`` says) or one JSON ``warning`` event, and still exits 0;
``--force-modality`` silences it; a real CT gets no warning; an MR model on a real CT is warned too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from unetrpp.cli import main
from unetrpp.pipeline.io import read_image
from vendored_data import data_path

REPO_ROOT = Path(__file__).resolve().parents[2]
BRAIN_MR = ("real_inputs", "monai_brain_mr_las", "anatomical.nii")  # 33 x 41 x 25: one demo tile
MR_DICOM = ("real_inputs", "dcmqa_mr_decubitus_hfdr_sag")
FAST = ["--model", "demo", "--device", "cpu", "--overlap", "0", "--precision", "fp32"]


def _warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("unetrpp: warning:")]


def _real_ct_block(tmp_path: Path) -> Path:
    """40 x 40 x 20 voxels (3 mm) of the real example CT across the body's edge, as a NIfTI file."""
    ct = read_image(data_path("real_inputs", "totalseg_example_ct", "example_ct.nii.gz"))
    path = tmp_path / "ct_block.nii.gz"
    sitk.WriteImage(ct[80:120, 0:40, 50:70], str(path))
    return path


def test_brain_mr_through_the_ct_demo_model_warns_on_stderr_and_still_exits_0(tmp_path):
    """As a user runs it: a subprocess whose stderr is not a terminal, so ``--progress`` is ``none``."""
    output = tmp_path / "brain.seg.nrrd"
    command = [sys.executable, "-m", "unetrpp", "segment", str(data_path(*BRAIN_MR)), str(output), *FAST]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    warnings = _warning_lines(completed.stderr)
    assert len(warnings) == 1, completed.stderr
    assert warnings[0].startswith(
        "unetrpp: warning: model 'demo' expects CT in Hounsfield units, but the input"
    )
    assert "has no air" in warnings[0] and warnings[0].endswith("(--force-modality skips this check)")
    assert output.is_file() and "wrote" in completed.stdout  # a warning, not a refusal


def test_progress_json_gives_one_warning_event_before_inference_and_no_stderr_line(tmp_path, capsys):
    output = tmp_path / "brain.seg.nrrd"
    assert main(["segment", str(data_path(*BRAIN_MR)), str(output), *FAST, "--progress", "json"]) == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]  # stdout: JSON lines only
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1
    assert set(warnings[0]) == {"event", "message"}
    assert "model 'demo' expects CT" in warnings[0]["message"]
    inference = next(e for e in events if e["event"] == "stage" and e["stage"] == "inference")
    assert events.index(warnings[0]) < events.index(inference)
    assert events[-1]["event"] == "result"
    assert not _warning_lines(captured.err)


@pytest.mark.parametrize("progress", ["none", "bar", "json"])
def test_force_modality_silences_the_warning_in_every_progress_mode(tmp_path, capsys, progress):
    output = tmp_path / "brain.seg.nrrd"
    argv = ["segment", str(data_path(*BRAIN_MR)), str(output), *FAST, "--progress", progress]
    assert main([*argv, "--force-modality"]) == 0
    captured = capsys.readouterr()
    assert not _warning_lines(captured.err)
    assert '"warning"' not in captured.out
    assert output.is_file()


def test_mr_dicom_series_warning_names_its_dicom_modality_with_a_progress_bar(tmp_path, capsys):
    output = tmp_path / "mr.seg.nrrd"
    assert main(["segment", str(data_path(*MR_DICOM)), str(output), *FAST, "--progress", "bar"]) == 0
    warnings = _warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1
    assert "the input is a DICOM series of Modality MR" in warnings[0]


def test_a_real_ct_gets_no_warning(tmp_path, capsys):
    output = tmp_path / "ct.seg.nrrd"
    assert main(["segment", str(_real_ct_block(tmp_path)), str(output), *FAST, "--progress", "none"]) == 0
    captured = capsys.readouterr()
    assert not _warning_lines(captured.err)
    assert "wrote" in captured.out


def test_an_mr_model_on_a_real_ct_warns(tmp_path, capsys):
    from tiny_models import TINY_PATCH_ZYX, save_tiny_synapse
    from unetrpp.models.cards import ChannelNormalization, Plans

    plans = Plans(
        (ChannelNormalization("nonCT", use_nonzero_mask=True),), (3.0, 3.0, 3.0), TINY_PATCH_ZYX, 14
    )
    model = save_tiny_synapse(
        tmp_path / "tiny-mr.unetrpp", plans, name="tiny-mr", modality="MR", input_channels=("T2w",)
    )
    output = tmp_path / "ct.seg.nrrd"
    argv = ["segment", str(_real_ct_block(tmp_path)), str(output), "--model", str(model), "--device", "cpu"]
    assert main([*argv, "--overlap", "0", "--progress", "none"]) == 0
    warnings = _warning_lines(capsys.readouterr().err)
    assert len(warnings) == 1
    assert (
        "model 'tiny-mr' expects MR, not CT, but the input looks like a CT in Hounsfield units" in warnings[0]
    )


def test_segment_help_documents_force_modality():
    completed = subprocess.run(
        [sys.executable, "-m", "unetrpp", "segment", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0
    assert "--force-modality" in completed.stdout
