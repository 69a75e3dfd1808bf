"""The events of a cohort run (schema in :mod:`unetrpp.cli.batch`): a case starts, a case ends, the run
ends, and every event of a case's own run tagged with the case's name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from unetrpp.events import Event

__all__ = ["BatchResultEvent", "CaseDoneEvent", "CaseEvent", "CaseStartEvent"]


@dataclass(frozen=True)
class CaseStartEvent(Event):
    case: str
    index: int  # 1-based position among all cases
    total: int
    kind = "case_start"


@dataclass(frozen=True)
class CaseDoneEvent(Event):
    case: str
    index: int
    total: int
    status: str  # done, skipped or failed
    seconds: float
    output: str | None = None
    error: str | None = None
    error_type: str | None = None
    structures: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0  # failures so far, this one included
    eta_seconds: float | None = None  # for the cases left, from the cases computed so far
    kind = "case_done"


@dataclass(frozen=True)
class CaseEvent(Event):
    """An event of one case's segmentation (stage, progress, warning) with the case's name added."""

    case: str
    inner: Event
    kind = "case"

    def to_json(self) -> str:
        return json.dumps({**json.loads(self.inner.to_json()), "case": self.case}, default=str)


@dataclass(frozen=True)
class BatchResultEvent(Event):
    done: int
    skipped: int
    failed: int
    total: int
    elapsed_seconds: float
    report_csv: str
    report_json: str
    kind = "batch_result"
