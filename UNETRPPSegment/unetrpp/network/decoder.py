"""Decoder stages (paper Fig. 2, right): transposed-convolution upsampling, additive skip connection,
then EPA blocks, except the last stage, which uses a residual conv block at full resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetResBlock, get_conv_layer
from torch import nn

from unetrpp.network.epa import ProjectionStyle
from unetrpp.network.transformer import TransformerBlock

__all__ = ["UnetrUpBlock"]


class UnetrUpBlock(nn.Module):
    """Upsample ``inp`` by ``upsample_stride``, add the skip, refine.

    Args:
        in_channels, out_channels: channels before and after upsampling.
        upsample_stride: (z, y, x) kernel and stride of the transposed convolution.
        num_tokens: token count after upsampling (EPA stages only).
        depth: EPA blocks; ignored when ``use_conv_block``.
        use_conv_block: last stage: one UnetResBlock instead of EPA blocks (paper supplement).
        norm_name: normalisation of the conv block.
        proj_size, num_heads, style, num_conv_blocks, dropout_rate: passed to the EPA blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        upsample_stride: Sequence[int] | int,
        num_tokens: int = 0,
        depth: int = 3,
        use_conv_block: bool = False,
        norm_name: str = "instance",
        proj_size: int = 64,
        num_heads: int = 4,
        style: ProjectionStyle = ProjectionStyle.SHARED,
        num_conv_blocks: int = 1,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.transp_conv = get_conv_layer(
            3,
            in_channels,
            out_channels,
            kernel_size=upsample_stride,
            stride=upsample_stride,
            conv_only=True,
            is_transposed=True,
        )
        if use_conv_block:
            refine: nn.Module = UnetResBlock(3, out_channels, out_channels, 3, 1, norm_name=norm_name)
        else:
            refine = nn.Sequential(
                *(
                    TransformerBlock(
                        num_tokens, out_channels, proj_size, num_heads, style, num_conv_blocks, dropout_rate
                    )
                    for _ in range(depth)
                )
            )
        self.decoder_block = nn.ModuleList([refine])  # list kept for the official key names

    def forward(self, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.decoder_block[0](self.transp_conv(inp) + skip)
