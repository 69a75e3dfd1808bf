"""Write files so that nobody ever sees half of one: a temporary sibling, renamed into place.

Every output of this package (segmentations, label maps, reports, weights, records, checkpoints) goes
through :func:`atomic_output`, so a crash, a full disk or a Ctrl-C leaves either the old file or the new
one, and never a temporary file behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output"]


@contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Args:
        path: the file to (re)place.
        suffix: ending of the temporary name; give the real extension (``".nii.gz"``) when the writer
            picks its format from the file name.

    The temporary file is removed whatever happens; if the block raises, ``path`` is untouched. The file
    is created by the writer, so it gets the usual (umask) permissions.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
