"""Shared test set-up: where the project's shared contracts live, and a calm torch.

Tests read ``../shared/...`` relative to the repository root and skip cleanly when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["slicer_harness"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; skips the calling test when it does not exist."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared contract {path} is not present")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Two cores on CI: keep torch from oversubscribing them."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
