"""``run_batch()``: segment every case of a cohort with one loaded model, resumable after any stop.

The model is loaded once and handed to :func:`unetrpp.segment` for each case. Each case writes
``<case>.seg.nrrd`` (and, when asked, ``<case>.labels.nii.gz`` and ``<case>.summary.json``) in the
output folder through :mod:`unetrpp.atomic`, and is recorded in the journal (:mod:`unetrpp.batch.report`)
before it starts and after its last output, so a second run of the same command skips what is done and
redoes what was cut short. A case that fails (unreadable, too small, not the model's modality, a full
disk) is recorded with its one-line error and the run goes on; only Ctrl-C, SIGTERM or SIGKILL stop it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from unetrpp.atomic import write_bytes_atomically, write_image_atomically
from unetrpp.batch.cases import Case, find_cases
from unetrpp.batch.events import BatchResultEvent, CaseDoneEvent, CaseEvent, CaseStartEvent
from unetrpp.batch.report import (
    REPORT_JSON,
    CaseReport,
    Journal,
    case_fingerprint,
    file_identity,
    run_fingerprint,
    write_report,
)
from unetrpp.errors import BatchInputError, Cancelled, OutputExistsError, UnetrppError
from unetrpp.events import Event, EventCallback, ResultEvent, WarningEvent, emit
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = ["BatchReport", "run_batch"]

logger = logging.getLogger(__name__)

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
        on_event: receives ``case_start``/``case_done`` events, each case's events wrapped in
            :class:`~unetrpp.batch.events.CaseEvent`, and a ``batch_result`` event at the end.

    Raises:
        BatchInputError: no usable case list, or the output folder is a file.
        ModelNotFoundError, CheckpointError, UnetrppError: the model or an option is unusable.
    """
    started = time.perf_counter()
    if dicom_seg:
        from unetrpp.labels.dicom_seg import require_highdicom

        require_highdicom()  # one line naming the extra, before any case
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
    computed: list[float] = []
    try:
        for index, case in enumerate(cases, start=1):
            emit(on_event, CaseStartEvent(case.name, index, len(cases)))
            paths = {kind: folder / f"{case.name}.{kind}" for kind in kinds}
            row = _run_case(
                case, paths, loaded, options, case_fingerprint(run, case), journal, overwrite, on_event
            )
            rows[case.name] = row
            if row.status != "skipped":
                computed.append(row.seconds)
            left = len(cases) - index
            eta = round(sum(computed) / len(computed) * left, 3) if computed else None
            failed = sum(r.status == "failed" for r in rows.values())
            output = str(paths["seg.nrrd"]) if row.status != "failed" else None
            emit(
                on_event,
                CaseDoneEvent(
                    case.name,
                    index,
                    len(cases),
                    row.status,
                    row.seconds,
                    output,
                    row.error,
                    row.error_type,
                    list(row.structures),
                    failed,
                    eta,
                ),
            )
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


def _run_case(
    case: Case,
    paths: dict[str, Path],
    loaded: LoadedModel,
    options: SegmentOptions,
    fingerprint: str,
    journal: Journal,
    overwrite: bool,
    on_event: EventCallback | None,
) -> CaseReport:
    """Skip the case when it is done, refuse to replace what this batch did not write, else run it and
    record the outcome; any failure of the case is its row, not an exception."""
    inputs = tuple(map(str, case.inputs))
    previous = journal.latest(case.name)
    if _is_done(previous, fingerprint, paths):
        return dataclasses.replace(previous, status="skipped", seconds=0.0)
    foreign = [p for p in paths.values() if p.exists() and not _written_by_us(previous, p)]
    if foreign and not overwrite:
        error = OutputExistsError(f"{foreign[0]} exists and this batch did not write it; pass --overwrite")
        return CaseReport(
            case.name, "failed", inputs, str(error), type(error).__name__, fingerprint=fingerprint
        )

    started_ns = time.time_ns()
    journal.append(CaseReport(case.name, "running", inputs, fingerprint=fingerprint, started_ns=started_ns))
    warnings: list[str] = []
    started = time.perf_counter()
    try:
        structures = _segment_case(case, paths, loaded, options, _tagging(case.name, warnings, on_event))
        status, error, error_type = "done", None, None
    except Cancelled:
        raise
    except UnetrppError as failure:
        status, error, error_type, structures = "failed", _one_line(failure), type(failure).__name__, ()
    except MemoryError as failure:
        from unetrpp.pipeline.memory import out_of_memory_message

        status, error, error_type, structures = (
            "failed",
            out_of_memory_message("the case", failure),
            "MemoryError",
            (),
        )
    except Exception as failure:  # a bug shown by one case must not cost the cohort: logged, recorded
        logger.exception("case %s failed", case.name)
        status, error, error_type = "failed", f"internal error: {_one_line(failure)}", type(failure).__name__
        structures = ()
    outputs = {p.name: identity for p in paths.values() if (identity := file_identity(p)) is not None}
    row = CaseReport(
        case.name,
        status,
        inputs,
        error,
        error_type,
        round(time.perf_counter() - started, 3),
        outputs if status == "done" else {},
        structures,
        tuple(warnings),
        fingerprint,
        started_ns,
    )
    journal.append(row)
    return row


def _segment_case(
    case: Case, paths: dict[str, Path], loaded: LoadedModel, options: SegmentOptions, on_event: EventCallback
) -> tuple[dict, ...]:
    """Write the case's outputs (the .seg.nrrd first, as ``segment`` does); return its structures."""
    from unetrpp.pipeline.predictor import segment

    source = _dicom_source(case, options) if "seg.dcm" in paths else None
    result = segment(list(case.inputs), loaded, paths["seg.nrrd"], options, on_event=on_event, overwrite=True)
    if source is not None:
        from unetrpp.labels.dicom_seg import write_dicom_seg

        labels, structures, path = result.label_map, result.structures, paths["seg.dcm"]
        # overwrite: an existing one is this batch's (_run_case refused any other)
        write_dicom_seg(labels, structures, source, path, model_name=loaded.card.name, overwrite=True)
    if "labels.nii.gz" in paths:
        write_image_atomically(result.label_map, paths["labels.nii.gz"])
    if "summary.json" in paths:
        summary = {"case": case.name, "inputs": [str(p) for p in case.inputs], **result.summary()}
        write_bytes_atomically(paths["summary.json"], json.dumps(summary, indent=2).encode("utf-8"))
    return tuple(volume.to_dict() for volume in result.volumes)


def _dicom_source(case: Case, options: SegmentOptions):
    """The case's DICOM series, checked to carry a SEG, before inference (else the case fails here)."""
    from unetrpp.labels.dicom_seg import check_dicom_source, find_dicom_source

    source = find_dicom_source(case.inputs[0], options.series_uid)
    check_dicom_source(source)
    return source


def _tagging(case: str, warnings: list[str], on_event: EventCallback | None) -> EventCallback:
    """The case's event callback: warnings kept for its row, every event but the case's own result
    (``case_done`` carries it) forwarded with the case's name."""

    def forward(event: Event) -> None:
        if isinstance(event, WarningEvent):
            warnings.append(event.message)
        if not isinstance(event, ResultEvent):
            emit(on_event, CaseEvent(case, event))

    return forward


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


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
