"""Image in, label map out: reading and orientation, nnU-Net v1 preprocessing, sliding-window inference,
and the way back onto the input grid. ``preprocess`` is re-exported because other tools compare it
against nnU-Net v1 as ``unetrpp.pipeline.preprocess(images, plans)``."""

from __future__ import annotations

from unetrpp.pipeline.preprocess import PreprocessInfo, preprocess

__all__ = ["PreprocessInfo", "preprocess"]
