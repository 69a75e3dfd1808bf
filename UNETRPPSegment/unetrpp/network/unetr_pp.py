"""UNETR++ (Shaker et al., "UNETR++: Delving into Efficient and Accurate 3D Medical Image
Segmentation", IEEE TMI 2024): the encoder, a conv stem at full resolution, four decoder stages and
the output heads, connected as in the paper's Fig. 2. Build it with :func:`unetrpp.network.build_network`.
"""

from __future__ import annotations

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock, UnetResBlock
from torch import nn

from unetrpp.network.config import NetworkConfig
from unetrpp.network.decoder import UnetrUpBlock
from unetrpp.network.encoder import UnetrPPEncoder

__all__ = ["UNETRPP"]


class UNETRPP(nn.Module):
    """UNETR++ for one fixed patch size.

    Args:
        config: the architecture, see :class:`NetworkConfig`. Module and parameter names equal the
            reference implementation's, so official checkpoints load with ``strict=True``.

    Shapes: input (B, in_channels, *config.patch_size). Output: logits (B, out_channels, *patch_size)
    when ``deep_supervision`` is off; with it on, the list [full resolution, stem-stride resolution
    (decoder stage 3), half of that (decoder stage 4)], the reference order.

    Example::

        >>> net = UNETRPP(NetworkConfig.for_variant("synapse"))
        >>> net(torch.zeros(1, 1, 64, 128, 128))[0].shape
        torch.Size([1, 14, 64, 128, 128])
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.deep_supervision = config.deep_supervision
        size = config.feature_size
        tokens = config.stage_tokens
        epa = {
            "num_heads": config.num_heads,
            "style": config.projection_style,
            "num_conv_blocks": config.num_conv_blocks,
        }
        self.unetr_pp_encoder = UnetrPPEncoder(
            config.in_channels,
            config.dims,
            config.depths,
            tokens,
            config.proj_sizes,
            config.stem_stride,
            **epa,
        )
        self.encoder1 = UnetResBlock(3, config.in_channels, size, 3, 1, norm_name=config.norm_name)
        decoder_proj = config.decoder_proj_size
        self.decoder5 = UnetrUpBlock(size * 16, size * 8, 2, tokens[2], proj_size=decoder_proj, **epa)
        self.decoder4 = UnetrUpBlock(size * 8, size * 4, 2, tokens[1], proj_size=decoder_proj, **epa)
        self.decoder3 = UnetrUpBlock(size * 4, size * 2, 2, tokens[0], proj_size=decoder_proj, **epa)
        self.decoder2 = UnetrUpBlock(
            size * 2, size, config.stem_stride, use_conv_block=True, norm_name=config.norm_name
        )
        self.out1 = UnetOutBlock(3, size, config.out_channels)
        if config.deep_supervision:
            self.out2 = UnetOutBlock(3, size * 2, config.out_channels)
            self.out3 = UnetOutBlock(3, size * 4, config.out_channels)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self.config.patch_size

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if tuple(image.shape[2:]) != self.config.patch_size:
            raise ValueError(
                f"UNETR++ runs on its patch size {self.config.patch_size} only (its positional embeddings "
                f"are sized to the token count), got input {tuple(image.shape[2:])}"
            )
        enc1, enc2, enc3, enc4 = self.unetr_pp_encoder(image)
        conv_stem = self.encoder1(image)
        dec3 = self.decoder5(enc4, enc3)
        dec2 = self.decoder4(dec3, enc2)
        dec1 = self.decoder3(dec2, enc1)
        out = self.decoder2(dec1, conv_stem)
        if self.deep_supervision and hasattr(self, "out2"):
            return [self.out1(out), self.out2(dec1), self.out3(dec2)]
        return self.out1(out)
