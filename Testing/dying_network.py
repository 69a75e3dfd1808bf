"""A network wrapper that kills its own process (SIGKILL, as the OOM killer does) on its first forward
pass, then works: how the Ray executor's tests lose a worker mid-case for real. It lives in an
importable module because Ray workers unpickle it by reference."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn


class DiesOnceNetwork(nn.Module):
    """``inner``, except that the first forward pass in any process creates ``marker`` and kills that
    process; later passes (the marker exists) run ``inner``."""

    def __init__(self, inner: nn.Module, marker: Path) -> None:
        super().__init__()
        self.inner = inner
        self.marker = str(marker)
        self.config = getattr(inner, "config", None)
        self.deep_supervision = getattr(inner, "deep_supervision", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            with open(self.marker, "x"):
                pass
        except FileExistsError:
            return self.inner(x)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL cannot be caught")
