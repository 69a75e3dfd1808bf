"""Where the tests' data lives: ``Testing/data`` in this repository (sources in ``Testing/data/SOURCES.md``).

A plain module, not ``conftest.py``: several ``conftest.py`` files exist and ``from vendored_data import``
would pick whichever pytest imported first. Not named ``test_*.py``, so pytest does not collect it.

Every file a test reads is committed; a missing one is a broken checkout or a wrong path, so the test
fails (never skips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parent / "data"
GOLDEN_DIR = ("fixtures", "unetrpp_official")
GOLDEN_WEIGHTS = "small_golden_weights.pt"
GOLDEN_IO = "small_golden_io.pt"


def data_path(*parts: str) -> Path:
    """Path under ``Testing/data``; fails the calling test when it does not exist."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"test data {path} is missing; it is committed under Testing/data (see Testing/data/SOURCES.md)",
            pytrace=False,
        )
    return path


def small_golden() -> dict[str, Any]:
    """The reference's small golden case, as ``Testing/data/derive_small_golden.py`` keeps it.

    Keys: ``config``, ``state_dict``, ``input`` (unchanged), ``outputs_deep_supervision`` (the two
    deep-supervision outputs, whole), ``outputs_full_resolution_sample`` (the full-resolution output at
    the voxels ``sample_index`` names; see :func:`golden_sample`), ``full_resolution_shape``.
    """
    import torch

    golden: dict[str, Any] = {}
    for name in (GOLDEN_WEIGHTS, GOLDEN_IO):
        golden.update(torch.load(data_path(*GOLDEN_DIR, name), map_location="cpu", weights_only=True))
    return golden


def golden_sample(full: Any, golden: dict[str, Any]) -> Any:
    """The voxels of a full-resolution output (B, C, z, y, x) that the golden file keeps."""
    import torch

    for axis, picks in enumerate(golden["sample_index"], start=2):
        full = full.index_select(axis, torch.tensor(picks, dtype=torch.long, device=full.device))
    return full
