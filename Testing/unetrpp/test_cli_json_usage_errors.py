"""Usage errors under ``--progress json`` are one JSON ``error`` event on stdout, whichever way the option
is spelt (review F-19), and only when the command line really asks for JSON.

These run the real ``unetrpp`` parser in-process (``unetrpp.cli.main``): argparse exits with status 2.
"""

from __future__ import annotations

import json

import pytest
from unetrpp.cli import main

SEGMENT = ["segment", "a.nii", "b.seg.nrrd", "-m", "demo"]


def _usage_error(argv: list[str], capsys) -> tuple[list[str], str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["download", "demo", "--prog", "json", "--timeout", "-1"], "argument --timeout: must be a positive"),
        (["download", "demo", "--progress=json", "--timeout=-1"], "argument --timeout: must be a positive"),
        ([*SEGMENT, "--progres=json", "--bogus"], "unrecognized"),
        ([*SEGMENT, "--progress", "json", "--overlap", "nan"], "overlap"),
        ([*SEGMENT, "--progress", "json", "--precision", "fp8"], "fp8"),
        ([*SEGMENT, "--progress", "json", "--batch-size", "0"], "batch"),
        (["train", "data", "m.unetrpp", "--prog=json", "--seed", "x"], "argument --seed: invalid int"),
        (["train", "data", "m.unetrpp", "--progress", "json", "--iterations", "x"], "--iterations"),
        (["demo", "--progress", "json"], "invalid choice: 'json'"),
        (["evaluate", "a", "b", "--progress", "json"], "unrecognized arguments: --progress json"),
        (["models", "show", "--progress", "json"], "unrecognized arguments"),
    ],
    ids=[
        "download-prefix",
        "download-equals",
        "segment-prefix-equals",
        "segment-nan-overlap",
        "segment-precision",
        "segment-batch",
        "train-prefix-equals",
        "train-iterations",
        "demo-no-json-progress",
        "evaluate-no-progress",
        "models",
    ],
)
def test_a_usage_error_is_one_json_error_event(argv, fragment, capsys):
    lines, stderr = _usage_error(argv, capsys)
    assert len(lines) == 1, lines
    event = json.loads(lines[0])
    assert event["event"] == "error" and event["error_type"] == "UsageError"
    assert fragment in event["message"] and "\n" not in event["message"]
    assert fragment in stderr  # the terminal still gets argparse's usage and error


@pytest.mark.parametrize(
    "argv",
    [
        [*SEGMENT, "--progress", "json", "--progress", "none", "--bogus"],
        [*SEGMENT, "--bogus", "--", "--progress", "json"],
        [*SEGMENT, "--p", "json"],  # ambiguous: --precision too
    ],
    ids=["last-progress-wins", "after-double-dash", "ambiguous-prefix"],
)
def test_no_json_when_the_command_line_does_not_ask_for_it(argv, capsys):
    lines, stderr = _usage_error(argv, capsys)
    assert lines == []
    assert "error:" in stderr
