"""Pick the torch device inference runs on; the only place in the package that does."""

from __future__ import annotations

import logging
import os
import re

import torch

from unetrpp.errors import UnetrppError

__all__ = ["resolve_device", "cpu_has_native_bf16"]

logger = logging.getLogger(__name__)

_CUDA_NAME = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable :class:`torch.device`.

    ``"auto"`` picks the first CUDA device when one is usable, else the CPU. Asking for CUDA
    explicitly never falls back to the CPU silently: a user who asked for the GPU and got a
    20-minute CPU run would not know why.

    Raises:
        UnetrppError: the name is not one of the above, CUDA is not available, or the index is out
            of range.
    """
    text = str(name).strip().lower()
    if text in ("", "auto"):
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        logger.info("device auto -> %s", device)
        return device
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_NAME.match(text)
    if match is None:
        raise UnetrppError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UnetrppError(
            f"CUDA was requested ({name!r}) but this PyTorch build sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UnetrppError(f"CUDA device {index} was requested but only {count} GPU(s) are visible")
    return torch.device("cuda", index)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), so bf16 inference pays.

    Elsewhere oneDNN emulates bf16 and it is slower than fp32. ``UNETRPP_CPU_BF16=0`` (or ``1``)
    overrides the detection, for CPUs it gets wrong and for comparing the two on one machine.
    """
    forced = os.environ.get("UNETRPP_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private but stable
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
