"""Models: cards and registry (no torch), checkpoint readers and writers, the weights store.

The loading API is exported lazily (module ``__getattr__``), so ``import unetrpp.models.registry``
and ``unetrpp models`` stay free of torch until a model is actually loaded or saved.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unetrpp.models.checkpoint import load_model_file, save_model
    from unetrpp.models.loader import LoadedModel, load_model
    from unetrpp.models.official import load_official_checkpoint

__all__ = ["LoadedModel", "load_model", "load_model_file", "load_official_checkpoint", "save_model"]

_LAZY = {
    "LoadedModel": "unetrpp.models.loader",
    "load_model": "unetrpp.models.loader",
    "load_model_file": "unetrpp.models.checkpoint",
    "save_model": "unetrpp.models.checkpoint",
    "load_official_checkpoint": "unetrpp.models.official",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unetrpp.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
