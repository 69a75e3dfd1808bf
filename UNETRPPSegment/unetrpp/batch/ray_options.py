"""What ``--executor ray`` needs to know about the cluster, kept apart from Ray itself so that the
runner and the CLI import without the ``[ray]`` extra."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from unetrpp.errors import BatchInputError, UnetrppError

__all__ = ["RAY_EXTRA", "RayOptions", "require_ray"]

RAY_EXTRA = 'pip install "unetrpp[ray]"'


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and what each worker (one loaded model, one case at a time) asks of it.

    Args:
        address: a running cluster (``ray://head:10001``, ``head:6379`` or ``auto``); None starts a local
            cluster for the run (or joins the one named by ``RAY_ADDRESS``).
        workers: how many workers; None: as many as the cluster's GPUs (or CPUs) can hold at once.
        cpus_per_worker: CPUs reserved for each worker (its torch threads).
        gpus_per_worker: GPUs reserved for each; None: 1 where the cluster has GPUs, else 0.
        max_attempts: how often a case is tried when its worker dies under it (a node lost, the OOM
            killer) before the case fails.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 2.0
    gpus_per_worker: float | None = None
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise BatchInputError(f"Ray workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise BatchInputError(f"CPUs per Ray worker must be positive, got {self.cpus_per_worker:g}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise BatchInputError(f"GPUs per Ray worker cannot be negative, got {self.gpus_per_worker:g}")
        if self.max_attempts < 1:
            raise BatchInputError(f"attempts per case must be at least 1, got {self.max_attempts}")


def require_ray() -> ModuleType:
    """Ray, or a one-line UnetrppError naming the install command (checked before the model loads)."""
    try:
        import ray
    except ImportError as error:
        raise UnetrppError(f"--executor ray needs Ray: {RAY_EXTRA}") from error
    return ray
