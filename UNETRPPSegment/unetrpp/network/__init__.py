"""UNETR++ network: ``build_network(variant, **overrides)`` for the synapse, acdc, lung and tumor
variants of the reference implementation, with official parameter names."""

from __future__ import annotations

import difflib
from typing import Any

from unetrpp.network.config import VARIANTS, NetworkConfig
from unetrpp.network.epa import ProjectionStyle
from unetrpp.network.unetr_pp import UNETRPP

__all__ = ["build_network", "NetworkConfig", "ProjectionStyle", "UNETRPP", "VARIANTS"]


def build_network(variant: str, **overrides: Any) -> UNETRPP:
    """Build a UNETR++ of a reference variant, optionally changed.

    Args:
        variant: ``synapse``, ``acdc``, ``lung`` or ``tumor``.
        **overrides: any :class:`NetworkConfig` field, e.g. ``patch_size=(32, 64, 64)``,
            ``feature_size=8``, ``out_channels=9``, ``deep_supervision=False``; ``dims`` is accepted when
            it equals ``feature_size * (2, 4, 8, 16)``.

    Returns:
        The network, in training mode, randomly initialised.

    Raises:
        ValueError: unknown variant (with the closest name) or an inconsistent option.
    """
    if variant not in VARIANTS:
        close = difflib.get_close_matches(variant, VARIANTS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"no network variant '{variant}'{hint} (variants: {', '.join(VARIANTS)})")
    return UNETRPP(VARIANTS[variant].with_overrides(**overrides))
