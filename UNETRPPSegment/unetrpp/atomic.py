"""Write files so that nobody ever sees half of one: a temporary sibling, checked, then renamed into place.

Every output of this package (segmentations, label maps, reports, weights, records, checkpoints) goes
through :func:`atomic_output`. The temporary file is written, flushed to the disk (``fsync``: a full disk
on NFS or over a quota shows there), checked by the caller's ``verify`` (ITK's NIfTI writer reports
success on a full disk and leaves a truncated file), and only then renamed onto the target. So a crash, a
full disk or a Ctrl-C leaves either the old file or the new one, and a write that fails is one line
(:class:`~unetrpp.errors.OutputWriteError`) with the cause the system gives: ``No space left on device``,
``Read-only file system``, ``File too large``.

Temporary files are named ``.<name>.unetrpp-<host>-<pid>-<random><suffix>`` beside the target (``<name>``
shortened when the whole would pass the file system's name limit). An exception, Ctrl-C or, in the CLI,
SIGTERM removes them at once. SIGKILL or a power cut cannot be caught, so every later write into the same
folder first removes the temporaries of processes of this host that no longer run (stale ones of a
killed run). On Windows no process is looked up and nothing is swept: the Slicer module writes into a
per-run folder that it removes itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from unetrpp.errors import OutputWriteError

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = [
    "IncompleteWrite",
    "atomic_output",
    "write_bytes_atomically",
    "write_image_atomically",
    "name_max",
    "probe_writable",
    "remove_stale_temporaries",
]

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_TEMPORARY = re.compile(r"^\..*\.unetrpp-(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8}(\..*)?$", re.S)
_PROBE_BYTES = 1 << 16


class IncompleteWrite(Exception):
    """A writer failed, or a read-back found the temporary file wrong, without an OSError saying why."""


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` allows (255 where it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf on Windows; some file systems do not say
        return 255


def _temporary_path(path: Path, suffix: str) -> Path:
    """A unique sibling of ``path`` that the stale-file sweep recognises, within the name limit."""
    marker = os.fsencode(f".unetrpp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    name = os.fsencode(path.name)
    room = max(name_max(path.parent) - len(marker) - 1, 1)
    return path.with_name(os.fsdecode(b"." + name[:room] + marker))


def probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``; OSError where that fails (permission bits say nothing on
    read-only mounts or for root). The probe has a temporary's name, so a kill leaves nothing for long."""
    probe = _temporary_path(folder / "probe", ".probe")
    with open(probe, "xb"):
        pass
    probe.unlink()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that a killed process of this host left; return them."""
    if os.name == "nt" or not folder.is_dir():
        return []
    removed = []
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if match and match["host"] == _HOST and not _running(int(match["pid"])):
                with suppress(FileNotFoundError):  # another run swept it first
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], suffix: str = ".tmp", verify: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Args:
        path: the file to (re)place.
        suffix: ending of the temporary name; give the real extension (``".nii.gz"``) when the writer
            picks its format from the file name.
        verify: called with the temporary path after it is written and synced; raises
            :class:`IncompleteWrite` when the file does not hold what was meant (read it back).

    The temporary file is removed whatever happens; if the block raises, ``path`` is untouched. The file
    is created by the writer, so it gets the usual (umask) permissions.

    Raises:
        OutputWriteError: the block, the sync, ``verify`` or the rename failed with an OSError or
            :class:`IncompleteWrite`; its one line names the cause (found by a probe write when the
            writer did not say).
    """
    path = Path(path)
    remove_stale_temporaries(path.parent)
    temporary = _temporary_path(path, suffix)
    try:
        try:
            yield temporary
            if not temporary.is_file():
                raise IncompleteWrite("the writer created no file")
            _sync(temporary)
            if verify is not None:
                verify(temporary)
            os.replace(temporary, path)
        except OutputWriteError:
            raise
        except IncompleteWrite as error:
            raise OutputWriteError(f"cannot write {path}: {_cause(temporary) or error}") from error
        except OSError as error:
            raise OutputWriteError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`, read back and compared before the rename."""

    def same_bytes(temporary: Path) -> None:
        if temporary.read_bytes() != data:
            raise IncompleteWrite(f"the file read back is not the {len(data)} bytes written")

    with atomic_output(path, verify=same_bytes) as temporary:
        temporary.write_bytes(data)


def write_image_atomically(image: sitk.Image, path: str | os.PathLike[str]) -> None:
    """Write an image with ITK (format from the name: ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``),
    compressed where the format can be, and read it back in full before the rename.

    ITK's NIfTI writer reports success on a full disk and leaves a truncated file that still reads, with
    fewer voxels set; the read-back compares every voxel. On a 512x512x150 label map it takes 0.04-0.06 s
    (measured for all four formats) after a write of 0.01-0.02 s.
    """
    import numpy as np
    import SimpleITK as sitk

    path = Path(path)
    suffixes = path.suffixes
    suffix = "".join(suffixes[-2:]) if len(suffixes) > 1 and suffixes[-1].lower() == ".gz" else path.suffix

    def same_voxels(temporary: Path) -> None:
        try:
            written = sitk.ReadImage(str(temporary))
        except RuntimeError as error:
            raise IncompleteWrite("the file read back is damaged") from error
        same = written.GetSize() == image.GetSize() and np.array_equal(
            sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(image)
        )
        if not same:
            raise IncompleteWrite("the file read back does not hold the image written")

    with atomic_output(path, suffix=suffix, verify=same_voxels) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=True)
        except RuntimeError as error:  # ITK's message has many lines; the cause is probed instead
            raise IncompleteWrite("the image writer failed") from error


def _sync(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())


def _cause(temporary: Path) -> str | None:
    """Why a writer stopped short, as the system says it: append a little to the temporary file and see
    the error (None when that works, so no shortage of space or rights explains it)."""
    try:
        with open(temporary, "ab") as stream:
            stream.write(bytes(_PROBE_BYTES))
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        return error.strerror or str(error)
    return None
