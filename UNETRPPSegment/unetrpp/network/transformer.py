"""The UNETR++ block: positional embedding, EPA with layer scale, then a convolutional refinement
(paper Sec. 3.2, Eq. 1-2 and the ``conv`` path of Fig. 2)."""

from __future__ import annotations

import torch
from monai.networks.blocks.dynunet_block import UnetResBlock
from torch import nn

from unetrpp.network.epa import EfficientPairedAttention, ProjectionStyle

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """EPA block on a feature map.

    Args:
        num_tokens: Z*Y*X of the feature map this block runs on (sizes the positional embedding and E/F).
        hidden_size: channels.
        proj_size: projected token count of the spatial attention.
        num_heads: attention heads.
        style: the variant's EPA projection style.
        num_conv_blocks: residual conv blocks after attention: 1 (synapse, tumor) or 2 (acdc, lung).
        dropout_rate: attention dropout.

    Shapes: (B, C, Z, Y, X) in and out.
    """

    def __init__(
        self,
        num_tokens: int,
        hidden_size: int,
        proj_size: int,
        num_heads: int,
        style: ProjectionStyle,
        num_conv_blocks: int = 1,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.gamma = nn.Parameter(1e-6 * torch.ones(hidden_size))  # layer scale
        self.epa_block = EfficientPairedAttention(
            num_tokens, hidden_size, proj_size, num_heads, style=style, dropout_rate=dropout_rate
        )
        self.conv51 = UnetResBlock(3, hidden_size, hidden_size, kernel_size=3, stride=1, norm_name="batch")
        if num_conv_blocks == 2:
            self.conv52 = UnetResBlock(
                3, hidden_size, hidden_size, kernel_size=3, stride=1, norm_name="batch"
            )
        elif num_conv_blocks != 1:
            raise ValueError(f"num_conv_blocks must be 1 or 2, got {num_conv_blocks}")
        self.conv8 = nn.Sequential(nn.Dropout3d(0.1, False), nn.Conv3d(hidden_size, hidden_size, 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, hidden_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, depth, height, width = features.shape
        tokens = features.reshape(batch, channels, depth * height * width).transpose(1, 2)
        tokens = tokens + self.pos_embed
        attended = tokens + self.gamma * self.epa_block(self.norm(tokens))
        skip = attended.transpose(1, 2).reshape(batch, channels, depth, height, width)
        refined = self.conv51(skip)
        if hasattr(self, "conv52"):
            refined = self.conv52(refined)
        return skip + self.conv8(refined)
