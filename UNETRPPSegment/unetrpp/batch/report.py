"""What a cohort run remembers: fingerprints, the journal of cases, and the report written from it.

The journal (``batch_journal.jsonl`` in the output folder) is the durable record: one JSON line per
event of a case, appended and synced to the disk before the run goes on. A ``running`` line is written
before a case starts and a ``done`` or ``failed`` line after its last output is renamed into place, so a
kill or a power cut at any moment leaves either a finished case with its line, or a case whose last
line is ``running`` (redone by the next run). A torn last line (power cut mid-write) is ignored.

A case is done when its latest line is ``done``, that line's fingerprint is the current one, and every
output it lists still exists with the size and modification time recorded. The fingerprint covers what
decides the result: the model's name and the SHA256 of its weights, every segmentation option, which
outputs are written, the package version, and each input file's name, size and modification time.

``batch_report.csv`` and ``batch_report.json`` are written (atomically) from the journal when the run
ends, also when it is interrupted; after a kill the next run writes them.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetrpp.atomic import write_bytes_atomically
from unetrpp.batch.cases import Case
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = [
    "JOURNAL_NAME",
    "REPORT_CSV",
    "REPORT_JSON",
    "CaseReport",
    "Journal",
    "case_fingerprint",
    "file_identity",
    "run_fingerprint",
    "write_report",
]

JOURNAL_NAME = "batch_journal.jsonl"
REPORT_CSV = "batch_report.csv"
REPORT_JSON = "batch_report.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CaseReport:
    """One case's row: ``status`` is ``done``, ``skipped`` (done by an earlier run with the same
    fingerprint), ``failed`` (``error`` says why in one line), ``running`` (journal only: begun, not
    finished) or ``not_run`` (the run was interrupted before it).

    ``outputs`` maps each output's file name to its [size, modification time in ns]; ``structures``
    holds label value, name, voxels and mL per structure; ``started_ns`` is when the case began (epoch).
    """

    case: str
    status: str
    inputs: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    outputs: dict[str, list[int]] = field(default_factory=dict)
    structures: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    fingerprint: str | None = None
    started_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseReport:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        for key in ("inputs", "structures", "warnings"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


def file_identity(path: Path) -> list[int] | None:
    """[size, modification time in ns] of a file, or None when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def run_fingerprint(loaded: LoadedModel, options: SegmentOptions, outputs: tuple[str, ...]) -> dict[str, Any]:
    """What every case of this run shares and that decides its result (recorded in the report)."""
    from unetrpp import __version__

    return {
        "model": loaded.card.name,
        "weights_sha256": _weights_sha256(loaded),
        "options": {f.name: _plain(getattr(options, f.name)) for f in dataclasses.fields(options)},
        "outputs": list(outputs),
        "unetrpp_version": __version__,
    }


def case_fingerprint(run: dict[str, Any], case: Case) -> str:
    """SHA256 of the run's fingerprint and the identity of the case's input files (name, size, mtime:
    a replaced scan re-runs its case; a moved input folder does not)."""
    inputs = [_input_identity(path) for path in case.inputs]
    text = json.dumps({"run": run, "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _input_identity(path: Path) -> list[Any]:
    if path.is_dir():  # a DICOM series: every file below it
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [path.name, [[str(p.relative_to(path)), file_identity(p)] for p in files]]
    return [path.name, file_identity(path)]


def _weights_sha256(loaded: LoadedModel) -> str:
    """SHA256 of the weights file, or of the tensors of a model built in memory."""
    digest = hashlib.sha256()
    if loaded.source is not None and Path(loaded.source).is_file():
        with open(loaded.source, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    for name, tensor in sorted(loaded.network.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


class Journal:
    """The append-only record of the cases in one output folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL_NAME
        self._latest: dict[str, CaseReport] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                row = CaseReport.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue  # a line torn by a power cut
            self._latest[row.case] = row

    def latest(self, case: str) -> CaseReport | None:
        """The case's last recorded row, or None for a case never started here."""
        return self._latest.get(case)

    def append(self, row: CaseReport) -> None:
        """Record ``row``, synced to the disk before returning."""
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self._latest[row.case] = row

    def compact(self) -> None:
        """Rewrite the journal with the latest row of each case (atomically), so it does not grow with
        every resumed run."""
        if not self._latest and not self.path.exists():
            return
        text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in self._latest.values())
        write_bytes_atomically(self.path, text.encode("utf-8"))


def write_report(
    folder: Path, run: dict[str, Any], rows: list[CaseReport], elapsed: float
) -> tuple[Path, Path]:
    """Write ``batch_report.json`` (everything) and ``batch_report.csv`` (one row per case, one mL
    column per structure) atomically; return their paths."""
    counts = {
        status: sum(r.status == status for r in rows) for status in ("done", "skipped", "failed", "not_run")
    }
    document = {
        **run,
        "counts": counts,
        "elapsed_seconds": round(elapsed, 3),
        "cases": [{k: v for k, v in r.to_dict().items() if k not in ("started_ns",)} for r in rows],
    }
    json_path, csv_path = folder / REPORT_JSON, folder / REPORT_CSV
    write_bytes_atomically(json_path, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"))
    names = list(dict.fromkeys(s["name"] for r in rows for s in r.structures))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "status", "error", "seconds", "output", "warnings", *(f"{n} mL" for n in names)])
    for r in rows:
        volumes = {s["name"]: s["volume_ml"] for s in r.structures}
        output = next((name for name in r.outputs if name.endswith(".seg.nrrd")), "")
        cells = [f"{volumes[n]:.3f}" if n in volumes else "" for n in names]
        writer.writerow(
            [r.case, r.status, r.error or "", f"{r.seconds:.3f}", output, " | ".join(r.warnings), *cells]
        )
    write_bytes_atomically(csv_path, buffer.getvalue().encode("utf-8"))
    return csv_path, json_path
