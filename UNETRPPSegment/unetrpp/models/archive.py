"""Unwrap a checkpoint that was published inside a plain zip file.

Sharing services (and the authors' early releases) sometimes hand out ``something.zip`` holding
``model_final_checkpoint.model`` (and maybe its ``.model.pkl``). A PyTorch checkpoint is itself a zip,
so the two are told apart by content: a PyTorch archive has a ``data.pkl`` record; a wrapper holds a
``*.model`` member.

A zip can declare a member far larger than itself (a "zip bomb": 1 MB of zeros that expands to 1 GB and
fills the disk). Checkpoints hardly compress (float weights), so a member is refused before anything is
extracted when it would expand more than ``_MAX_EXPANSION`` times beyond a small allowance, or beyond
``_MAX_MEMBER_BYTES``; the zip reader never writes more than the declared size. A damaged member (bad
CRC) is a one-line error too, and so is a member named outside the archive (``../``, ``/etc/...``: only
a tampered file has one). Members are extracted to fixed names whatever they are called, and errors
about them name the member inside the user's zip (:func:`name_extracted`), not those files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from unetrpp.errors import CheckpointError

__all__ = [
    "is_torch_archive",
    "check_zip_complete",
    "checkpoint_member",
    "extract_checkpoint",
    "name_extracted",
]

_CHECKPOINT_SUFFIX = ".model"
_MAX_MEMBER_BYTES = 8 << 30  # the largest official checkpoint (lung) is well under 2 GB
_MAX_EXPANSION = 20
_SMALL_MEMBER_BYTES = 16 << 20  # small files (plans pickles) may compress well


def is_torch_archive(path: str | Path) -> bool:
    """True for a file written by ``torch.save`` (zip format)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_zip_complete(path: str | Path) -> None:
    """Raise CheckpointError when ``path`` starts like a zip file but lacks its directory (cut short)."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated (its zip directory is missing); download it again")


def checkpoint_member(path: str | Path) -> str | None:
    """Name of the ``*.model`` checkpoint inside a plain zip, or None (not a zip, a torch file, or none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(name.endswith("data.pkl") for name in names):
        return None
    candidates = sorted((n for n in names if n.endswith(_CHECKPOINT_SUFFIX)), key=lambda n: (n.count("/"), n))
    return candidates[0] if candidates else None


def extract_checkpoint(archive_path: str | Path, target: str | Path) -> Path | None:
    """Write the checkpoint inside ``archive_path`` to ``target`` (and its plans to ``target.pkl``).

    ``target`` may be the archive itself: members are extracted to temporary files first and renamed
    into place. Returns ``target``, or None when the file is not such a wrapper (nothing is changed).
    """
    archive_path, target = Path(archive_path), Path(target)
    member = checkpoint_member(archive_path)
    if member is None:
        return None
    extracted: list[tuple[str, Path]] = []
    try:
        with zipfile.ZipFile(archive_path) as archive:
            listing = archive.namelist()
            _check_inside(archive_path, listing)
            names = set(listing)
            wanted = [(member, target)]
            if member + ".pkl" in names:
                wanted.append((member + ".pkl", target.with_name(target.name + ".pkl")))
            for name, _ in wanted:
                _check_expansion(archive_path, archive.getinfo(name))
            for name, destination in wanted:
                handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
                extracted.append((temporary, destination))
                with archive.open(name) as source, os.fdopen(handle, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        for temporary, destination in extracted:
            os.replace(temporary, destination)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as error:
        raise CheckpointError(f"{archive_path} is a damaged zip file ({error}); download it again") from error
    finally:
        for temporary, _ in extracted:
            Path(temporary).unlink(missing_ok=True)
    return target


def _check_expansion(archive_path: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a member that would expand absurdly (a zip bomb) before extracting anything."""
    allowed = min(_MAX_MEMBER_BYTES, max(_SMALL_MEMBER_BYTES, _MAX_EXPANSION * info.compress_size))
    if info.file_size > allowed:
        raise CheckpointError(
            f"{archive_path}: '{info.filename}' would expand from {info.compress_size / 1e6:.1f} MB to "
            f"{info.file_size / 1e6:.0f} MB, which no checkpoint does (a zip bomb?); nothing was extracted"
        )


def _check_inside(archive_path: Path, names: list[str]) -> None:
    """Refuse an archive naming a member outside itself (absolute, a drive, or ``..``): a tampered file."""
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
            raise CheckpointError(
                f"{archive_path} holds '{name}', a path outside the archive (a tampered file?); "
                "nothing was extracted"
            )


def name_extracted(message: str, target: Path, archive_path: Path, member: str) -> str:
    """``message`` naming the archive member (and its plans) instead of the files it was extracted to
    by :func:`extract_checkpoint`, which are gone once the error reaches the user."""
    plans = target.with_name(target.name + ".pkl")
    return message.replace(str(plans), f"'{member}.pkl' in {archive_path}").replace(
        str(target), f"'{member}' in {archive_path}"
    )
