"""Shared test set-up: the real Slicer-core fixture and a calm torch on two cores."""

from __future__ import annotations

import pytest

pytest_plugins = ["slicer_harness"]


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
