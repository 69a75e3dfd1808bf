"""ITK's own warnings while reading: silenced where we diagnose the problem, captured everywhere else.

ITK prints warnings straight to stderr (C++, not Python's ``warnings``), e.g. GDCM's "No Series were
found" for an empty folder, or NiftiImageIO's "has unexpected scales in sform" when it has just replaced
a header's voxel size. Where our own check names the problem (DICOM folders), they are silenced, so a
handled problem is one line, not three lines of library output first. Everywhere else they are
captured (:func:`itk_warnings_captured`) and become ``warning`` events: a warning on the stderr of a
child process is one the Slicer panel never shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

import SimpleITK as sitk

__all__ = ["itk_warnings_off", "itk_warnings_captured"]

# "WARNING: In /path/itkNiftiImageIO.cxx, line 2008\nNiftiImageIO (0x55...): x.nii has unexpected ..."
_ITK_WARNING = re.compile(
    r"WARNING: In [^\n]*, line \d+\n(?:(\w+) \(0x[0-9a-fA-F]+\): )?(.*?)(?:\n\s*\n|\Z)", re.S
)


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK's global warning display off inside the block, restored to what it was after it."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


@contextlib.contextmanager
def itk_warnings_captured() -> Iterator[list[str]]:
    """Collect ITK's warnings printed inside the block; the yielded list holds them once it ends.

    Each warning becomes one line (``"ITK NiftiImageIO: x.nii has unexpected scales in sform"``),
    repeats dropped. ITK writes to file descriptor 2 from C++, so that descriptor is pointed at a
    temporary file for the block; anything else written there meanwhile is passed on to stderr.
    """
    collected: list[str] = []
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(True)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield collected
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            collected.extend(_itk_warning_lines(text))
            rest = _ITK_WARNING.sub("", text).strip()
            if rest:
                os.write(2, (rest + "\n").encode("utf-8"))


def _itk_warning_lines(text: str) -> list[str]:
    lines: list[str] = []
    for source, message in _ITK_WARNING.findall(text):
        line = f"ITK {source}: " if source else "ITK: "
        line += " ".join(message.split())
        if line not in lines:
            lines.append(line)
    return lines
