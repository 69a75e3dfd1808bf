"""Train a UNETR++ on an nnU-Net-layout data set and write a ``.unetrpp`` model with its card.

Reproducibility: all randomness (case choice, augmentation, initialisation) is re-seeded from
``(seed, block)`` at the start of every block of ``validate_every`` iterations, and a checkpoint is
written at the end of every block. So a fixed seed gives the same run, and a run resumed from a
checkpoint continues exactly as the uninterrupted run would have (same device and library versions).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetrpp.atomic import atomic_output
from unetrpp.errors import OutputExistsError
from unetrpp.events import Event, EventCallback, StageEvent, emit
from unetrpp.models.cards import Plans
from unetrpp.train.config import OptimizerKind, TrainConfig
from unetrpp.train.dataset import TrainingDataset, intensity_normalization, median_spacing_zyx
from unetrpp.train.losses import DeepSupervisionLoss
from unetrpp.train.sampling import load_cases, random_batch, validate

__all__ = [
    "TrainingProgress",
    "TrainResult",
    "train",
    "plans_for",
    "result_from_checkpoint",
    "CHECKPOINT_NAME",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_latest.pt"


@dataclass(frozen=True)
class TrainingProgress(Event):
    """One optimiser step done; ``validation_dice`` is the latest mean validation Dice (or None)."""

    iteration: int
    total: int
    loss: float
    learning_rate: float
    validation_dice: float | None = None
    elapsed_seconds: float = 0.0
    kind = "training"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        network: the trained network (deep supervision off, eval mode, on CPU).
        plans: preprocessing the network was trained with.
        validation_dice: (label value, Dice) per label at the last validation (empty without validation).
        losses: mean training loss of every block of ``validate_every`` iterations.
        elapsed_seconds: training time of this call (a resumed run counts only its own part).
        validation_cases: names of the held-out validation cases.
    """

    network: torch.nn.Module
    plans: Plans
    validation_dice: tuple[tuple[int, float], ...]
    losses: tuple[float, ...]
    elapsed_seconds: float
    validation_cases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mean_validation_dice(self) -> float | None:
        values = [d for _, d in self.validation_dice if not math.isnan(d)]
        return float(np.mean(values)) if values else None


def plans_for(dataset: TrainingDataset, config: TrainConfig) -> Plans:
    """Plans (normalisation, spacing, patch, classes) for training ``config`` on ``dataset``."""
    from unetrpp.network import VARIANTS

    patch = config.patch_size_zyx or VARIANTS[config.variant].patch_size
    spacing = config.target_spacing_zyx or median_spacing_zyx(dataset)
    num_classes = max(value for value, _ in dataset.labels) + 1
    return Plans(intensity_normalization(dataset), spacing, patch, num_classes, use_nonzero_crop=False)


def _build_network(dataset: TrainingDataset, plans: Plans, config: TrainConfig, deep_supervision: bool):
    from unetrpp.network import build_network

    overrides = {
        **config.network_overrides,
        "patch_size": plans.patch_size_zyx,
        "in_channels": plans.num_input_channels,
        "out_channels": plans.num_classes,
        "deep_supervision": deep_supervision,
    }
    return build_network(config.variant, **overrides)


def _seed_everything(seed: int, block: int) -> np.random.Generator:
    sequence = np.random.SeedSequence([seed, block + 1])  # block -1 seeds the initialisation
    value = int(sequence.generate_state(1)[0])
    random.seed(value)
    torch.manual_seed(value)
    return np.random.default_rng(sequence)


def _split(dataset: TrainingDataset, config: TrainConfig) -> tuple[list, list]:
    cases = list(dataset.cases)
    order = np.random.default_rng(config.seed).permutation(len(cases))
    count = 0 if config.validation_fraction == 0 else max(1, round(config.validation_fraction * len(cases)))
    count = min(count, len(cases) - 1)
    validation = [cases[i] for i in sorted(order[:count])]
    training = [cases[i] for i in sorted(order[count:])]
    return training, validation


def _optimizer(network, config: TrainConfig) -> torch.optim.Optimizer:
    lr, decay = config.resolved_learning_rate, config.resolved_weight_decay
    if config.optimizer is OptimizerKind.SGD:
        return torch.optim.SGD(network.parameters(), lr=lr, momentum=0.99, nesterov=True, weight_decay=decay)
    return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=decay)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_output(path) as temporary:
        torch.save(state, temporary)


def train(
    dataset: TrainingDataset,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path,
    resume: bool = False,
    on_event: EventCallback | None = None,
) -> TrainResult:
    """Train ``config.variant`` on ``dataset``; checkpoints go to ``checkpoint_dir``.

    Args:
        dataset: from :func:`unetrpp.train.dataset.read_dataset`.
        config: hyper-parameters.
        checkpoint_dir: folder for ``checkpoint_latest.pt`` (written every ``validate_every`` steps).
        resume: continue from the checkpoint in ``checkpoint_dir``; without it an existing checkpoint
            is an error (it is never overwritten silently).
        on_event: receives :class:`TrainingProgress` per step and stage events.

    Returns:
        :class:`TrainResult`; write it with :func:`unetrpp.train.export.save_trained_model`.
    """
    from unetrpp.pipeline.device import resolve_device
    from unetrpp.train.transforms import augment_transforms

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = checkpoint_dir / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise OutputExistsError(
            f"{checkpoint_path} exists; pass resume to continue it or choose another folder"
        )
    previous_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        device = resolve_device(config.device)
        saved = (
            torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            if checkpoint_path.exists()
            else None
        )
        plans = Plans.from_dict(saved["plans"]) if saved else plans_for(dataset, config)
        training_cases, validation_cases = _split(dataset, config)
        emit(
            on_event,
            StageEvent(
                "training", f"{len(training_cases)} training, {len(validation_cases)} validation cases"
            ),
        )
        training = load_cases(training_cases, plans, config, on_event)
        validation = load_cases(validation_cases, plans, config, on_event)
        _seed_everything(config.seed, -1)
        network = _build_network(dataset, plans, config, deep_supervision=True).to(device)
        optimizer = _optimizer(network, config)
        use_amp = config.use_amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        start, losses, validation_dice = 0, [], ()
        if saved:
            network.load_state_dict(saved["network"])
            optimizer.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])
            start, losses = int(saved["iteration"]), list(saved["losses"])
            validation_dice = tuple((int(v), float(d)) for v, d in saved["validation_dice"])
            emit(on_event, StageEvent("training", f"resumed at iteration {start}"))
        loss_function = DeepSupervisionLoss()
        augment = augment_transforms(
            plans.patch_size_zyx, samples_per_case=1, mirror_axes_zyx=config.mirror_axes_zyx
        )
        began = time.perf_counter()
        network.train()
        iteration = start
        block_losses: list[float] = []
        rng = _seed_everything(config.seed, iteration // config.validate_every)
        while iteration < config.iterations:
            learning_rate = config.resolved_learning_rate * (1 - iteration / config.iterations) ** 0.9
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            images, labels = random_batch(training, augment, rng, config.batch_size, device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_function(network(images), labels)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            block_losses.append(float(loss.detach()))
            mean_dice = None
            if iteration % config.validate_every == 0 or iteration == config.iterations:
                losses.append(float(np.mean(block_losses)))
                block_losses = []
                validation_dice = validate(network, validation, plans, device)
                state = {
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "iteration": iteration,
                    "losses": losses,
                    "validation_dice": [list(pair) for pair in validation_dice],
                    "plans": plans.to_dict(),
                    "config": config.to_dict(),
                }
                _save_checkpoint(checkpoint_path, state)
                rng = _seed_everything(config.seed, iteration // config.validate_every)
            values = [d for _, d in validation_dice if not math.isnan(d)]
            mean_dice = float(np.mean(values)) if values else None
            emit(
                on_event,
                TrainingProgress(
                    iteration,
                    config.iterations,
                    float(loss.detach()),
                    learning_rate,
                    mean_dice,
                    round(time.perf_counter() - began, 2),
                ),
            )
        elapsed = time.perf_counter() - began
        inference = _build_network(dataset, plans, config, deep_supervision=False)
        state = {k: v.cpu() for k, v in network.state_dict().items() if k in inference.state_dict()}
        inference.load_state_dict(state)
        inference.eval()
        return TrainResult(
            inference, plans, validation_dice, tuple(losses), elapsed, tuple(c.name for c in validation_cases)
        )
    finally:
        torch.set_num_threads(previous_threads)


def result_from_checkpoint(checkpoint_dir: str | Path, dataset: TrainingDataset) -> TrainResult:
    """The state of a (possibly unfinished) run as a :class:`TrainResult`, from its latest checkpoint.

    Lets an interrupted run be exported as a model; ``elapsed_seconds`` is unknown there (0).
    """
    from unetrpp.errors import CheckpointError

    path = Path(checkpoint_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict(saved["config"])
    plans = Plans.from_dict(saved["plans"])
    network = _build_network(dataset, plans, config, deep_supervision=False)
    network.load_state_dict({k: v for k, v in saved["network"].items() if k in network.state_dict()})
    network.eval()
    _, validation = _split(dataset, config)
    validation_dice = tuple((int(v), float(d)) for v, d in saved["validation_dice"])
    return TrainResult(
        network, plans, validation_dice, tuple(saved["losses"]), 0.0, tuple(c.name for c in validation)
    )
