"""``unetrpp batch INPUT OUTPUT_DIR --model M``: a cohort over :func:`unetrpp.batch.run_batch`.

INPUT is a folder (each image file, and each sub-folder holding a DICOM series, is one case named after
it without its image extension) or a CSV with a ``case`` column and one column per model input. Each
case gets ``OUTPUT_DIR/<case>.seg.nrrd`` (``--labelmap``: also ``<case>.labels.nii.gz``; ``--summary``:
``<case>.summary.json``; ``--dicom-seg``: ``<case>.seg.dcm``, for DICOM folder cases), with the per-case
options of ``unetrpp segment``. The model is loaded once; the next case is read, and the previous one
written, while the network runs on the current one. ``--executor ray`` runs the cases on a Ray cluster
instead (:mod:`unetrpp.batch.ray_executor`: what it assumes of the nodes and the storage).

Resume: run the same command again after a crash, a kill or Ctrl-C; a case whose outputs and journal
row (``batch_journal.jsonl``) match the current model, options and inputs is skipped untouched, any other
is (re)done. ``batch_report.csv`` and ``batch_report.json`` list every case when the run ends.

Exit status: 0 every case done or skipped, 3 the run finished and at least one case failed (the report
names each with its one-line error), 2 nothing ran (a bad case list, model or option), 130 Ctrl-C,
143 SIGTERM.

Progress (``--progress``): ``bar`` (default on a terminal) draws one bar over cases on stderr (done/total,
failures, ETA) with the current case's stage below it; ``none`` prints only warnings and failures;
``json`` writes one JSON object per line on stdout. Its events, in order for each case (cases overlap:
the next case's ``case_start`` and its first stages come before this case's ``case_done``; on Ray, cases
end in the order their workers finish them):

``case_start``: a case begins (``index`` counts from 1)::

    {"event": "case_start", "case": "patient 7", "index": 3, "total": 120}

The case's own events, as ``unetrpp segment`` writes them (``stage``, ``progress``, ``warning``; see
:mod:`unetrpp.cli.segment`), each with a ``"case"`` key added; a skipped case has none::

    {"event": "progress", "stage": "inference", "done": 4, "total": 9, "elapsed_seconds": 1.2,
     "eta_seconds": 2.7, "case": "patient 7"}

``case_done``: the case ended; ``status`` is ``done``, ``skipped`` or ``failed`` (then ``error`` and
``error_type`` say why and ``output`` is null); ``failed`` counts failures so far and ``eta_seconds``
estimates the rest of the run from the cases computed so far (null before the first)::

    {"event": "case_done", "case": "patient 7", "index": 3, "total": 120, "status": "done",
     "seconds": 41.2, "output": "out/patient 7.seg.nrrd", "error": null, "error_type": null,
     "structures": [{"label_value": 1, "name": "spleen", "voxels": 12345, "volume_ml": 98.7}, ...],
     "failed": 0, "eta_seconds": 4902.8}

``batch_result``: the last line when the run got through every case (also with failed cases)::

    {"event": "batch_result", "done": 118, "skipped": 0, "failed": 2, "total": 120,
     "elapsed_seconds": 5021.3, "report_csv": "out/batch_report.csv", "report_json": "out/batch_report.json"}

``error``: instead of any of these when nothing can run (exit status 2), as for ``segment``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from unetrpp.cli.segment import add_case_options, case_options, outliving_its_reader, terminate_cleanly
from unetrpp.cli.terminal import print_warnings

__all__ = ["EXIT_CASES_FAILED", "add_parser", "run"]

EXIT_CASES_FAILED = 3


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="segment a cohort (a folder or CSV of cases) with one loaded model; resumable, with a report",
        description="Segment every case of a folder or CSV into OUTPUT_DIR/<case>.seg.nrrd with the model "
        "loaded once. Run the same command again to resume: finished cases are skipped. Exit status 0 all "
        "done, 3 some case failed (see batch_report.csv), 2 nothing could run.",
        epilog="Example: unetrpp batch scans/ results/ --model synapse --progress json",
    )
    parser.add_argument(
        "source",
        metavar="INPUT",
        help="folder of cases (image files, DICOM sub-folders) or a CSV with a 'case' column and one "
        "column per model input",
    )
    parser.add_argument(
        "output_dir", metavar="OUTPUT_DIR", type=Path, help="folder for the outputs and report"
    )
    add_case_options(parser)
    parser.add_argument("--labelmap", action="store_true", help="also write <case>.labels.nii.gz")
    parser.add_argument("--summary", action="store_true", help="also write <case>.summary.json (volumes)")
    parser.add_argument(
        "--dicom-seg",
        action="store_true",
        help="also write <case>.seg.dcm, a DICOM SEG of the case's source series (DICOM folder cases; "
        'pip install "unetrpp[dicom]")',
    )
    _add_executor_options(parser)
    parser.set_defaults(run=run)


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where cases run",
        "local (default): this process, reading and writing overlapped with inference. ray: each case a "
        "task on a Ray cluster, one loaded model per worker; inputs and OUTPUT_DIR must be at the same "
        'paths on every node (pip install "unetrpp[ray]")',
    )
    group.add_argument("--executor", choices=("local", "ray"), default="local", help="default: local")
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="a running cluster (head:6379, ray://head:10001 or auto); default: a local cluster for the run",
    )
    group.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="workers (each holds the model); default: one per GPU of the cluster, else its CPUs / "
        "--ray-cpus-per-worker",
    )
    group.add_argument("--ray-cpus-per-worker", type=float, metavar="N", help="CPUs per worker (default: 2)")
    group.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        metavar="N",
        help="GPUs per worker (default: 1 on a cluster with GPUs, else 0)",
    )


def run(args: argparse.Namespace) -> int:
    from unetrpp.errors import Cancelled
    from unetrpp.events import JsonLinesEmitter

    if args.progress is None:
        args.progress = "bar" if sys.stderr.isatty() else "none"
    if args.progress == "json":
        on_event = outliving_its_reader(JsonLinesEmitter(sys.stdout))
    elif args.progress == "bar":
        on_event = CasesProgress()
    else:
        on_event = _quiet
    try:
        with terminate_cleanly():
            report = _run(args, on_event)
    except KeyboardInterrupt as interrupt:
        raise Cancelled("interrupted") from interrupt
    finally:
        if isinstance(on_event, CasesProgress):
            on_event.close()
    if args.progress != "json":
        print(
            f"{report.count('done')} done, {report.count('skipped')} skipped, {len(report.failed)} failed; "
            f"report: {report.report_csv}"
        )
        for row in report.failed:
            print(f"unetrpp: case {row.case!r} failed: {row.error}", file=sys.stderr)
    return EXIT_CASES_FAILED if report.failed else 0


def _run(args: argparse.Namespace, on_event: Any) -> Any:
    from unetrpp.batch.runner import run_batch

    _refuse_ray_options_without_ray(args)

    return run_batch(
        args.source,
        args.output_dir,
        args.model,
        case_options(args),
        labelmap=args.labelmap,
        summary=args.summary,
        dicom_seg=args.dicom_seg,
        overwrite=args.overwrite,
        executor=args.executor,
        ray_options=_ray_options(args) if args.executor == "ray" else None,
        on_event=on_event,
    )


_RAY_FLAGS = ("address", "workers", "cpus_per_worker", "gpus_per_worker")  # --ray-<name>, RayOptions fields


def _refuse_ray_options_without_ray(args: argparse.Namespace) -> None:
    """A --ray-* option with the local executor would be ignored without a word: refuse it."""
    from unetrpp.errors import BatchInputError

    given = [name for name in _RAY_FLAGS if getattr(args, f"ray_{name}") is not None]
    if given and args.executor != "ray":
        flag = "--ray-" + given[0].replace("_", "-")
        raise BatchInputError(f"{flag} applies to --executor ray only; add --executor ray or drop it")


def _ray_options(args: argparse.Namespace) -> Any:
    """The --ray-* options given; RayOptions' defaults for the others."""
    from unetrpp.batch.ray_options import RayOptions

    given = {name: getattr(args, f"ray_{name}") for name in _RAY_FLAGS}
    return RayOptions(**{name: value for name, value in given.items() if value is not None})


def _quiet(event: Any) -> None:
    """``--progress none``: each case's warnings, named by case."""
    from unetrpp.batch.events import CaseEvent

    if isinstance(event, CaseEvent):
        from unetrpp.events import WarningEvent

        inner = event.inner
        if isinstance(inner, WarningEvent):
            print(f"unetrpp: warning: {event.case}: {inner.message}", file=sys.stderr, flush=True)
    else:
        print_warnings(event)


class CasesProgress:
    """A terminal bar over cases (done/total, failures, ETA) and a line below it with the current case's
    stage and tile count."""

    def __init__(self) -> None:
        self._cases: Any = None
        self._stage: Any = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        from unetrpp.batch.events import CaseDoneEvent, CaseEvent, CaseStartEvent
        from unetrpp.events import ProgressEvent, StageEvent, WarningEvent

        if isinstance(event, CaseStartEvent):
            if self._cases is None:
                self._cases = tqdm(total=event.total, desc="cases", unit="case", file=sys.stderr, position=0)
                self._stage = tqdm(bar_format="{desc}", file=sys.stderr, position=1)
            self._stage.set_description_str(f"{event.case}: starting")
        elif isinstance(event, CaseDoneEvent):
            self._cases.set_postfix(failed=event.failed, refresh=False)
            self._cases.update(1)
            if event.status == "failed":
                tqdm.write(f"unetrpp: case {event.case!r} failed: {event.error}", file=sys.stderr)
        elif isinstance(event, CaseEvent):
            inner = event.inner
            if isinstance(inner, WarningEvent):
                tqdm.write(f"unetrpp: warning: {event.case}: {inner.message}", file=sys.stderr)
            elif isinstance(inner, StageEvent):
                self._stage.set_description_str(f"{event.case}: {inner.stage}")
            elif isinstance(inner, ProgressEvent):
                self._stage.set_description_str(f"{event.case}: {inner.stage} {inner.done}/{inner.total}")
        else:
            print_warnings(event)

    def close(self) -> None:
        """End both bars."""
        for bar in (self._stage, self._cases):
            if bar is not None:
                bar.close()
        self._cases = self._stage = None
