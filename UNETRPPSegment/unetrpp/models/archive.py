"""Unwrap a checkpoint that was published inside a plain zip file.

Sharing services (and the authors' early releases) sometimes hand out ``something.zip`` holding
``model_final_checkpoint.model`` (and maybe its ``.model.pkl``). A PyTorch checkpoint is itself a zip,
so the two are told apart by content: a PyTorch archive has a ``data.pkl`` record; a wrapper holds a
``*.model`` member.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

__all__ = ["is_torch_archive", "checkpoint_member", "extract_checkpoint"]

_CHECKPOINT_SUFFIX = ".model"


def is_torch_archive(path: str | Path) -> bool:
    """True for a file written by ``torch.save`` (zip format)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


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
            names = set(archive.namelist())
            wanted = [(member, target)]
            if member + ".pkl" in names:
                wanted.append((member + ".pkl", target.with_name(target.name + ".pkl")))
            for name, destination in wanted:
                handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
                with archive.open(name) as source, os.fdopen(handle, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                extracted.append((temporary, destination))
        for temporary, destination in extracted:
            os.replace(temporary, destination)
    finally:
        for temporary, _ in extracted:
            Path(temporary).unlink(missing_ok=True)
    return target
