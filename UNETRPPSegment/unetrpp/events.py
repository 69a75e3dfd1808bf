"""Progress events: how long-running functions talk to users (terminal bar, JSON lines, Slicer GUI).

Logging is for developers; events are for users. A function that runs long takes
``on_event: EventCallback | None`` and reports stages, ``done``/``total`` counts and warnings.
With ``--progress json`` the CLI writes each event as one JSON object per line on stdout:

    {"event": "stage", "stage": "preprocess", "message": "Resampling to 0.76 x 0.76 x 3.00 mm"}
    {"event": "progress", "stage": "inference", "done": 12, "total": 49, "elapsed_seconds": 3.1,
     "eta_seconds": 9.5}
    {"event": "warning", "message": "..."}
    {"event": "result", "output": "/path/out.seg.nrrd", "structures": [...]}
    {"event": "error", "message": "...", "error_type": "InputImageError"}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

__all__ = [
    "Event",
    "StageEvent",
    "ProgressEvent",
    "WarningEvent",
    "ResultEvent",
    "ErrorEvent",
    "EventCallback",
    "JsonLinesEmitter",
    "ProgressTracker",
    "emit",
    "warn",
]


@dataclass(frozen=True)
class Event:
    """Base class; ``kind`` is the value of the ``event`` key in JSON."""

    kind = "event"

    def to_json(self) -> str:
        return json.dumps({"event": self.kind, **asdict(self)}, default=str)


@dataclass(frozen=True)
class StageEvent(Event):
    stage: str
    message: str = ""
    kind = "stage"


@dataclass(frozen=True)
class ProgressEvent(Event):
    stage: str
    done: int
    total: int
    elapsed_seconds: float = 0.0
    eta_seconds: float | None = None
    kind = "progress"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class WarningEvent(Event):
    message: str
    kind = "warning"


@dataclass(frozen=True)
class ResultEvent(Event):
    output: str
    structures: list[dict[str, Any]] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    dicom_seg: str | None = None  # the DICOM SEG written beside the .seg.nrrd (segment --dicom-seg)
    kind = "result"


@dataclass(frozen=True)
class ErrorEvent(Event):
    message: str
    error_type: str = "UnetrppError"
    kind = "error"


EventCallback = Callable[[Event], None]


def emit(on_event: EventCallback | None, event: Event) -> None:
    """Send ``event`` to ``on_event`` if there is a listener."""
    if on_event is not None:
        on_event(event)


def warn(on_event: EventCallback | None, message: str, logger: logging.Logger) -> None:
    """A WarningEvent to ``on_event``, or ``message`` logged on ``logger`` when nobody listens (never
    both: the CLI prints events, so a logged copy would show twice)."""
    if on_event is None:
        logger.warning("%s", message)
    emit(on_event, WarningEvent(message))


class JsonLinesEmitter:
    """An ``on_event`` callback writing one JSON object per line, flushed at once (the Slicer
    module reads the child's stdout line by line while it runs)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def __call__(self, event: Event) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()


class ProgressTracker:
    """Counts work units of one stage and emits :class:`ProgressEvent` with elapsed time and ETA.

    The total is known up front (e.g. the tile count), so listeners can show real percentages.
    """

    def __init__(self, on_event: EventCallback | None, stage: str, total: int) -> None:
        self._on_event = on_event
        self._stage = stage
        self._total = total
        self._done = 0
        self._start = time.perf_counter()
        emit(on_event, ProgressEvent(stage, 0, total))

    def advance(self, count: int = 1) -> None:
        self._done += count
        elapsed = time.perf_counter() - self._start
        eta = elapsed / self._done * (self._total - self._done) if self._done else None
        emit(
            self._on_event,
            ProgressEvent(self._stage, self._done, self._total, round(elapsed, 3), eta and round(eta, 3)),
        )
