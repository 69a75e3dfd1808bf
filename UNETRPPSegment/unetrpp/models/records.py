"""``record.json``: what was installed in one model folder, so later corruption can be detected."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetrpp.atomic import atomic_output

__all__ = ["RECORD_NAME", "WeightsRecord", "read_record", "write_record", "utc_now"]

logger = logging.getLogger(__name__)

RECORD_NAME = "record.json"


@dataclass(frozen=True)
class WeightsRecord:
    """What was installed for one model, written next to the weights as ``record.json``.

    Attributes:
        filename: the weights file inside the model folder.
        format: ``official`` or ``unetrpp`` (see :class:`~unetrpp.models.cards.WeightsSource`).
        source: the URL it was downloaded from, or the ``file:`` URI it was imported from.
        sha256: hex digest of the installed file, computed while installing.
        installed_at: ISO 8601 UTC time of installation.
    """

    name: str
    filename: str
    format: str
    source: str
    sha256: str
    size_bytes: int
    installed_at: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsRecord:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def read_record(folder: Path) -> WeightsRecord | None:
    """The record in ``folder``; None when there is none or it cannot be read (logged)."""
    path = folder / RECORD_NAME
    try:
        return WeightsRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable %s: %s", path, error)
        return None


def write_record(folder: Path, record: WeightsRecord) -> None:
    """Write ``record.json`` atomically (temporary file, then rename)."""
    with atomic_output(folder / RECORD_NAME) as temporary:
        temporary.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")


def utc_now() -> str:
    """Now, as ISO 8601 UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
