"""An exclusive, cross-process lock on a file, so two processes never write the same model folder.

The operating system's own advisory locks are used (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows) rather than a create-exclusive marker file: the kernel releases them when the holding process
dies, so a crashed download never leaves a stale lock behind. Locks taken through separate ``open``
calls also exclude each other inside one process (threads), which keeps the tests honest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["exclusive_lock"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle: IO[bytes]) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle: IO[bytes]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[bytes]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_lock(
    path: str | Path,
    *,
    on_wait: Callable[[], None] | None = None,
    timeout_seconds: float | None = None,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file; its content is irrelevant (we write our pid for people debugging).
        on_wait: called once if another holder makes us wait (to tell the user why nothing moves).
        timeout_seconds: give up after this long with ``TimeoutError``; None waits as long as it takes
            (a large download by another process may take minutes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        start = time.monotonic()
        waited = False
        while not _try_lock(handle):
            if not waited:
                waited = True
                logger.info("waiting for the lock on %s", path)
                if on_wait is not None:
                    on_wait()
            if timeout_seconds is not None and time.monotonic() - start > timeout_seconds:
                raise TimeoutError(f"{path} is still locked by another process after {timeout_seconds:g} s")
            time.sleep(_POLL_SECONDS)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()).encode())
            handle.flush()
            yield
        finally:
            _unlock(handle)
