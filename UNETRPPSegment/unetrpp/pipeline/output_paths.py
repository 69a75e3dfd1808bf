"""Refuse, before any work, a run whose outputs would replace one another or one of its inputs.

Each output is renamed onto its folder entry (:mod:`unetrpp.atomic`), so two paths are one file when they
name the same entry: the same folder (compared with ``samefile``, so through symlinks and bind mounts) and
the same name apart from case. Case is ignored everywhere, also on Linux: macOS and Windows compare names
without it by default, and a pair of results that differ only in case would lose one there when copied.
Two paths that both exist are also one file when they reach the same file through a symlink or a hard
link. An output that is one file with an input is refused even with ``--overwrite``: a run never writes
over what it reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from unetrpp.errors import UnetrppError

__all__ = ["same_file", "check_distinct"]


def same_file(a: Path, b: Path) -> bool:
    """Whether writing ``a`` would replace ``b`` (or what ``b`` points at), or the other way round."""
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return True
    except OSError:  # unreadable: decided by the names below
        pass
    if a.name.casefold() != b.name.casefold():
        return False
    try:
        return os.path.samefile(a.parent, b.parent)
    except OSError:  # a folder that does not exist: the output checks name it
        return a.parent.resolve() == b.parent.resolve()


def check_distinct(outputs: Sequence[tuple[str, Path]], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Raise UnetrppError when two of the run's ``(option, path)`` outputs, or an output and an input, are
    the same file."""
    for index, (option, path) in enumerate(outputs):
        for source in inputs:
            if same_file(path, Path(source).expanduser()):
                raise UnetrppError(
                    f"{option} {path} is the same file as the input {source}; a run never writes over "
                    "its inputs, choose another name"
                )
        for other_option, other in outputs[index + 1 :]:
            if same_file(path, other):
                raise UnetrppError(
                    f"{option} {path} and {other_option} {other} are the same file; give each output its "
                    "own name"
                )
