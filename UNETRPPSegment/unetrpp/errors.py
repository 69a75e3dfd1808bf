"""Errors a user can act on. Each message is one line naming the problem and, where possible, the fix.

The CLI prints any :class:`UnetrppError` without a traceback and exits with status 2; every other
exception is a bug in this package and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "UnetrppError",
    "InputImageError",
    "ModelNotFoundError",
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "DownloadError",
    "OutputExistsError",
    "DicomSegError",
    "OutputWriteError",
    "BatchInputError",
    "Cancelled",
]


class UnetrppError(Exception):
    """Base class: something the user can fix (bad input, missing weights, existing output)."""


class InputImageError(UnetrppError):
    """The input image cannot be segmented: unreadable, wrong dimension, NaN voxels, absurd spacing."""


class ModelNotFoundError(UnetrppError):
    """No model of that name, or its weights are not installed."""


class CheckpointError(UnetrppError):
    """A weights file is not a checkpoint, is truncated, or lacks what inference needs."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not fit the network it is loaded into."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint or plans file asks to unpickle something other than plain data."""


class DownloadError(UnetrppError):
    """Weights could not be downloaded or failed verification."""


class OutputExistsError(UnetrppError):
    """The output file or node exists and overwriting was not asked for."""


class DicomSegError(UnetrppError):
    """The source series cannot carry a DICOM Segmentation (not one plain stack of single-frame images)."""


class OutputWriteError(UnetrppError, OSError):
    """An output could not be written (full disk, read-only folder, file size limit, a name too long).

    Also an OSError, so code that handles a failed write as one keeps doing so.
    """


class BatchInputError(UnetrppError):
    """A cohort's case list cannot be used: no cases, two cases of one name, a CSV without its columns."""


class Cancelled(UnetrppError):
    """The user cancelled a running job; not a failure."""
