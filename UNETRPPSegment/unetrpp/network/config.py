"""``NetworkConfig``: the architecture hyper-parameters of one UNETR++ network, per task variant.

The reference hard-codes one patch size per variant; here token counts are derived from
``patch_size``, so the same classes build at other sizes (smaller models for training, tests), while the
official sizes keep the official keys and shapes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from unetrpp.network.epa import ProjectionStyle

__all__ = ["NetworkConfig", "VARIANTS"]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of one UNETR++.

    Attributes:
        variant: the reference task variant this follows (synapse, acdc, lung, tumor).
        in_channels: image channels (4 for BraTS).
        out_channels: classes including background.
        patch_size: (z, y, x) input size; divisible by ``stem_stride * 8`` on every axis.
        stem_stride: (z, y, x) patch-embedding stride, e.g. (2, 4, 4).
        projection_style: EPA E/F handling and fusion of the variant.
        num_conv_blocks: residual conv blocks per EPA block (2 in acdc and lung).
        feature_size: channels at full resolution; the stages have 2, 4, 8, 16 times as many.
        depths: EPA blocks in the four encoder stages (decoder stages use 3 each).
        num_heads: attention heads.
        proj_sizes: projected token counts of the four encoder stages' spatial attention.
        decoder_proj_size: projected token count in the decoder stages.
        norm_name: normalisation of the full-resolution conv blocks.
        deep_supervision: build the two extra low-resolution heads.
    """

    variant: str
    in_channels: int
    out_channels: int
    patch_size: tuple[int, int, int]
    stem_stride: tuple[int, int, int]
    projection_style: ProjectionStyle
    num_conv_blocks: int = 1
    feature_size: int = 16
    depths: tuple[int, int, int, int] = (3, 3, 3, 3)
    num_heads: int = 4
    proj_sizes: tuple[int, int, int, int] = (64, 64, 64, 32)
    decoder_proj_size: int = 64
    norm_name: str = "instance"
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        for name in ("patch_size", "stem_stride", "depths", "proj_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "projection_style", ProjectionStyle(self.projection_style))
        for axis, (size, stride) in enumerate(zip(self.patch_size, self.stem_stride)):
            if size % (stride * 8):
                raise ValueError(
                    f"patch_size {self.patch_size}: axis {axis} ({size}) is not divisible by "
                    f"{stride * 8} (stem stride {stride} x 8 for the three downsamplings)"
                )
        if (2 * self.feature_size) % self.num_heads:
            raise ValueError(
                f"feature_size*2 = {2 * self.feature_size} not divisible by {self.num_heads} heads"
            )
        if len(self.depths) != 4 or len(self.proj_sizes) != 4:
            raise ValueError("depths and proj_sizes need one entry per encoder stage (4)")
        if self.in_channels < 1 or self.out_channels < 2:
            raise ValueError(
                f"need in_channels >= 1 and out_channels >= 2, got {self.in_channels}, {self.out_channels}"
            )

    @property
    def dims(self) -> tuple[int, int, int, int]:
        """Channels of the four encoder stages; fixed by feature_size because skips are added."""
        return tuple(self.feature_size * m for m in (2, 4, 8, 16))

    @property
    def stage_tokens(self) -> tuple[int, int, int, int]:
        """Token count (Z*Y*X) of each encoder stage's feature map."""
        stem = math.prod(s // k for s, k in zip(self.patch_size, self.stem_stride))
        return tuple(stem // 8**i for i in range(4))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["projection_style"] = self.projection_style.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(**data)

    def with_overrides(self, **overrides: Any) -> NetworkConfig:
        """A copy with some fields changed; ``dims`` is accepted when consistent with feature_size."""
        dims = overrides.pop("dims", None)
        unknown = set(overrides) - set(self.to_dict())
        if unknown:
            raise TypeError(f"unknown network option(s): {', '.join(sorted(unknown))}")
        config = replace(self, **overrides)
        if dims is not None and tuple(dims) != config.dims:
            raise ValueError(
                f"dims {tuple(dims)} must be feature_size x (2, 4, 8, 16) = {config.dims} "
                "(decoder skips are added, so stage widths follow feature_size)"
            )
        return config


VARIANTS: dict[str, NetworkConfig] = {
    "synapse": NetworkConfig("synapse", 1, 14, (64, 128, 128), (2, 4, 4), ProjectionStyle.SHARED),
    "acdc": NetworkConfig(
        "acdc", 1, 4, (16, 160, 160), (1, 4, 4), ProjectionStyle.SEPARATE, num_conv_blocks=2
    ),
    "lung": NetworkConfig(
        "lung", 1, 2, (32, 192, 192), (1, 4, 4), ProjectionStyle.SEPARATE, num_conv_blocks=2
    ),
    "tumor": NetworkConfig("tumor", 4, 4, (128, 128, 128), (4, 4, 4), ProjectionStyle.SINGLE_MATRIX),
}
