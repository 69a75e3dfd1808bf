"""The "time left" the progress bar and the Slicer panel show (``eta_seconds`` of progress events)."""

from __future__ import annotations

import pytest
from unetrpp import events
from unetrpp.events import ProgressEvent, ProgressTracker


class _Clock:
    """A perf_counter that moves only when the test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_mean_time_per_unit_so_far_times_the_units_left(monkeypatch):
    clock = _Clock(100.0)
    monkeypatch.setattr(events.time, "perf_counter", clock)
    received: list[ProgressEvent] = []
    tracker = ProgressTracker(received.append, "inference", total=4)
    clock.now = 102.0
    tracker.advance()  # 1 of 4 tiles in 2 s: 3 left at 2 s each
    clock.now = 105.0
    tracker.advance(2)  # 3 of 4 in 5 s: 1 left at 5/3 s
    clock.now = 106.0
    tracker.advance()
    assert [(e.done, e.total) for e in received] == [(0, 4), (1, 4), (3, 4), (4, 4)]
    assert received[0].eta_seconds is None  # nothing done yet: no estimate
    assert received[1].elapsed_seconds == pytest.approx(2.0) and received[1].eta_seconds == pytest.approx(6.0)
    assert received[2].eta_seconds == pytest.approx(5.0 / 3.0, abs=1e-3)
    assert received[3].eta_seconds == pytest.approx(0.0) and received[3].elapsed_seconds == pytest.approx(6.0)


def test_eta_crosses_the_process_boundary_in_the_json_event():
    event = ProgressEvent("inference", 1, 4, 2.0, 6.0)
    assert '"eta_seconds": 6.0' in event.to_json() and '"elapsed_seconds": 2.0' in event.to_json()
