"""Training data in memory: preprocessed cases, random augmented batches, sliding-window validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from unetrpp.events import EventCallback, StageEvent, emit
from unetrpp.models.cards import Plans
from unetrpp.train.config import TrainConfig

__all__ = ["load_cases", "random_batch", "validate"]


def load_cases(
    cases: Sequence, plans: Plans, config: TrainConfig, on_event: EventCallback | None
) -> list[dict]:
    from unetrpp.train.transforms import preprocess_transforms, sampling_transforms

    transform = preprocess_transforms(plans, config.orientation)
    sampling = sampling_transforms(plans.patch_size_zyx)
    loaded = []
    for case in cases:
        item = transform({"image": [str(p) for p in case.images], "label": str(case.label)})
        loaded.append({**sampling({"image": item["image"], "label": item["label"]}), "name": case.name})
    emit(on_event, StageEvent("training", f"preprocessed {len(cases)} case(s)"))
    return loaded


def _plain(array) -> torch.Tensor:
    return array.as_tensor() if hasattr(array, "as_tensor") else torch.as_tensor(array)


def random_batch(cases: list[dict], augment, rng: np.random.Generator, batch_size: int, device: torch.device):
    images, labels = [], []
    for index in rng.integers(0, len(cases), size=batch_size):
        augment.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
        case = cases[index]
        keys = ("image", "label", "label_fg_indices", "label_bg_indices")
        sample = augment({key: case[key] for key in keys})[0]
        # plain tensors: MONAI's MetaTensor would wrap every network operation (much slower)
        images.append(_plain(sample["image"]).float())
        labels.append(_plain(sample["label"]).long())
    return torch.stack(images).to(device), torch.stack(labels).to(device)


def validate(network, cases: list[dict], plans: Plans, device: torch.device) -> tuple[tuple[int, float], ...]:
    """Sliding-window Dice per label on the preprocessed validation cases (resampled grid)."""
    from monai.inferers import sliding_window_inference

    from unetrpp.evaluate.metrics import dice_per_label

    if not cases:
        return ()
    network.eval()
    previous = network.deep_supervision
    network.deep_supervision = False
    labels = list(range(1, plans.num_classes))
    scores: dict[int, list[float]] = {value: [] for value in labels}
    try:
        with torch.inference_mode():
            for case in cases:
                image = _plain(case["image"]).permute(0, 3, 2, 1)[None].float().to(device)
                logits = sliding_window_inference(
                    image, plans.patch_size_zyx, 2, network, overlap=0.25, mode="gaussian"
                )
                prediction = logits.argmax(1)[0].cpu().numpy()
                truth = _plain(case["label"]).permute(0, 3, 2, 1)[0].numpy()
                for value, dice in dice_per_label(prediction, truth, labels):
                    scores[value].append(dice)
    finally:
        network.deep_supervision = previous
        network.train()
    result = []
    for value in labels:
        present = [d for d in scores[value] if not math.isnan(d)]
        result.append((value, float(np.mean(present)) if present else float("nan")))
    return tuple(result)
