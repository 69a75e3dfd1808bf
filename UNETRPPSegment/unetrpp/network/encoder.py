"""Hierarchical encoder (paper Fig. 2, left): a patch-embedding stem and three downsampling layers,
each followed by a stage of EPA blocks. Returns the feature map of every stage for the skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import get_conv_layer
from torch import nn

from unetrpp.network.epa import ProjectionStyle
from unetrpp.network.transformer import TransformerBlock

__all__ = ["UnetrPPEncoder"]


def _downsample(in_channels: int, out_channels: int, stride: Sequence[int], num_groups: int) -> nn.Sequential:
    """Non-overlapping strided convolution + group norm (the reference's patch merging)."""
    return nn.Sequential(
        get_conv_layer(3, in_channels, out_channels, kernel_size=stride, stride=stride, conv_only=True),
        nn.GroupNorm(num_groups, out_channels),
    )


class UnetrPPEncoder(nn.Module):
    """Stem (stride ``stem_stride``) then stages at 1/2, 1/4, 1/8 of the stem resolution.

    Args:
        in_channels: image channels.
        dims: channels of the four stages.
        depths: EPA blocks per stage.
        stage_tokens: token count (Z*Y*X) of each stage's feature map for the network's patch size.
        proj_sizes: projected token count of each stage's spatial attention.
        stem_stride: (z, y, x) stride and kernel of the stem.
        num_heads, style, num_conv_blocks, dropout_rate: passed to every :class:`TransformerBlock`.
    """

    def __init__(
        self,
        in_channels: int,
        dims: Sequence[int],
        depths: Sequence[int],
        stage_tokens: Sequence[int],
        proj_sizes: Sequence[int],
        stem_stride: Sequence[int],
        num_heads: int,
        style: ProjectionStyle,
        num_conv_blocks: int,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([_downsample(in_channels, dims[0], stem_stride, in_channels)])
        for i in range(3):
            self.downsample_layers.append(_downsample(dims[i], dims[i + 1], (2, 2, 2), dims[i]))
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(
                    TransformerBlock(
                        stage_tokens[i],
                        dims[i],
                        proj_sizes[i],
                        num_heads,
                        style,
                        num_conv_blocks,
                        dropout_rate,
                    )
                    for _ in range(depths[i])
                )
            )
            for i in range(4)
        )
        self.apply(_init_linear)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, Z, Y, X) -> the four stage outputs, highest resolution first."""
        hidden_states = []
        features = image
        for downsample, stage in zip(self.downsample_layers, self.stages):
            features = stage(downsample(features))
            hidden_states.append(features)
        return hidden_states


def _init_linear(module: nn.Module) -> None:
    """Truncated-normal linear weights, as the reference initialises its encoder."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
