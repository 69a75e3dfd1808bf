"""What :func:`unetrpp.segment` takes and gives: ``SegmentOptions``, ``SegmentResult``, ``StructureVolume``.

Plain frozen dataclasses, kept apart from the pipeline that uses them; options are validated when
they are built, so a bad value fails before any image or weight is read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import SimpleITK as sitk

from unetrpp.errors import UnetrppError
from unetrpp.labels.terminology import Structure
from unetrpp.models.cards import ModelCard
from unetrpp.pipeline.backends import check_backend
from unetrpp.pipeline.geometry import check_orientation_code
from unetrpp.pipeline.sliding_window import Accumulation, Precision, SlidingWindowConfig

__all__ = ["QUALITY_SETTINGS", "Quality", "SegmentOptions", "SegmentResult", "StructureVolume"]


class Quality(str, enum.Enum):
    """Presets of the settings that trade time for faithfulness to the paper (CLI ``--quality``).

    FAST, the default: one pass per tile, air outside a CT's body skipped, the arithmetic the device
    is fastest in (``benchmarks/RESULTS.md`` measures its agreement with the reference way).
    PAPER: what the UNETR++ paper's numbers used, the official nnU-Net v1 validation: the logits of all
    8 mirrorings of each tile averaged, every tile run (no body mask, no reuse of constant tiles),
    tiles overlapping by half a patch (the official step size 0.5), fp32 arithmetic and a float32
    accumulator. Eight passes per tile, each in fp32 and over air too: many times the time of FAST
    (``benchmarks/bench_quality.py`` measures both, ``benchmarks/RESULTS.md``).
    """

    FAST = "fast"
    PAPER = "paper"


# The options each preset decides. An option left None takes its preset's value; under PAPER a value
# given explicitly must equal the paper's (anything else is not what the paper ran).
QUALITY_SETTINGS: MappingProxyType[Quality, MappingProxyType[str, Any]] = MappingProxyType(
    {
        Quality.FAST: MappingProxyType(
            {
                "overlap": 0.5,
                "use_tta": False,
                "precision": Precision.AUTO,
                "accumulation": Accumulation.FLOAT16,
                "skip_empty_tiles": True,
                "crop_to_body": True,
            }
        ),
        Quality.PAPER: MappingProxyType(
            {
                "overlap": 0.5,
                "use_tta": True,
                "precision": Precision.FP32,
                "accumulation": Accumulation.FLOAT32,
                "skip_empty_tiles": False,
                "crop_to_body": False,
            }
        ),
    }
)


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment; every field is checked before the weights are loaded.

    The six options that :class:`Quality` decides (``overlap``, ``use_tta``, ``precision``,
    ``accumulation``, ``skip_empty_tiles``, ``crop_to_body``) default to None: the value of ``quality``'s
    preset (:data:`QUALITY_SETTINGS`; for FAST the values below). After construction they hold the
    value in use.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        quality: the preset, ``fast`` (default) or ``paper`` (what the paper's numbers used); see
            :class:`Quality`.
        overlap: sliding-window overlap between neighbouring tiles, in [0, 1).
        use_tta: mirroring test-time augmentation over the three axes (8x slower, slightly better).
        structures: names (or label values) of the structures to keep; None keeps all. Others become
            background and are left out of the file.
        keep_largest_component: keep only the largest connected component of each structure.
        orientation: 3-letter code the image is brought into before inference, or ``"native"`` (no
            reorientation: the voxel order as stored); None uses the model card's (the orientation the
            weights were trained in).
        precision: forward-pass arithmetic: ``auto`` (fp16 on CUDA; bf16 on CPUs with bf16 instructions,
            else fp32), ``fp32``, ``bf16``, ``fp16`` (CUDA only).
        batch_size: tiles per forward pass.
        accumulation: dtype of the blended logits, ``float16`` (half the memory) or ``float32``.
        skip_empty_tiles: predict a tile of constant input (air, padding) once and reuse it.
        crop_to_body: CT models only: skip the tiles that are mostly air outside the patient (under 20%
            of their voxels in the body: the voxels above -500 HU and the air they enclose in each
            axial slice, lungs and bowel gas included; unless a body voxel needs them) and label what no
            tile covers background. The tile grid stays the whole image's; 153 instead of 256 tiles on
            the synthetic abdomen of ``benchmarks/bench_segment.py``.
        series_uid: DICOM folder input only: the series to read when the folder holds several.
        check_modality: before inference, warn (a ``WarningEvent``) when an input does not look like
            what the model was trained on: a CT model given an MR or an image not in Hounsfield units,
            an MR model given a CT (:mod:`unetrpp.pipeline.modality`). False skips the check (CLI
            ``--force-modality``).
        refuse_wrong_modality: make that check's finding an ``InputImageError`` instead of a warning: a
            cohort (``unetrpp batch``) fails such a case alone rather than hiding a meaningless result
            among thousands.
        backend: what runs the network on the CPU: ``auto`` (OpenVINO when installed, for the large
            networks; else torch), ``torch`` or ``openvino`` (``pip install "unetrpp[openvino]"``); on
            CUDA always torch (:mod:`unetrpp.pipeline.backends`).
    """

    device: str = "auto"
    quality: Quality = Quality.FAST
    overlap: float | None = None
    use_tta: bool | None = None
    structures: tuple[str, ...] | None = None
    keep_largest_component: bool = False
    orientation: str | None = None
    precision: Precision | None = None
    batch_size: int = 1
    accumulation: Accumulation | None = None
    skip_empty_tiles: bool | None = None
    crop_to_body: bool | None = None
    series_uid: str | None = None
    check_modality: bool = True
    refuse_wrong_modality: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        self._apply_quality()
        object.__setattr__(self, "backend", check_backend(self.backend, self.device).value)
        if isinstance(self.structures, str):  # "liver,spleen" rather than ("liver", "spleen")
            object.__setattr__(self, "structures", tuple(self.structures.split(",")))
        if self.structures is not None:
            object.__setattr__(self, "structures", tuple(str(s).strip() for s in self.structures))
        if self.orientation is not None:
            object.__setattr__(self, "orientation", check_orientation_code(self.orientation))
        config = self.sliding_window_config()  # validates overlap, precision, batch size, accumulation
        object.__setattr__(self, "precision", config.precision)
        object.__setattr__(self, "accumulation", config.accumulation)

    def _apply_quality(self) -> None:
        """Fill the options left None from the preset; refuse an explicit one that leaves the paper's."""
        try:
            quality = Quality(self.quality)
        except ValueError:
            choices = ", ".join(q.value for q in Quality)
            raise UnetrppError(f"quality must be one of {choices}, got {self.quality!r}") from None
        object.__setattr__(self, "quality", quality)
        for name, preset in QUALITY_SETTINGS[quality].items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, preset)
            elif quality is Quality.PAPER and _normalised(name, value) != preset:
                raise UnetrppError(
                    f"the paper preset runs {name}={_shown(preset)}, not {_shown(value)}: leave {name} out, "
                    "or use quality 'fast' to choose it"
                )

    def sliding_window_config(self) -> SlidingWindowConfig:
        return SlidingWindowConfig(
            overlap=self.overlap,
            use_mirroring=self.use_tta,
            batch_size=self.batch_size,
            precision=self.precision,
            accumulation=self.accumulation,
            skip_empty_tiles=self.skip_empty_tiles,
        )


def _normalised(name: str, value: Any) -> Any:
    """``value`` in the preset's type, so that "fp32" equals Precision.FP32 and 0.5 equals 0.50."""
    kinds = {"precision": Precision, "accumulation": Accumulation, "overlap": float, "use_tta": bool}
    kind = kinds.get(name, bool)
    try:
        return kind(value)
    except ValueError:
        return value  # not a valid value at all: the sliding-window check names it


def _shown(value: Any) -> str:
    return str(value.value if isinstance(value, enum.Enum) else value)


@dataclass(frozen=True)
class StructureVolume:
    """Size of one segmented structure."""

    label_value: int
    name: str
    voxels: int
    volume_ml: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_value": self.label_value,
            "name": self.name,
            "voxels": self.voxels,
            "volume_ml": self.volume_ml,
        }


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment` produced.

    Attributes:
        label_map: 3D integer image on the input grid (same size, origin, spacing, direction).
        structures: the structures in the label map (and the file), by label value.
        volumes: voxel count and volume (mL) of each structure, in the order of ``structures``.
        output: the ``.seg.nrrd`` written, or None when no output path was given.
        model: the model card used.
        elapsed_seconds: wall time of the whole call.
        stage_seconds: wall time per stage (read, load_model, preprocess, inference, resample, write).
    """

    label_map: sitk.Image
    structures: tuple[Structure, ...]
    volumes: tuple[StructureVolume, ...]
    output: Path | None
    model: ModelCard
    elapsed_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: output, model, per-structure voxels and mL, timings."""
        return {
            "output": str(self.output) if self.output else None,
            "model": self.model.name,
            "structures": [v.to_dict() for v in self.volumes],
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }
