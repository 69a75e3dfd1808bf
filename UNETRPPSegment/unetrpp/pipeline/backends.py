"""Which engine runs the network's tiles: torch, or OpenVINO on the CPU (``--backend``).

AUTO picks OpenVINO on a CPU when it is installed and the network is one of the large ones (the
official networks have 42-121 M parameters), torch otherwise and always on CUDA. A synapse tile took
0.21 s with OpenVINO bf16 against 0.33 s with torch's bf16 inference copy, and 0.41 against 0.48 s in
fp32 (``benchmarks/RESULTS.md``), while OpenVINO's fixed costs per run (import, cache check, compiling:
about 1 s) and its first conversion (5-30 s, once per machine) are more than all tiles of a small
network take: the bundled ``demo`` model (4 M parameters) runs a case in about 2 s with torch.
"""

from __future__ import annotations

import enum
import logging
import weakref
from typing import TYPE_CHECKING

from unetrpp.errors import UnetrppError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unetrpp.pipeline.sliding_window import Precision

__all__ = ["Backend", "MIN_OPENVINO_PARAMETERS", "check_backend", "network_for_backend", "resolve_backend"]

logger = logging.getLogger(__name__)

# AUTO uses OpenVINO from this many parameters on: every official network, not the 4 M demo model.
MIN_OPENVINO_PARAMETERS = 10_000_000


class Backend(str, enum.Enum):
    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"


def check_backend(backend: Backend | str, device: str) -> Backend:
    """``backend`` as a :class:`Backend`, refused before any work when it cannot run.

    Raises:
        UnetrppError: an unknown name, OpenVINO asked for but not installed, or asked for on CUDA.
    """
    try:
        backend = Backend(backend)
    except ValueError:
        choices = ", ".join(b.value for b in Backend)
        raise UnetrppError(f"unknown backend {backend!r}; use one of {choices}") from None
    if backend is Backend.OPENVINO:
        if str(device).strip().lower().startswith("cuda"):
            raise UnetrppError(
                "the OpenVINO backend runs on the CPU only; use --device cpu or --backend torch"
            )
        from unetrpp.network.openvino_runtime import require_openvino

        require_openvino()
    return backend


def resolve_backend(backend: Backend | str, device: torch.device, network: nn.Module) -> Backend:
    """TORCH or OPENVINO for this device and network (AUTO decided as the module docstring says).

    Raises:
        UnetrppError: OpenVINO asked for on a CUDA device (``--device auto`` found a GPU).
    """
    backend = Backend(backend)
    if device.type != "cpu":
        if backend is Backend.OPENVINO:
            raise UnetrppError(
                f"the OpenVINO backend runs on the CPU only, and the device is {device}; use --device cpu "
                "or --backend torch"
            )
        return Backend.TORCH
    if backend is not Backend.AUTO:
        return backend
    from unetrpp.network.openvino_runtime import openvino_available

    large = sum(parameter.numel() for parameter in network.parameters()) >= MIN_OPENVINO_PARAMETERS
    return Backend.OPENVINO if large and openvino_available() else Backend.TORCH


# One compiled model per network object and precision, so a cohort compiles once (about 1 s each).
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def network_for_backend(
    network: nn.Module, device: torch.device, precision: Precision, backend: Backend | str
) -> nn.Module:
    """The module to tile with: the network itself on CUDA; on the CPU, for torch an inference copy
    (``optimize_for_inference``, bf16 weights when bf16 was chosen: 0.36 instead of 1.27 s per synapse
    tile), for OpenVINO the compiled model (:mod:`unetrpp.network.openvino_runtime`)."""
    import torch

    from unetrpp.pipeline.sliding_window import Precision

    chosen = resolve_backend(backend, device, network)
    logger.info("backend %s -> %s on %s", Backend(backend).value, chosen.value, device)
    if chosen is Backend.TORCH:
        if device.type != "cpu":
            return network
        from unetrpp.network.optimize import optimize_for_inference

        return optimize_for_inference(network, dtype=torch.bfloat16 if precision is Precision.BF16 else None)
    from unetrpp.network.openvino_runtime import compile_network
    from unetrpp.network.state import weights_stamp

    hint = "bf16" if precision is Precision.BF16 else "f32"
    # the stamp, not a SHA256 of the weights: a cohort's later cases need not hash 229 MB each
    fingerprint = (weights_stamp(network), hint, torch.get_num_threads())
    cached = _compiled.get(network)
    if cached is None or cached[0] != fingerprint:  # new, or weights changed in place: compile again
        cached = (fingerprint, compile_network(network, hint))
        _compiled[network] = cached
    return cached[1]
