"""nnU-Net v1 plans (the dict inside an official ``.model.pkl``) → the typed :class:`Plans` inference needs.

The layout follows nnU-Net v1's experiment planner and trainer (``process_plans``):

* ``plans_per_stage``: ``{0: {...}, 1: {...}}``; with two stages 0 is ``3d_lowres`` and the last one
  ``3d_fullres``, which is what the UNETR++ trainers train on. ``current_spacing`` and ``patch_size``
  are already in the transposed axis order.
* ``normalization_schemes``: ``{channel: "CT" | "nonCT" | ...}``; ``use_mask_for_norm``:
  ``{channel: bool}``.
* ``dataset_properties["intensityproperties"][channel]``: foreground ``mean``, ``sd``,
  ``percentile_00_5``, ``percentile_99_5`` (collected only for CT datasets; None otherwise).
* ``num_classes`` counts foreground classes only; the network has one more output (background).
* ``transpose_forward`` / ``transpose_backward``: axis permutations (absent in very old plans,
  where the trainer assumes identity).

Values are numpy scalars and arrays in real files; everything is converted to plain Python here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unetrpp.errors import CheckpointError
from unetrpp.models.cards import ChannelNormalization, NormalizationScheme, Plans

__all__ = ["plans_from_nnunet_dict", "fullres_stage"]

_SCHEMES = {"CT": NormalizationScheme.CT, "nonCT": NormalizationScheme.ZSCORE}


def _require(mapping: Mapping[Any, Any], key: Any, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise CheckpointError(f"nnU-Net plans lack {where}[{key!r}]; is this an nnU-Net v1 plans file?")
    return mapping[key]


def _by_channel(mapping: Any, channel: int, where: str) -> Any:
    """``mapping[channel]``; nnU-Net keys channels by int, but JSON-ish copies may use strings."""
    if isinstance(mapping, Mapping):
        for key in (channel, str(channel)):
            if key in mapping:
                return mapping[key]
    elif isinstance(mapping, (list, tuple)) and channel < len(mapping):
        return mapping[channel]
    raise CheckpointError(f"nnU-Net plans lack {where} for input channel {channel}")


def fullres_stage(plans: Mapping[str, Any], stage: int | None = None) -> Mapping[str, Any]:
    """The stage plans of ``stage`` or, by default, of the last stage (``3d_fullres``)."""
    stages = _require(plans, "plans_per_stage", "plans")
    if isinstance(stages, Mapping):
        keys = sorted(stages, key=int)
        if not keys:
            raise CheckpointError("nnU-Net plans have an empty plans_per_stage")
        chosen = stage if stage in stages else keys[-1]
        return stages[chosen]
    if isinstance(stages, (list, tuple)) and stages:
        return stages[stage if stage is not None and 0 <= stage < len(stages) else -1]
    raise CheckpointError("nnU-Net plans have no usable plans_per_stage")


def _channel_normalization(plans: Mapping[str, Any], channel: int) -> ChannelNormalization:
    scheme_name = str(_by_channel(plans["normalization_schemes"], channel, "normalization_schemes"))
    if scheme_name not in _SCHEMES:
        raise CheckpointError(
            f"input channel {channel} uses nnU-Net normalisation '{scheme_name}', which unetrpp does not "
            f"implement (supported: {', '.join(_SCHEMES)})"
        )
    scheme = _SCHEMES[scheme_name]
    masks = plans.get("use_mask_for_norm") or {}
    try:
        use_mask = bool(_by_channel(masks, channel, "use_mask_for_norm"))
    except CheckpointError:
        use_mask = False
    if scheme is not NormalizationScheme.CT:
        return ChannelNormalization(scheme, use_nonzero_mask=use_mask)
    properties = _require(plans, "dataset_properties", "plans")
    intensity = _require(properties, "intensityproperties", "plans['dataset_properties']")
    if intensity is None:
        raise CheckpointError(f"CT input channel {channel} has no intensity properties in the nnU-Net plans")
    stats = _by_channel(intensity, channel, "intensityproperties")
    where = f"intensityproperties[{channel}]"
    return ChannelNormalization(
        scheme,
        use_nonzero_mask=use_mask,
        mean=float(_require(stats, "mean", where)),
        sd=float(_require(stats, "sd", where)),
        lower_bound=float(_require(stats, "percentile_00_5", where)),
        upper_bound=float(_require(stats, "percentile_99_5", where)),
    )


def plans_from_nnunet_dict(plans: Mapping[str, Any], *, stage: int | None = None) -> Plans:
    """Extract what inference needs from nnU-Net v1 plans.

    Args:
        plans: the ``plans`` dict of an official ``.model.pkl`` (or a ``nnUNetPlans*.pkl``).
        stage: stage the model was trained on (the trainer's ``init`` argument); None picks the last
            stage, ``3d_fullres``.

    Returns:
        :class:`Plans` with per-channel normalisation, target spacing and patch size of that stage
        (both in transposed (z, y, x) order), class count including background and the transposes.

    Raises:
        CheckpointError: a required entry is missing or uses a scheme unetrpp cannot reproduce.
    """
    if not isinstance(plans, Mapping):
        raise CheckpointError(f"nnU-Net plans must be a dict, got {type(plans).__name__}")
    stage_plans = fullres_stage(plans, stage)
    schemes = _require(plans, "normalization_schemes", "plans")
    num_channels = len(schemes)
    if num_channels == 0:
        raise CheckpointError("nnU-Net plans list no input channels (normalization_schemes is empty)")
    spacing = [float(s) for s in _require(stage_plans, "current_spacing", "plans_per_stage[stage]")]
    patch_size = [int(s) for s in _require(stage_plans, "patch_size", "plans_per_stage[stage]")]
    if len(spacing) != 3 or len(patch_size) != 3:
        raise CheckpointError(f"nnU-Net plans are not 3D (spacing {spacing}, patch size {patch_size})")
    transpose_forward = plans.get("transpose_forward")
    transpose_backward = plans.get("transpose_backward")
    if transpose_forward is None or transpose_backward is None:
        transpose_forward = transpose_backward = (0, 1, 2)  # what nnU-Net assumes for old plans
    try:
        return Plans(
            channels=tuple(_channel_normalization(plans, c) for c in range(num_channels)),
            target_spacing_zyx=tuple(spacing),
            patch_size_zyx=tuple(patch_size),
            num_classes=int(_require(plans, "num_classes", "plans")) + 1,
            transpose_forward=tuple(int(a) for a in transpose_forward),
            transpose_backward=tuple(int(a) for a in transpose_backward),
        )
    except ValueError as e:
        raise CheckpointError(f"nnU-Net plans are inconsistent: {e}") from e
