"""Set-up for the Slicer module's tests: make ``UNETRPPSegmentLib`` importable (the module's folder is
on ``sys.path`` inside Slicer, so the tests do the same)."""

from __future__ import annotations

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "UNETRPPSegment"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
