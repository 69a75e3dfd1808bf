"""Typed descriptions of a model: what inference needs (``Plans``) and what a user reads (``ModelCard``).

Both are frozen dataclasses with ``to_dict``/``from_dict`` so they travel as JSON inside this
project's own model files and in the bundled registry. No string-keyed dict crosses a module boundary.

Axis order: every ``*_zyx`` field follows the numpy array order of an image read with SimpleITK
(``GetArrayFromImage`` gives (z, y, x)), after the model's orientation step.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "NATIVE_ORIENTATION",
    "NormalizationScheme",
    "ChannelNormalization",
    "Plans",
    "WeightsSource",
    "ModelCard",
    "LoadedModel",
]


NATIVE_ORIENTATION = "native"  # no reorientation: the network gets the voxel order as stored


class NormalizationScheme(str, enum.Enum):
    """nnU-Net v1 intensity normalisation schemes."""

    CT = "CT"  # clip to dataset percentiles, then z-score with dataset mean/sd
    ZSCORE = "nonCT"  # per-image z-score (inside the non-zero mask when use_nonzero_mask)


@dataclass(frozen=True)
class ChannelNormalization:
    """How one input channel is normalised.

    ``mean``, ``sd``, ``lower_bound`` (0.5th percentile) and ``upper_bound`` (99.5th percentile)
    are the training set's foreground statistics; only the CT scheme uses them.
    """

    scheme: NormalizationScheme
    use_nonzero_mask: bool = False
    mean: float | None = None
    sd: float | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", NormalizationScheme(self.scheme))
        if self.scheme is NormalizationScheme.CT and None in (
            self.mean,
            self.sd,
            self.lower_bound,
            self.upper_bound,
        ):
            raise ValueError("CT normalisation needs mean, sd, lower_bound and upper_bound")


@dataclass(frozen=True)
class Plans:
    """The subset of nnU-Net v1 plans that inference needs.

    Attributes:
        channels: normalisation per input channel, in input order.
        target_spacing_zyx: spacing (mm) the network was trained at (3d_fullres stage), in the
            array axis order after ``transpose_forward``.
        patch_size_zyx: tile size of the sliding window; the network's native patch.
        num_classes: number of output channels including background.
        transpose_forward: axis permutation applied to the (z, y, x) array before inference.
        transpose_backward: its inverse, applied to the prediction.
        use_nonzero_crop: crop to the non-zero bounding box before resampling (nnU-Net v1 always does).
    """

    channels: tuple[ChannelNormalization, ...]
    target_spacing_zyx: tuple[float, float, float]
    patch_size_zyx: tuple[int, int, int]
    num_classes: int
    transpose_forward: tuple[int, int, int] = (0, 1, 2)
    transpose_backward: tuple[int, int, int] = (0, 1, 2)
    use_nonzero_crop: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "channels",
            tuple(
                c if isinstance(c, ChannelNormalization) else ChannelNormalization(**c) for c in self.channels
            ),
        )
        object.__setattr__(self, "target_spacing_zyx", tuple(float(s) for s in self.target_spacing_zyx))
        object.__setattr__(self, "patch_size_zyx", tuple(int(s) for s in self.patch_size_zyx))
        object.__setattr__(self, "transpose_forward", tuple(int(a) for a in self.transpose_forward))
        object.__setattr__(self, "transpose_backward", tuple(int(a) for a in self.transpose_backward))
        if not self.channels:
            raise ValueError("plans need at least one input channel")
        if len(self.target_spacing_zyx) != 3 or min(self.target_spacing_zyx) <= 0:
            raise ValueError(f"target spacing must be three positive numbers, got {self.target_spacing_zyx}")
        if sorted(self.transpose_forward) != [0, 1, 2]:
            raise ValueError(f"transpose_forward must permute (0, 1, 2), got {self.transpose_forward}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2, got {self.num_classes}")

    @property
    def num_input_channels(self) -> int:
        return len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = [{**c, "scheme": c["scheme"].value} for c in data["channels"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plans:
        return cls(**{**data, "channels": tuple(ChannelNormalization(**c) for c in data["channels"])})


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from.

    ``format`` is ``"official"`` (an nnU-Net v1 ``model_final_checkpoint.model``, plans read from a
    sibling ``.pkl`` or from the card) or ``"unetrpp"`` (this project's single-file format).
    ``sha256`` is None when the publisher gives no hash; the store then records the hash of what it
    downloaded so that later corruption is still detected.
    """

    url: str
    filename: str
    format: str = "official"
    sha256: str | None = None
    size_bytes: int | None = None
    plans_url: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything a user or the pipeline needs to know about one model.

    Attributes:
        name: registry key used on the command line (``--model synapse``).
        label_set: ``dataset`` key of the bundled terminology table (``synapse``, ``acdc``, ``brats``,
            ``lung``) giving names, colours and SNOMED CT codes of the output labels.
        labels: (label value, structure name) for every foreground output channel.
        input_channels: channel names in the order the network expects them (FLAIR, T1w, ...).
        variant: network variant passed to ``unetrpp.network.build_network``.
        network_overrides: extra ``build_network`` keyword arguments (e.g. smaller widths).
        orientation: DICOM-style 3-letter code (``sitk.DICOMOrient``: each letter names the direction
            towards which the i, j, k index increases) the image is brought into before inference, or
            ``"native"``: no reorientation, the voxel order as stored (as nnU-Net v1 feeds it).
        orientation_note: why that orientation (the evidence and how sure it is); official weights
            never saw orientation metadata.
        plans: preprocessing; None when it must be read from the plans shipped with the weights.
        mirror_axes_zyx: the array axes training mirrored images along, so test-time mirroring may
            use them: (0, 1, 2) for nnU-Net's (and so the official) trainers; () for a model trained
            without mirroring (the bundled demo), which test-time mirroring would show images it never
            saw (the demo's Dice fell from 0.93 to 0.44 with 8 mirrorings, benchmarks/RESULTS.md).
    """

    name: str
    title: str
    task: str
    modality: str
    input_channels: tuple[str, ...]
    label_set: str
    labels: tuple[tuple[int, str], ...]
    variant: str
    patch_size_zyx: tuple[int, int, int]
    network_overrides: dict[str, Any] = field(default_factory=dict)
    orientation: str = "RAS"
    orientation_note: str = ""
    plans: Plans | None = None
    mirror_axes_zyx: tuple[int, ...] = (0, 1, 2)
    weights: tuple[WeightsSource, ...] = ()
    licence: str = ""
    citation: str = ""
    paper_accuracy: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_channels", tuple(self.input_channels))
        object.__setattr__(self, "labels", tuple((int(v), str(n)) for v, n in self.labels))
        object.__setattr__(self, "patch_size_zyx", tuple(int(s) for s in self.patch_size_zyx))
        object.__setattr__(self, "mirror_axes_zyx", tuple(int(a) for a in self.mirror_axes_zyx))
        if not set(self.mirror_axes_zyx) <= {0, 1, 2}:
            raise ValueError(f"mirror_axes_zyx must be among 0, 1, 2 (z, y, x), got {self.mirror_axes_zyx}")
        object.__setattr__(
            self,
            "weights",
            tuple(w if isinstance(w, WeightsSource) else WeightsSource(**w) for w in self.weights),
        )
        # JSON gives lists where the card had tuples; normalise so a reloaded card compares equal.
        object.__setattr__(
            self,
            "network_overrides",
            {k: tuple(v) if isinstance(v, list) else v for k, v in self.network_overrides.items()},
        )
        if isinstance(self.plans, dict):
            object.__setattr__(self, "plans", Plans.from_dict(self.plans))
        if self.orientation != NATIVE_ORIENTATION and len(self.orientation) != 3:
            raise ValueError(
                f"orientation must be a 3-letter code such as 'RAS' or {NATIVE_ORIENTATION!r}, "
                f"got {self.orientation!r}"
            )

    @property
    def num_inputs(self) -> int:
        return len(self.input_channels)

    @property
    def num_classes(self) -> int:
        """Output channels including background."""
        return max(v for v, _ in self.labels) + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plans"] = self.plans.to_dict() if self.plans else None
        data["labels"] = [list(pair) for pair in self.labels]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        return cls(**data)


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference and what it needs to be used correctly.

    Defined here, beside the card it carries, so that the readers (``checkpoint.py``, ``loader.py``)
    share it without importing each other.

    Attributes:
        network: the UNETR++ in eval mode with deep supervision off (one logits tensor per call).
        card: the model card; ``card.plans`` equals ``plans``.
        plans: preprocessing and tiling the weights were trained with.
        source: the file the weights came from.
    """

    network: nn.Module
    card: ModelCard
    plans: Plans
    source: Path | None = None
