"""Turn a training result into a ``.unetrpp`` model file with a model card describing it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from unetrpp.atomic import atomic_output
from unetrpp.models.cards import ModelCard
from unetrpp.train.config import TrainConfig
from unetrpp.train.dataset import TrainingDataset
from unetrpp.train.loop import TrainResult

__all__ = ["card_for", "save_trained_model", "network_overrides", "annotate_model"]


def network_overrides(network: Any) -> dict[str, Any]:
    """``build_network`` options that rebuild ``network`` from its variant (fields differing from it)."""
    from unetrpp.network import VARIANTS

    own = network.config.to_dict()
    base = VARIANTS[own["variant"]].to_dict()
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in own.items()
        if key != "variant" and value != base[key]
    }


def _scores_text(result: TrainResult, labels: dict[int, str]) -> str:
    parts = [
        f"{labels.get(value, value)} {dice:.3f}"
        for value, dice in result.validation_dice
        if not math.isnan(dice)
    ]
    mean = result.mean_validation_dice
    if mean is None:
        return "no validation cases"
    return (
        f"validation Dice (resampled grid, {len(result.validation_cases)} case(s)): mean {mean:.3f}; "
        + ", ".join(parts)
    )


def card_for(
    dataset: TrainingDataset,
    config: TrainConfig,
    result: TrainResult,
    *,
    title: str | None = None,
    notes: str = "",
    licence: str = "",
) -> ModelCard:
    """The model card of a trained model: data set, labels (with terminology label set), plans,
    architecture and validation scores."""
    modality = "CT" if dataset.is_ct else "/".join(dataset.channel_names)
    labels = {value: name for value, name in dataset.labels}
    recipe = (
        f"Trained with `unetrpp train` on '{dataset.name}' ({len(dataset.cases)} cases, "
        f"{len(result.validation_cases)} held out for validation): {config.iterations} iterations, batch "
        f"{config.batch_size}, {config.optimizer.value} lr {config.resolved_learning_rate:g}, "
        f"seed {config.seed}, "
        f"{result.elapsed_seconds / 60:.1f} min. {_scores_text(result, labels)}."
    )
    return ModelCard(
        name=config.model_name,
        title=title or f"UNETR++ trained on {dataset.name}",
        task="segmentation",
        modality=modality,
        input_channels=dataset.channel_names,
        label_set=dataset.label_set or "custom",
        labels=dataset.labels,
        variant=config.variant,
        patch_size_zyx=result.plans.patch_size_zyx,
        network_overrides=network_overrides(result.network),
        orientation=config.orientation,
        orientation_note=(
            f"Training images were reoriented to {config.orientation} before resampling, so inputs in any "
            "storage orientation are brought to it."
        ),
        plans=result.plans,
        mirror_axes_zyx=config.mirror_axes_zyx,  # what test-time mirroring may use
        licence=licence,
        notes=" ".join(part for part in (notes, recipe) if part),
    )


def save_trained_model(
    path: str | Path,
    result: TrainResult,
    card: ModelCard,
    *,
    overwrite: bool = False,
    use_float16: bool = False,
) -> Path:
    """Write the trained network with ``card`` as one ``.unetrpp`` file (CKPT's ``save_model``).

    ``use_float16`` stores the floating-point weights as float16: half the file size (the bundled demo
    model stays under 10 MB this way); loading casts them back to float32, which changes logits by
    about 1e-3.
    """
    import copy

    from unetrpp.models.checkpoint import save_model

    network = copy.deepcopy(result.network).half() if use_float16 else result.network
    return save_model(path, network, card, overwrite=overwrite)


def annotate_model(
    path: str | Path,
    *,
    notes: str | None = None,
    paper_accuracy: str | None = None,
    mirror_axes_zyx: tuple[int, ...] | None = None,
) -> Path:
    """Replace the ``notes``, ``paper_accuracy`` and/or ``mirror_axes_zyx`` of the card inside a
    ``.unetrpp`` file in place (a field given as None is kept).

    The tensors are copied bit for bit (read and written with safetensors, never through a network),
    so e.g. held-out scores measured after training can be recorded without touching the weights.
    """
    import dataclasses
    import json

    from safetensors.torch import load_file, save_file

    from unetrpp.models.checkpoint import read_metadata

    path = Path(path)
    metadata = read_metadata(path)
    card = ModelCard.from_dict(json.loads(metadata["card"]))
    given = (("notes", notes), ("paper_accuracy", paper_accuracy), ("mirror_axes_zyx", mirror_axes_zyx))
    changes = {k: v for k, v in given if v is not None}
    metadata = {**metadata, "card": json.dumps(dataclasses.replace(card, **changes).to_dict())}
    tensors = load_file(str(path))
    with atomic_output(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path
