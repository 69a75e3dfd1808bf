"""Set-up for the Slicer module's tests.

This folder must not be called ``slicer``: the slicer-core meta-package extends its ``__path__`` with
every ``slicer`` folder on ``sys.path`` (pytest puts ``Testing/`` there) and imports each module in it.

``UNETRPPSegmentLib`` becomes importable (inside Slicer the module's folder is on ``sys.path``), and
the shared real-Slicer-core fixture ``slicer_app`` (``Testing/slicer_harness.py``) is made available.
"""

from __future__ import annotations

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "UNETRPPSegment"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
