"""The runner's defences against what a child may send (review F-29) and its reading of the real CLI's
argparse errors (review F-19): real child processes, the real ``unetrpp`` command."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
from unetrpp.events import ProgressEvent
from UNETRPPSegmentLib.process import ProcessRunner, RunState, event_from_json

_PROGRESS = {"event": "progress", "stage": "inference", "done": 3, "total": 9}


@pytest.mark.parametrize(
    "fields",
    [
        {"done": "3", "total": "x"},  # the review's line: .fraction raised TypeError in the GUI timer
        {"done": True},
        {"total": -1},
        {"done": 2.5},
        {"elapsed_seconds": math.nan},
        {"eta_seconds": math.inf},
        {"eta_seconds": "soon"},
        {"stage": None},
    ],
    ids=["strings", "bool", "negative", "fractional-count", "nan", "inf", "text-eta", "null-stage"],
)
def test_a_progress_line_with_wrong_types_is_not_an_event(fields):
    assert event_from_json(json.dumps({**_PROGRESS, **fields})) is None


@pytest.mark.parametrize(
    "line",
    [
        {"event": "result", "output": "out.seg.nrrd", "structures": "liver"},
        {"event": "result", "output": "out.seg.nrrd", "structures": [1, 2]},
        {"event": "result", "output": None},
        {"event": "warning", "message": ["low", "memory"]},
        {"event": "error", "message": "bad", "error_type": 3},
        {"event": "stage", "stage": "read", "message": {"text": "x"}},
    ],
    ids=["structures-text", "structures-numbers", "null-output", "list-message", "numeric-type", "dict-text"],
)
def test_other_events_with_wrong_types_are_not_events(line):
    assert event_from_json(json.dumps(line)) is None


def test_well_typed_events_still_pass():
    event = event_from_json(json.dumps({**_PROGRESS, "elapsed_seconds": 2, "eta_seconds": None}))
    assert event == ProgressEvent("inference", 3, 9, 2, None)
    assert event.fraction == 3 / 9
    result = event_from_json(json.dumps({"event": "result", "output": "o", "structures": [{"name": "x"}]}))
    assert result is not None and result.structures == [{"name": "x"}]


def test_a_malformed_event_from_a_child_is_log_text_and_the_run_goes_on(tmp_path):
    script = tmp_path / "child.py"
    bad = json.dumps({**_PROGRESS, "done": "3", "total": "x"})
    good = json.dumps(_PROGRESS)
    script.write_text(textwrap.dedent(f"print({bad!r}, flush=True)\nprint({good!r}, flush=True)\n"))
    events: list = []
    logs: list[str] = []
    runner = ProcessRunner([sys.executable, str(script)], on_event=events.append, on_log=logs.append)
    runner.start()
    assert runner.wait(timeout_seconds=30) is RunState.IMPORTING
    assert events == [ProgressEvent("inference", 3, 9)]
    assert logs == [bad]
    assert [event.fraction for event in events] == [3 / 9]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--overlap", "2"], "argument --overlap: overlap must be in [0, 1), got 2.0"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    ids=["subcommand-error", "top-level-error"],
)
def test_the_real_cli_s_usage_error_without_json_is_shown_without_its_prefix(argv, message, tmp_path: Path):
    command = [sys.executable, "-m", "unetrpp", "segment", "a.nii", "b.seg.nrrd", "-m", "demo", *argv]
    runner = ProcessRunner(command)
    runner.start()
    assert runner.wait(timeout_seconds=120) is RunState.FAILED
    assert runner.returncode == 2
    assert runner.error_message == message
