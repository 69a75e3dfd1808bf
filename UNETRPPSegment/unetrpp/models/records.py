"""``record.json``: what was installed in one model folder, so later corruption can be detected."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetrpp.atomic import atomic_output

__all__ = ["RECORD_NAME", "WeightsRecord", "read_record", "write_record", "utc_now"]

logger = logging.getLogger(__name__)

RECORD_NAME = "record.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


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

    def __post_init__(self) -> None:
        for name in ("name", "filename", "format", "source", "sha256", "installed_at"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"'{name}' is {getattr(self, name)!r}, not a string")
        if type(self.size_bytes) is not int or self.size_bytes < 0:
            raise ValueError(f"'size_bytes' is {self.size_bytes!r}, not a file size")
        # A plain name inside the model folder: a record must never point elsewhere (../../x, /etc/x).
        if (
            self.filename in ("", ".", "..")
            or Path(self.filename).name != self.filename
            or "\\" in self.filename
        ):
            raise ValueError(f"'filename' {self.filename!r} is not a file name inside the model folder")
        if self.sha256 and not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"'sha256' {self.sha256[:80]!r} is not a hex SHA256")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsRecord:
        if not isinstance(data, dict):
            raise ValueError(f"a {type(data).__name__}, not a JSON object")
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def read_record(folder: Path) -> WeightsRecord | None:
    """The record in ``folder``; None when there is none or it is damaged (then a warning says so).

    A damaged record means "not installed", so listing, loading and a new install keep working and
    ``unetrpp models remove`` clears it.
    """
    path = folder / RECORD_NAME
    try:
        return WeightsRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, NotADirectoryError):  # not installed, or the cache home is no folder
        return None
    except KeyError as error:
        logger.warning("ignoring damaged %s: it lacks %s", path, error)
    except (OSError, ValueError, TypeError) as error:
        logger.warning("ignoring damaged %s: %s", path, getattr(error, "strerror", None) or error)
    return None


def write_record(folder: Path, record: WeightsRecord) -> None:
    """Write ``record.json`` atomically (temporary file, then rename)."""
    with atomic_output(folder / RECORD_NAME) as temporary:
        temporary.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")


def utc_now() -> str:
    """Now, as ISO 8601 UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
