"""Model size and compute: parameter count and multiply-adds of one forward pass.

Multiply-adds are counted with PyTorch's own ``FlopCounterMode`` (convolutions, matrix products,
attention), which counts a multiply-add as 2 FLOPs; the paper reports multiply-adds ("FLOPs" in its
tables, as fvcore counts them), so the count is halved.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Complexity", "measure_complexity"]


@dataclass(frozen=True)
class Complexity:
    parameters: int  # distinct parameters (a layer registered twice counts once)
    multiply_adds: int  # per forward pass of one patch


def measure_complexity(network: nn.Module, in_channels: int, patch_size: tuple[int, int, int]) -> Complexity:
    """Count parameters and multiply-adds for one (1, in_channels, *patch_size) input, in eval mode."""
    parameters = sum(p.numel() for p in network.parameters())
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, in_channels, *patch_size))
    finally:
        network.train(was_training)
    return Complexity(parameters, counter.get_total_flops() // 2)
