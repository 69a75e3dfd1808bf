"""UNETR++ 3D medical image segmentation: network, official weights, inference pipeline, CLI.

The public API is exported lazily (module ``__getattr__``): ``import unetrpp`` stays free of torch,
so the CLI's ``--help`` and the model list answer instantly; ``unetrpp.segment`` imports the
pipeline on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unetrpp.batch.runner import BatchReport, run_batch
    from unetrpp.models import LoadedModel, load_model
    from unetrpp.models.registry import list_cards as list_models
    from unetrpp.pipeline.predictor import SegmentOptions, SegmentResult, segment

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "segment",
    "SegmentOptions",
    "SegmentResult",
    "load_model",
    "LoadedModel",
    "list_models",
    "run_batch",
    "BatchReport",
]

_LAZY = {  # public name -> (module, attribute)
    "segment": ("unetrpp.pipeline.predictor", "segment"),
    "SegmentOptions": ("unetrpp.pipeline.predictor", "SegmentOptions"),
    "SegmentResult": ("unetrpp.pipeline.predictor", "SegmentResult"),
    "load_model": ("unetrpp.models.loader", "load_model"),
    "LoadedModel": ("unetrpp.models.loader", "LoadedModel"),
    "list_models": ("unetrpp.models.registry", "list_cards"),
    "run_batch": ("unetrpp.batch.runner", "run_batch"),
    "BatchReport": ("unetrpp.batch.runner", "BatchReport"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'unetrpp' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
