"""One case of a cohort as a unit of work: what an executor is given (:class:`CaseJob`), what it gives
back (:class:`CaseOutcome`), and the steps that turn one into the other.

The steps are plain functions of picklable data, so the same code runs a case in this process (the
pipelined executor, :mod:`unetrpp.batch.pipelined`) and in a Ray worker on another node
(:mod:`unetrpp.batch.ray_executor`). A failure of the case becomes its outcome, never an exception,
except a cancellation, which stops the run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetrpp.atomic import write_bytes_atomically, write_image_atomically
from unetrpp.batch.cases import Case
from unetrpp.batch.events import CaseEvent
from unetrpp.errors import Cancelled, UnetrppError
from unetrpp.events import Event, EventCallback, ResultEvent, WarningEvent, emit
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = ["CaseJob", "CaseOutcome", "CaseRun", "failure_outcome", "run_job"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseJob:
    """A case to compute: its inputs, the output path of each kind (``seg.nrrd`` always, then the extras
    asked for), and the fingerprint its journal rows carry."""

    case: Case
    paths: dict[str, Path]
    fingerprint: str
    index: int
    total: int


@dataclass(frozen=True)
class CaseOutcome:
    """How a computed case ended: ``done`` with its structures' volumes, or ``failed`` with a one-line
    error; the warnings it raised and its wall time either way."""

    status: str
    seconds: float
    structures: tuple[dict, ...] = ()
    error: str | None = None
    error_type: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class CaseRun:
    """A case between its steps (:meth:`prepare`, :meth:`infer`, :meth:`finish`), and the first failure
    of any of them; each step after a failure does nothing."""

    job: CaseJob
    on_event: EventCallback | None = None
    started: float = field(default_factory=time.perf_counter)
    warnings: list[str] = field(default_factory=list)
    failure: CaseOutcome | None = None
    _prepared: Any = None
    _logits: Any = None
    _dicom_source: Any = None

    def prepare(self, loaded: LoadedModel, options: SegmentOptions) -> None:
        """Check the DICOM source when a SEG is asked for, then read and preprocess the inputs."""
        from unetrpp.pipeline.predictor import prepare_case

        def step() -> None:
            if "seg.dcm" in self.job.paths:
                self._dicom_source = _checked_dicom_source(self.job.case, options)
            seg_nrrd = self.job.paths["seg.nrrd"]
            # overwrite: an existing output is this batch's (the runner refused any other)
            inputs = list(self.job.case.inputs)
            self._prepared = prepare_case(inputs, loaded, seg_nrrd, options, self._tagged, overwrite=True)

        self._guard(step)

    def infer(self) -> None:
        """The sliding window; the prepared arrays are released as soon as it has them."""
        from unetrpp.pipeline.predictor import infer_case

        def step() -> None:
            self._logits = infer_case(self._prepared, self._tagged)

        self._guard(step)

    def finish(self) -> CaseOutcome:
        """Back onto the input grid, then every output file; the case's outcome."""
        from unetrpp.pipeline.predictor import finish_case

        structures: tuple[dict, ...] = ()

        def step() -> None:
            nonlocal structures
            logits, self._logits = self._logits, None
            result = finish_case(self._prepared, logits, self._tagged)
            del logits
            self._prepared = None
            structures = _write_extras(self.job, result, self._dicom_source)

        self._guard(step)
        if self.failure is not None:
            return self.failure
        return CaseOutcome("done", self._seconds(), structures, warnings=tuple(self.warnings))

    def _guard(self, step: Callable[[], None]) -> None:
        if self.failure is not None:
            return
        try:
            step()
        except Cancelled:
            raise
        except Exception as error:  # KeyboardInterrupt and SystemExit are not: they stop the run
            self._prepared = self._logits = None
            message, kind = failure_outcome(error, self.job.case.name)
            self.failure = CaseOutcome("failed", self._seconds(), (), message, kind, tuple(self.warnings))

    def _tagged(self, event: Event) -> None:
        """Keep warnings for the row; forward every event but the case's own result (``case_done``
        carries it) with the case's name."""
        if isinstance(event, WarningEvent):
            self.warnings.append(event.message)
        if not isinstance(event, ResultEvent):
            emit(self.on_event, CaseEvent(self.job.case.name, event))

    def _seconds(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def run_job(
    job: CaseJob, loaded: LoadedModel, options: SegmentOptions, on_event: EventCallback | None = None
) -> CaseOutcome:
    """Compute one case start to end in this process (how a Ray worker runs it)."""
    run = CaseRun(job, on_event)
    run.prepare(loaded, options)
    run.infer()
    return run.finish()


def failure_outcome(error: Exception, case: str) -> tuple[str, str]:
    """(one-line message, error type) for a failed case; an unexpected error is logged with its traceback,
    since a bug shown by one case must not cost the cohort."""
    if isinstance(error, UnetrppError):
        return _one_line(error), type(error).__name__
    if isinstance(error, MemoryError):
        from unetrpp.pipeline.memory import out_of_memory_message

        return out_of_memory_message("the case", error), "MemoryError"
    logger.error("case %s failed", case, exc_info=error)
    return f"internal error: {_one_line(error)}", type(error).__name__


def _write_extras(job: CaseJob, result: Any, dicom_source: Any) -> tuple[dict, ...]:
    """The outputs after the .seg.nrrd (which ``finish_case`` wrote first, as ``segment`` does)."""
    paths = job.paths
    if dicom_source is not None:
        from unetrpp.labels.dicom_seg import write_dicom_seg

        write_dicom_seg(
            result.label_map,
            result.structures,
            dicom_source,
            paths["seg.dcm"],
            model_name=result.model.name,
            overwrite=True,
        )
    if "labels.nii.gz" in paths:
        write_image_atomically(result.label_map, paths["labels.nii.gz"])
    if "summary.json" in paths:
        inputs = [str(p) for p in job.case.inputs]
        summary = {"case": job.case.name, "inputs": inputs, **result.summary()}
        write_bytes_atomically(paths["summary.json"], json.dumps(summary, indent=2).encode("utf-8"))
    return tuple(volume.to_dict() for volume in result.volumes)


def _checked_dicom_source(case: Case, options: SegmentOptions) -> Any:
    """The case's DICOM series, checked to carry a SEG, before inference (else the case fails here)."""
    from unetrpp.labels.dicom_seg import check_dicom_source, find_dicom_source

    source = find_dicom_source(case.inputs[0], options.series_uid)
    check_dicom_source(source)
    return source


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
