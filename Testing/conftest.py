"""Shared test set-up: the real Slicer-core fixture, a calm torch on two cores, and no silent skips in CI."""

from __future__ import annotations

import pytest

# ci_skips: under CI a skip fails unless it is an allowed platform limit (see that module).
# pytester: for the test of that hook.
pytest_plugins = ["slicer_harness", "ci_skips", "pytester"]


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
