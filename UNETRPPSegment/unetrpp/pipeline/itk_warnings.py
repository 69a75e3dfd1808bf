"""Silence ITK's own warnings while we read an image whose problems we diagnose ourselves.

ITK prints warnings straight to stderr (e.g. GDCM's "No Series were found" for an empty folder) before
our one-line error, so a handled problem would show three lines of library output first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import SimpleITK as sitk

__all__ = ["itk_warnings_off"]


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK's global warning display off inside the block, restored to what it was after it."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
