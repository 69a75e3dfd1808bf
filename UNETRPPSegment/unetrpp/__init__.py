"""UNETR++ 3D medical image segmentation: network, official weights, inference pipeline, CLI.

The public API is exported lazily (module ``__getattr__``): ``import unetrpp`` stays free of torch,
so the CLI's ``--help`` and the model list answer instantly; ``unetrpp.segment`` imports the
pipeline on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unetrpp.pipeline.predictor import SegmentOptions, SegmentResult, segment

__version__ = "0.1.0"
__all__ = ["__version__", "segment", "SegmentOptions", "SegmentResult"]

_LAZY = {
    "segment": "unetrpp.pipeline.predictor",
    "SegmentOptions": "unetrpp.pipeline.predictor",
    "SegmentResult": "unetrpp.pipeline.predictor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unetrpp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
