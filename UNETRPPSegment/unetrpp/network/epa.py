"""Efficient Paired Attention (EPA), UNETR++ paper Sec. 3.2, Eq. 1-5.

One set of shared queries and keys feeds two branches on the same tokens:

* spatial attention: keys and values are projected from N tokens down to ``proj_size`` (Linformer-style
  E and F matrices), so the cost is linear in N;
* channel attention: attention between the feature channels of each head.

The variants of the reference differ only in how E/F are held and how the two branches are fused;
:class:`ProjectionStyle` names the three.
"""

from __future__ import annotations

import enum
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionStyle", "EfficientPairedAttention"]


class ProjectionStyle(str, enum.Enum):
    """How the spatial branch projects keys/values, and how the branches are fused."""

    SHARED = "shared"  # synapse: one nn.Linear registered as both E and F; concat + out projections
    SEPARATE = "separate"  # acdc, lung: separate E and F; concat + out projections
    SINGLE_MATRIX = "single_matrix"  # tumor: one (N, P) parameter EF, no bias; branches summed


class EfficientPairedAttention(nn.Module):
    """EPA on a token sequence.

    Args:
        num_tokens: N, the number of spatial positions (fixed: E/F are sized to it).
        hidden_size: C, channels per token; divisible by ``num_heads``.
        proj_size: P, the projected token count of the spatial branch.
        num_heads: attention heads.
        style: the reference variant's projection and fusion, see :class:`ProjectionStyle`.
        dropout_rate: dropout on both attention maps (training only).

    Shapes: input and output are (B, N, C).

    ``contiguous_heads`` (off as built, on in :func:`unetrpp.network.optimize.optimize_for_inference`
    copies) copies the four head-split projections into one contiguous block before attention. As the
    reference lays them out, the keys are a transposed view, and ``nn.Linear`` over the token axis then
    expands E's weight once per head into an (h, N, P) copy: at 32768 tokens that is 14 of a block's
    42 ms (bf16, 2 threads). Same arithmetic either way; the flag only changes memory layout.
    """

    contiguous_heads: bool = False

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        proj_size: int,
        num_heads: int = 4,
        style: ProjectionStyle = ProjectionStyle.SHARED,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.style = ProjectionStyle(style)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))  # channel branch
        self.temperature2 = nn.Parameter(torch.ones(num_heads, 1, 1))  # spatial branch
        # One linear layer yields shared queries, shared keys, channel values and spatial values.
        self.qkvv = nn.Linear(hidden_size, hidden_size * 4, bias=False)
        if self.style is ProjectionStyle.SINGLE_MATRIX:
            bound = 1 / math.sqrt(proj_size)
            self.EF = nn.Parameter(torch.empty(num_tokens, proj_size).uniform_(-bound, bound))
        elif self.style is ProjectionStyle.SHARED:
            self.E = nn.Linear(num_tokens, proj_size)
            self.F = self.E  # the same layer under two names: official checkpoints store both
        else:
            self.E = nn.Linear(num_tokens, proj_size)
            self.F = nn.Linear(num_tokens, proj_size)
        self.attn_drop = nn.Dropout(dropout_rate)
        self.attn_drop_2 = nn.Dropout(dropout_rate)
        if self.style is not ProjectionStyle.SINGLE_MATRIX:
            self.out_proj = nn.Linear(hidden_size, hidden_size // 2)  # spatial branch, Eq. 5
            self.out_proj2 = nn.Linear(hidden_size, hidden_size // 2)  # channel branch

    def _project_tokens(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h, d, N) -> (B, h, d, P) for the keys and values of the spatial branch."""
        if self.style is ProjectionStyle.SINGLE_MATRIX:
            return keys @ self.EF, values @ self.EF
        return self.E(keys), self.F(values)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, num_tokens, channels = tokens.shape
        head_dim = channels // self.num_heads
        qkvv = self.qkvv(tokens).reshape(batch, num_tokens, 4, self.num_heads, head_dim)
        # Each of the four: (B, h, d, N), channels of a head along d.
        heads = qkvv.permute(2, 0, 3, 4, 1)
        query, key, value_channel, value_spatial = heads.contiguous() if self.contiguous_heads else heads

        key_projected, value_projected = self._project_tokens(key, value_spatial)
        query = F.normalize(query, dim=-1)
        key = F.normalize(key, dim=-1)

        # Channel attention (Eq. 4): (B, h, d, d) over the channels of each head.
        attn_channel = (query @ key.transpose(-2, -1)) * self.temperature
        attn_channel = self.attn_drop(attn_channel.softmax(dim=-1))
        out_channel = (attn_channel @ value_channel).permute(0, 3, 1, 2).reshape(batch, num_tokens, channels)

        # Spatial attention (Eq. 3): (B, h, N, P) between tokens and projected tokens.
        attn_spatial = (query.transpose(-2, -1) @ key_projected) * self.temperature2
        attn_spatial = self.attn_drop_2(attn_spatial.softmax(dim=-1))
        out_spatial = attn_spatial @ value_projected.transpose(-2, -1)  # (B, h, N, d)
        # The reference merges heads as (B, d, h, N) -> (B, N, C), not the textbook (B, N, h, d);
        # official weights were trained with this mixing, so it is kept (small_golden.pt checks it).
        out_spatial = out_spatial.permute(0, 3, 1, 2).reshape(batch, num_tokens, channels)

        if self.style is ProjectionStyle.SINGLE_MATRIX:
            return out_channel + out_spatial
        return torch.cat((self.out_proj(out_spatial), self.out_proj2(out_channel)), dim=-1)
