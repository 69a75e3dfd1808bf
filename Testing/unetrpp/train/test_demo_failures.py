"""``unetrpp demo`` when something fails (review F-28): nothing is left that makes the rerun need
``--overwrite``, and what the user had is untouched; ``--threads`` really sets torch's threads."""

from __future__ import annotations

from pathlib import Path

import torch
from unetrpp.cli import main
from unetrpp.events import ProgressEvent
from unetrpp.train.demo import run_demo


def _demo(capsys, *argv: str) -> tuple[int, str]:
    status = main(["demo", "--progress", "none", *argv])
    return status, capsys.readouterr().err


def test_a_bad_model_file_fails_before_any_file_and_the_rerun_says_the_same(tmp_path, capsys):
    junk = tmp_path / "junk.unetrpp"
    junk.write_bytes(b"not a model")
    output = tmp_path / "demo"
    for _ in range(2):
        status, stderr = _demo(capsys, "--output", str(output), "--model", str(junk))
        assert status == 2
        assert stderr.count("\n") == 1 and str(junk) in stderr and "already holds" not in stderr
        assert not output.exists()


def test_a_failure_after_the_phantom_removes_what_the_run_wrote_and_keeps_the_rest(tmp_path, capsys):
    output = tmp_path / "demo"
    output.mkdir()
    (output / "notes.txt").write_text("mine", encoding="utf-8")
    status, stderr = _demo(capsys, "--output", str(output), "--device", "bogus")
    assert status == 2 and "unknown device 'bogus'" in stderr
    assert sorted(path.name for path in output.iterdir()) == ["notes.txt"]
    assert (output / "notes.txt").read_text(encoding="utf-8") == "mine"

    fresh = tmp_path / "new" / "demo"
    status, _ = _demo(capsys, "--output", str(fresh), "--device", "bogus")
    assert status == 2 and not fresh.exists()


def test_threads_apply_to_the_segmentation_and_are_restored(tmp_path):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    seen: set[int] = set()

    def on_event(event) -> None:
        if isinstance(event, ProgressEvent):
            seen.add(torch.get_num_threads())

    result = run_demo(tmp_path, device="cpu", num_threads=wanted, on_event=on_event)
    assert seen == {wanted}
    assert torch.get_num_threads() == before
    assert Path(result.segmentation_path).is_file()
