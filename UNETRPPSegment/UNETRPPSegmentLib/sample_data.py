"""Offer the bundled ``demo`` model's phantom in Slicer's Sample Data module, from files shipped here.

A new user tries the extension in two clicks (Sample Data, then UNETR++ > UNETRPPPhantom) with nothing
fetched from the internet: the phantom CT and its truth segmentation lie in this module's
``Resources/SampleData/`` folder (made by ``make_sample.py`` there) and are registered under
``file://`` URIs. The module calls :func:`register_sample_data` once Slicer has started; it never
raises (a problem is logged, the module works without the sample).

What this relies on, in Slicer's ``Modules/Scripted/SampleData/SampleData.py`` (the same code at
v5.10.0 and v5.12.3, the versions this module supports):

- ``SampleDataLogic.registerCustomSampleDataSource`` (v5.10.0 line 510, v5.12.3 line 553) takes the
  keywords category, sampleName, uris, fileNames, nodeNames, customDownloader, thumbnailFileName,
  loadFileTypes, loadFiles, loadFileProperties, checksums and the deprecated loadFileType; every
  per-file argument is a list of equal length (the tests keep the call to these keywords).
- A click runs ``downloadFromSource`` (v5.10.0 line 796, v5.12.3 line 850): ``downloadFile``
  (v5.10.0 line 1079, v5.12.3 line 1133) copies each URI with ``urllib.request.urlretrieve`` (which
  reads ``file://`` URIs) into ``slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory()`` under
  its ``fileNames`` entry, then checks it against its checksum, formatted ``SHA256:<hex digest>``
  (``slicer.util.extractAlgoAndDigest``). A cached copy with the right checksum is reused, a wrong one
  is copied again; a copy that fails the check is deleted and its loading fails (logged). Each file is
  then loaded with the reader its ``loadFileTypes`` entry names, under its ``nodeNames`` entry.
- Extensions register their sources on ``slicer.app`` ``startupCompleted()``, as Slicer's scripted
  module template does (``Utilities/Templates/Modules/Scripted/TemplateKey.py`` line 50 at both tags).

Qt-free: only :func:`register_sample_data` imports Slicer's ``SampleData`` module, and only when no
logic is given.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CATEGORY",
    "SAMPLE_DIR",
    "SAMPLE_FILES",
    "SAMPLE_NAME",
    "THUMBNAIL",
    "SampleFile",
    "register_sample_data",
    "sha256",
    "source_arguments",
]

logger = logging.getLogger(__name__)

CATEGORY = "UNETR++"
SAMPLE_NAME = "UNETRPPPhantom"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
THUMBNAIL = "UNETRPPPhantom.png"


@dataclass(frozen=True)
class SampleFile:
    """One file of the sample.

    Attributes:
        file_name: its name in ``Resources/SampleData/`` and in Slicer's download cache.
        node_name: the node Slicer loads it into.
        file_type: the Slicer reader that loads it (``VolumeFile``, ``SegmentationFile``).
        sha256: the pinned SHA256 of the shipped file, which Slicer checks after copying it.
    """

    file_name: str
    node_name: str
    file_type: str
    sha256: str


# The demo model's held-out phantom (seed 1000) and its truth; make_sample.py prints these digests.
SAMPLE_FILES = (
    SampleFile(
        "UNETRPPPhantom.nrrd",
        "UNETRPPPhantom",
        "VolumeFile",
        "eaf011098c6fb73789d06315d8b928480a58de161394290f25f001613abce10c",
    ),
    SampleFile(
        "UNETRPPPhantom_truth.seg.nrrd",
        "UNETRPPPhantom truth",
        "SegmentationFile",
        "48619faf0175be14ec2302fb8e9a355b1d4636ad6337c4635b9696560c709d6c",
    ),
)


def sha256(path: Path) -> str:
    """Hex SHA256 of a file, as Slicer's ``computeChecksum("SHA256", path)`` computes it."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_arguments(folder: Path = SAMPLE_DIR) -> dict[str, Any]:
    """The keyword arguments of ``registerCustomSampleDataSource`` for the sample in ``folder``."""
    folder = Path(folder).resolve()
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "thumbnailFileName": str(folder / THUMBNAIL),
        "uris": [(folder / f.file_name).as_uri() for f in SAMPLE_FILES],
        "fileNames": [f.file_name for f in SAMPLE_FILES],
        "nodeNames": [f.node_name for f in SAMPLE_FILES],
        "loadFileTypes": [f.file_type for f in SAMPLE_FILES],
        "checksums": [f"SHA256:{f.sha256}" for f in SAMPLE_FILES],
    }


def register_sample_data(logic: Any = None, folder: Path | None = None) -> bool:
    """Register the phantom in the Sample Data module, unless a file of it is missing.

    Args:
        logic: the class or object with ``registerCustomSampleDataSource``; default:
            ``SampleData.SampleDataLogic``.
        folder: where the sample files are; default: this module's :data:`SAMPLE_DIR`.

    Returns:
        True when the source was registered; False when not (the reason is logged).
    """
    folder = Path(folder) if folder is not None else SAMPLE_DIR
    try:
        names = (*(f.file_name for f in SAMPLE_FILES), THUMBNAIL)
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            logger.error("UNETR++ sample data not offered: %s missing from %s", ", ".join(missing), folder)
            return False
        if logic is None:
            import SampleData

            logic = SampleData.SampleDataLogic
        logic.registerCustomSampleDataSource(**source_arguments(folder))
        return True
    except Exception:  # noqa: BLE001 (called from a Qt signal at startup: log, never raise)
        logger.exception("could not register the UNETR++ sample data from %s", folder)
        return False
