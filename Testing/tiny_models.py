"""A tiny random UNETR++ with the synapse labels, for tests that need a real network that runs fast.

Its weights are random but seeded, so it labels voxels arbitrarily yet the same way every time: tests
compare runs with each other, or check geometry, files and messages, never accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from unetrpp.labels.terminology import structures_for
from unetrpp.models.cards import ChannelNormalization, LoadedModel, ModelCard, Plans

TINY_PATCH_ZYX = (16, 32, 32)
TINY_OVERRIDES = {
    "patch_size": TINY_PATCH_ZYX,
    "feature_size": 4,
    "dims": (8, 16, 32, 64),
    "deep_supervision": False,
}
NUM_CLASSES = 14  # background and the 13 synapse organs


def ct_plans(target_spacing_zyx: tuple[float, float, float], mean: float = 40.0, sd: float = 80.0) -> Plans:
    """CT plans (a soft-tissue window) resampling to ``target_spacing_zyx``, tiled with the tiny patch."""
    channel = ChannelNormalization("CT", mean=mean, sd=sd, lower_bound=-160.0, upper_bound=240.0)
    return Plans((channel,), target_spacing_zyx, TINY_PATCH_ZYX, NUM_CLASSES)


def tiny_synapse_model(
    plans: Plans, name: str = "tiny-synapse", modality: str = "CT", input_channels: tuple[str, ...] = ("CT",)
) -> LoadedModel:
    """The network (seed 0) with a card for ``plans``, ready for ``unetrpp.segment``."""
    from unetrpp.network import build_network

    torch.manual_seed(0)
    network = build_network("synapse", out_channels=NUM_CLASSES, **TINY_OVERRIDES)
    card = ModelCard(
        name=name,
        title=f"tiny random {modality} UNETR++ (test)",
        task="abdominal organs",
        modality=modality,
        input_channels=input_channels,
        label_set="synapse",
        labels=tuple((s.label_value, s.name) for s in structures_for("synapse")),
        variant="synapse",
        patch_size_zyx=TINY_PATCH_ZYX,
        network_overrides={**TINY_OVERRIDES, "out_channels": NUM_CLASSES},
        orientation="RAS",
        plans=plans,
    )
    return LoadedModel(network.eval(), card, plans)


def save_tiny_synapse(path: Path, plans: Plans, **card_fields: object) -> Path:
    """The tiny model as a ``.unetrpp`` file at ``path`` (what the CLI and the Slicer child load)."""
    from unetrpp.models.checkpoint import save_model

    model = tiny_synapse_model(plans, **card_fields)
    return save_model(path, model.network, model.card)
