"""ProcessRunner with real child processes: JSON-line events, errors, and cancelling a process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from unetrpp.events import ErrorEvent, ProgressEvent, ResultEvent, StageEvent
from UNETRPPSegmentLib.process import ProcessRunner, RunState, event_from_json, is_running


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def _run(command: list[str]) -> tuple[ProcessRunner, list, list[str]]:
    events, logs = [], []
    runner = ProcessRunner(command, on_event=events.append, on_log=logs.append)
    runner.start()
    runner.wait(timeout_seconds=30)
    return runner, events, logs


def test_json_lines_become_events_and_other_lines_become_log(tmp_path):
    runner, events, logs = _run(
        _script(
            tmp_path,
            """
            import json, sys
            print(json.dumps({"event": "stage", "stage": "preprocess", "message": "Résampling"}), flush=True)
            for done in range(4):
                print(json.dumps({"event": "progress", "stage": "inference", "done": done, "total": 3,
                                  "eta_seconds": None, "future_key": 1}), flush=True)
            print("not json", flush=True)
            print("a log line on stderr", file=sys.stderr, flush=True)
            result = {"event": "result", "output": "out.seg.nrrd", "structures": [{"name": "liver"}]}
            print(json.dumps(result))
            """,
        )
    )
    assert runner.state is RunState.IMPORTING and runner.returncode == 0
    assert events[0] == StageEvent("preprocess", "Résampling")
    progress = [event for event in events if isinstance(event, ProgressEvent)]
    assert [event.done for event in progress] == [0, 1, 2, 3]
    assert isinstance(events[-1], ResultEvent) and runner.result.structures == [{"name": "liver"}]
    assert "not json" in logs and "a log line on stderr" in logs
    runner.finish()
    assert runner.state is RunState.IDLE


def test_error_event_gives_the_one_line_message(tmp_path):
    runner, events, _ = _run(
        _script(
            tmp_path,
            """
            import json, sys
            error = {"event": "error", "message": "input.nrrd is 2D", "error_type": "InputImageError"}
            print(json.dumps(error))
            print("unetrpp: error: input.nrrd is 2D", file=sys.stderr)
            sys.exit(2)
            """,
        )
    )
    assert runner.state is RunState.FAILED and runner.returncode == 2
    assert runner.error_message == "input.nrrd is 2D"
    assert events == [ErrorEvent("input.nrrd is 2D", "InputImageError")]


def test_crash_without_error_event_reports_last_stderr_line(tmp_path):
    runner, _, logs = _run(_script(tmp_path, "raise RuntimeError('boom in child')\n"))
    assert runner.state is RunState.FAILED and runner.returncode == 1
    assert runner.error_message == "RuntimeError: boom in child"
    assert any("Traceback" in line for line in logs)


def test_missing_program_fails_without_raising(tmp_path):
    runner = ProcessRunner([str(tmp_path / "no-such-program")])
    runner.start()
    assert runner.state is RunState.FAILED
    assert "could not start" in runner.error_message


def test_cancel_kills_child_and_grandchild(tmp_path):
    # Both would sleep ten minutes, far past the 30 s deadline below: gone within it means killed.
    command = _script(
        tmp_path,
        """
        import json, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        stage = {"event": "stage", "stage": "inference", "message": str(grandchild.pid)}
        print(json.dumps(stage), flush=True)
        time.sleep(600)
        """,
    )
    events = []
    runner = ProcessRunner(command, on_event=events.append)
    runner.start()
    deadline = time.monotonic() + 20
    while not events and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    assert events, "the child never reported its grandchild"
    tree = [psutil.Process(runner.pid), psutil.Process(int(events[0].message))]
    try:
        runner.cancel()
        runner.wait(timeout_seconds=30)
        # Measured well under a second; the deadline is generous for a loaded 2-core CI machine.
        deadline = time.monotonic() + 30
        while any(is_running(process) for process in tree):
            assert time.monotonic() < deadline, "the process tree survived the cancel"
            time.sleep(0.02)
    finally:
        for process in tree:  # nothing left behind if the test fails
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    if os.name == "posix":
        assert runner.returncode == -signal.SIGKILL  # killed, not exited
    assert runner.state is RunState.CANCELLED
    assert runner.error_message == ""


def test_start_twice_is_refused(tmp_path):
    runner = ProcessRunner(_script(tmp_path, "pass\n"))
    runner.start()
    with pytest.raises(RuntimeError, match="not idle"):
        runner.start()
    runner.wait(timeout_seconds=30)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"event": "warning", "message": "low memory"}', "WarningEvent"),
        ('{"event": "progress", "stage": "x"}', None),  # missing done/total: not an event
        ('{"event": "unknown"}', None),
        ("[1, 2]", None),
        ("Traceback (most recent call last):", None),
    ],
    ids=["warning", "incomplete", "unknown-kind", "not-object", "plain-text"],
)
def test_event_from_json(line, expected):
    event = event_from_json(line)
    assert (type(event).__name__ if event is not None else None) == expected
