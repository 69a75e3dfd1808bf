"""Which 3D Slicer releases this module supports, and the one line a user sees on any other.

The core needs Python >= 3.10 (``X | Y`` type aliases, ``zip(strict=...)``; monai 1.5+ for numpy 2).
Slicer 5.6 and 5.8 ship Python 3.9.10; 5.10 and 5.12 ship Python 3.12.10
(``SuperBuild/External_python.cmake`` at v5.6.2, v5.8.1 and v5.10.0). So the module supports Slicer 5.10
and newer, and on an older Slicer the panel says so instead of failing in the child process.
Importable on Python 3.9: the panel must load there to say it.
"""

from __future__ import annotations

import sys

__all__ = ["MINIMUM_SLICER", "MINIMUM_PYTHON", "unsupported_reason"]

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def unsupported_reason(
    slicer_version: tuple[int, int], python_version: tuple[int, int] | None = None
) -> str | None:
    """One line explaining why this Slicer cannot run the module, or None when it can."""
    python_version = tuple(sys.version_info[:2]) if python_version is None else tuple(python_version)
    if tuple(slicer_version) >= MINIMUM_SLICER and python_version >= MINIMUM_PYTHON:
        return None
    found = f"Slicer {slicer_version[0]}.{slicer_version[1]} (Python {python_version[0]}.{python_version[1]})"
    needed = f"{MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]}"
    return f"UNETR++ Segment needs 3D Slicer {needed} or newer (Python 3.10+); this is {found}: please update"
