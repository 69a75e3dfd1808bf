"""UNETR++ 3D medical image segmentation: network, official weights, inference pipeline, CLI."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
