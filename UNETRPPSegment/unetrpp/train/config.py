"""``TrainConfig``: every training hyper-parameter, with the reference's choices as defaults."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["OptimizerKind", "TrainConfig"]


class OptimizerKind(str, enum.Enum):
    SGD = "sgd"  # the reference: momentum 0.99, Nesterov, poly learning-rate decay
    ADAMW = "adamw"


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        model_name: name written into the model card (``--model NAME`` later).
        variant: network variant (``build_network``), e.g. ``synapse``.
        patch_size_zyx: network patch; None keeps the variant's native patch.
        target_spacing_zyx: resampling target (mm); None takes the data set's median spacing.
        network_overrides: more ``build_network`` options (``feature_size``, ``depths``, ...).
        orientation: 3-letter code images are reoriented to (the card's ``orientation``).
        iterations: optimiser steps in total.
        batch_size: patches per step (each from a randomly chosen case).
        optimizer: ``sgd`` (default, the reference's) or ``adamw``.
        learning_rate: initial learning rate; None gives 0.01 for SGD and 1e-3 for AdamW.
        weight_decay: None gives 3e-5 for SGD and 1e-4 for AdamW.
        validation_fraction: share of cases held out for validation (at least one case).
        validate_every: iterations between validations and checkpoints.
        mirror_axes_zyx: axes to mirror randomly; empty by default because mirroring the left-right axis
            swaps left and right organs.
        seed: seeds case choice, augmentation and initialisation; the same seed gives the same run.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        use_amp: mixed precision (float16 autocast) on CUDA; ignored on CPU.
        num_threads: torch CPU threads; None leaves torch's setting.
    """

    model_name: str = "custom"
    variant: str = "synapse"
    patch_size_zyx: tuple[int, int, int] | None = None
    target_spacing_zyx: tuple[float, float, float] | None = None
    network_overrides: dict[str, Any] = field(default_factory=dict)
    orientation: str = "RAS"
    iterations: int = 1000
    batch_size: int = 2
    optimizer: OptimizerKind = OptimizerKind.SGD
    learning_rate: float | None = None
    weight_decay: float | None = None
    validation_fraction: float = 0.1
    validate_every: int = 100
    mirror_axes_zyx: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    use_amp: bool = True
    num_threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", OptimizerKind(self.optimizer))
        if self.patch_size_zyx is not None:
            object.__setattr__(self, "patch_size_zyx", tuple(int(v) for v in self.patch_size_zyx))
        if self.target_spacing_zyx is not None:
            object.__setattr__(self, "target_spacing_zyx", tuple(float(v) for v in self.target_spacing_zyx))
            if len(self.target_spacing_zyx) != 3 or min(self.target_spacing_zyx) <= 0:
                raise ValueError(
                    f"target spacing must be three positive numbers, got {self.target_spacing_zyx}"
                )
        object.__setattr__(self, "mirror_axes_zyx", tuple(int(a) for a in self.mirror_axes_zyx))
        if any(a not in (0, 1, 2) for a in self.mirror_axes_zyx):
            raise ValueError(f"mirror axes are 0 (z), 1 (y), 2 (x); got {self.mirror_axes_zyx}")
        if self.iterations < 1 or self.batch_size < 1 or self.validate_every < 1:
            raise ValueError("iterations, batch_size and validate_every must be >= 1")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {self.num_threads}")
        if len(self.orientation) != 3:
            raise ValueError(f"orientation must be a 3-letter code such as 'RAS', got {self.orientation!r}")

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.01 if self.optimizer is OptimizerKind.SGD else 1e-3

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 3e-5 if self.optimizer is OptimizerKind.SGD else 1e-4

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["optimizer"] = self.optimizer.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**data)
