"""Where the project's shared contracts live (``../shared`` beside the repository root).

A plain module, not ``conftest.py``: several ``conftest.py`` files exist and ``from shared_contracts import``
would pick whichever pytest imported first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; skips the calling test when it does not exist."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared contract {path} is not present")
    return path
