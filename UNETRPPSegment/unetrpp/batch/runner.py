"""``run_batch()``: segment every case of a cohort with one loaded model, resumable after any stop.

The model is loaded once. The runner decides which cases are already done, hands the others to an
executor (:mod:`unetrpp.batch.pipelined` in this process, the default; :mod:`unetrpp.batch.ray_executor`
on a Ray cluster) and keeps the journal (:mod:`unetrpp.batch.report`): a row as each case starts and one
after its last output, so a second run of the same command skips what is done and redoes what was cut
short. Each case writes ``<case>.seg.nrrd`` (and, when asked, ``<case>.labels.nii.gz``,
``<case>.summary.json``, ``<case>.seg.dcm``) through :mod:`unetrpp.atomic`. A case that fails
(unreadable, too small, not the model's modality, a full disk) is recorded with its one-line error and
the run goes on; only Ctrl-C, SIGTERM or SIGKILL stop it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from unetrpp.batch.cases import find_cases
from unetrpp.batch.events import BatchResultEvent, CaseDoneEvent, CaseStartEvent
from unetrpp.batch.jobs import CaseJob, CaseOutcome
from unetrpp.batch.pipelined import run_pipelined
from unetrpp.batch.ray_options import RayOptions, require_ray
from unetrpp.batch.report import (
    REPORT_JSON,
    CaseReport,
    Journal,
    case_fingerprint,
    file_identity,
    run_fingerprint,
    write_report,
)
from unetrpp.errors import BatchInputError, OutputExistsError
from unetrpp.events import Event, EventCallback, emit
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = ["EXECUTORS", "BatchReport", "run_batch"]

EXECUTORS = ("local", "ray")


# A file written by an interrupted case is at least this much newer than its journal line (coarse
# file-system clocks lag the system clock by a few milliseconds).
_CLOCK_SLACK_NS = 1_000_000_000


@dataclass(frozen=True)
class BatchReport:
    """What :func:`run_batch` did: one row per case (in name order) and the report files."""

    cases: tuple[CaseReport, ...]
    report_csv: Path
    report_json: Path
    elapsed_seconds: float

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.cases)

    @property
    def failed(self) -> tuple[CaseReport, ...]:
        return tuple(row for row in self.cases if row.status == "failed")


def run_batch(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    model: str | Path | LoadedModel,
    options: SegmentOptions | None = None,
    *,
    labelmap: bool = False,
    summary: bool = False,
    dicom_seg: bool = False,
    overwrite: bool = False,
    executor: str = "local",
    ray_options: RayOptions | None = None,
    on_event: EventCallback | None = None,
) -> BatchReport:
    """Segment every case of ``source`` into ``output_dir``; cases done by an earlier run are skipped.

    Args:
        source: a folder of cases or a CSV listing them (:func:`unetrpp.batch.cases.find_cases`).
        output_dir: where ``<case>.seg.nrrd``, the journal and the reports go (created if missing).
        model: registry name, weights file or a :class:`LoadedModel`; loaded once for all cases.
        options: per-case options as for :func:`unetrpp.segment`; an input that does not look like the
            model's modality fails its case unless ``check_modality`` is False.
        labelmap: also write ``<case>.labels.nii.gz``.
        summary: also write ``<case>.summary.json`` (per-structure volumes).
        dicom_seg: also write ``<case>.seg.dcm``, a DICOM Segmentation referencing the case's source
            series (``unetrpp.labels.dicom_seg``); a case that is not a DICOM folder, or whose series
            cannot carry a SEG, fails before its inference. Needs the ``[dicom]`` extra.
        overwrite: replace outputs this batch did not write (its own are replaced when their case re-runs).
        executor: ``local`` (default: this process, reading and writing overlapped with inference) or
            ``ray`` (each case a task on a Ray cluster; needs the ``[ray]`` extra and ``ray_options``).
        ray_options: the cluster address and per-worker resources for ``executor="ray"``.
        on_event: receives ``case_start``/``case_done`` events, each case's events wrapped in
            :class:`~unetrpp.batch.events.CaseEvent`, and a ``batch_result`` event at the end; calls
            come from one thread at a time, not always the caller's.

    Raises:
        BatchInputError: no usable case list, an unknown executor, or the output folder is a file.
        ModelNotFoundError, CheckpointError, UnetrppError: the model or an option is unusable.
    """
    started = time.perf_counter()
    if executor not in EXECUTORS:
        raise BatchInputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        require_ray()  # one line naming the extra, before the model loads
    if dicom_seg:
        from unetrpp.labels.dicom_seg import require_highdicom

        require_highdicom()  # one line naming the extra, before any case
    on_event = _one_at_a_time(on_event)
    options = options if options is not None else SegmentOptions()
    options = dataclasses.replace(options, refuse_wrong_modality=options.check_modality)
    folder = _output_folder(output_dir)
    loaded = model if isinstance(model, LoadedModel) else _load(model, on_event)
    cases = find_cases(source, loaded.card, folder)
    extras = (("labels.nii.gz", labelmap), ("summary.json", summary), ("seg.dcm", dicom_seg))
    kinds = ("seg.nrrd", *(kind for kind, asked in extras if asked))
    run = run_fingerprint(loaded, options, kinds)
    journal = Journal(folder)
    journal.compact()
    rows = {case.name: CaseReport(case.name, "not_run", tuple(map(str, case.inputs))) for case in cases}
    progress = _Progress(len(cases), on_event)
    jobs = []
    for index, case in enumerate(cases, start=1):
        paths = {kind: folder / f"{case.name}.{kind}" for kind in kinds}
        job = CaseJob(case, paths, case_fingerprint(run, case), index, len(cases))
        settled = _settled(job, journal.latest(case.name), overwrite)
        if settled is None:
            jobs.append(job)
        else:
            rows[case.name] = settled
            progress.started(job)
            progress.ended(job, settled, rows)

    started_ns: dict[str, int] = {}

    def on_start(job: CaseJob) -> None:
        started_ns[job.case.name] = time.time_ns()
        inputs = tuple(map(str, job.case.inputs))
        journal.append(
            CaseReport(
                job.case.name,
                "running",
                inputs,
                fingerprint=job.fingerprint,
                started_ns=started_ns[job.case.name],
            )
        )
        progress.started(job)

    def on_outcome(job: CaseJob, outcome: CaseOutcome) -> None:
        row = _row(job, outcome, started_ns[job.case.name])
        journal.append(row)
        rows[job.case.name] = row
        progress.ended(job, row, rows, computed=len(jobs))

    try:
        if executor == "ray":
            from unetrpp.batch.ray_executor import run_on_ray

            run_on_ray(jobs, loaded, options, on_start, on_outcome, ray_options or RayOptions())
        else:
            run_pipelined(jobs, loaded, options, on_start, on_outcome, on_event)
    finally:
        elapsed = time.perf_counter() - started
        report_csv, report_json = write_report(folder, run, list(rows.values()), elapsed)
    report = BatchReport(tuple(rows.values()), report_csv, report_json, elapsed)
    emit(
        on_event,
        BatchResultEvent(
            report.count("done"),
            report.count("skipped"),
            len(report.failed),
            len(cases),
            round(elapsed, 3),
            str(report_csv),
            str(report_json),
        ),
    )
    return report


class _Progress:
    """``case_start`` and ``case_done`` events, the latter with the failures so far and an ETA from the
    computed cases' throughput (cases overlap, so their own times would overstate it)."""

    def __init__(self, total: int, on_event: EventCallback | None) -> None:
        self._total, self._on_event = total, on_event
        self._first_start: float | None = None
        self._computed = 0

    def started(self, job: CaseJob) -> None:
        emit(self._on_event, CaseStartEvent(job.case.name, job.index, self._total))

    def ended(
        self, job: CaseJob, row: CaseReport, rows: dict[str, CaseReport], computed: int | None = None
    ) -> None:
        eta = None
        if computed is not None:  # a computed case, out of ``computed`` in this run
            now = time.perf_counter()
            self._first_start = self._first_start if self._first_start is not None else now - row.seconds
            self._computed += 1
            eta = round((now - self._first_start) / self._computed * (computed - self._computed), 3)
        failed = sum(r.status == "failed" for r in rows.values())
        output = str(job.paths["seg.nrrd"]) if row.status != "failed" else None
        event = CaseDoneEvent(
            job.case.name,
            job.index,
            self._total,
            row.status,
            row.seconds,
            output,
            row.error,
            row.error_type,
            list(row.structures),
            failed,
            eta,
        )
        emit(self._on_event, event)


def _one_at_a_time(on_event: EventCallback | None) -> EventCallback | None:
    """``on_event`` behind a lock: the pipelined stages emit from their own threads."""
    if on_event is None:
        return None
    lock = threading.Lock()

    def serialised(event: Event) -> None:
        with lock:
            on_event(event)

    return serialised


def _settled(job: CaseJob, previous: CaseReport | None, overwrite: bool) -> CaseReport | None:
    """The case's row when it needs no computing: skipped (done by an earlier run with the same
    fingerprint, its outputs untouched) or failed (an output this batch did not write is in the way)."""
    if _is_done(previous, job.fingerprint, job.paths):
        return dataclasses.replace(previous, status="skipped", seconds=0.0)
    foreign = [p for p in job.paths.values() if p.exists() and not _written_by_us(previous, p)]
    if foreign and not overwrite:
        error = OutputExistsError(f"{foreign[0]} exists and this batch did not write it; pass --overwrite")
        inputs = tuple(map(str, job.case.inputs))
        kind = type(error).__name__
        return CaseReport(job.case.name, "failed", inputs, str(error), kind, fingerprint=job.fingerprint)
    return None


def _row(job: CaseJob, outcome: CaseOutcome, started_ns: int) -> CaseReport:
    """The journal row of a computed case; a done case records its files' identities for resuming."""
    outputs = {}
    if outcome.status == "done":
        outputs = {p.name: identity for p in job.paths.values() if (identity := file_identity(p)) is not None}
    return CaseReport(
        job.case.name,
        outcome.status,
        tuple(map(str, job.case.inputs)),
        outcome.error,
        outcome.error_type,
        outcome.seconds,
        outputs,
        outcome.structures,
        outcome.warnings,
        job.fingerprint,
        started_ns,
    )


def _output_folder(output_dir: str | os.PathLike[str]) -> Path:
    from unetrpp.pipeline.predictor import check_writable_folder

    folder = Path(output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise BatchInputError(f"output folder {folder} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    check_writable_folder(folder / REPORT_JSON)
    return folder


def _load(model: str | Path, on_event: EventCallback | None) -> LoadedModel:
    from unetrpp.models.loader import load_model

    return load_model(model, on_event=on_event)


def _is_done(previous: CaseReport | None, fingerprint: str, paths: dict[str, Path]) -> bool:
    return (
        previous is not None
        and previous.status == "done"
        and previous.fingerprint == fingerprint
        and set(previous.outputs) == {p.name for p in paths.values()}
        and all(file_identity(p) == previous.outputs[p.name] for p in paths.values())
    )


def _written_by_us(previous: CaseReport | None, path: Path) -> bool:
    """Whether the existing ``path`` is this batch's: recorded by its case's last ``done`` row, or
    written after the start of its case's last run that did not finish (killed or failed)."""
    if previous is None:
        return False
    identity = file_identity(path)
    if previous.outputs.get(path.name) == identity:
        return True
    return (
        previous.status in ("running", "failed")
        and previous.started_ns is not None
        and identity is not None
        and identity[1] >= previous.started_ns - _CLOCK_SLACK_NS
    )
