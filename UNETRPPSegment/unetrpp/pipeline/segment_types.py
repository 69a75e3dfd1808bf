"""What :func:`unetrpp.segment` takes and gives: ``SegmentOptions``, ``SegmentResult``, ``StructureVolume``.

Plain frozen dataclasses, kept apart from the pipeline that uses them; options are validated when
they are built, so a bad value fails before any image or weight is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from unetrpp.labels.terminology import Structure
from unetrpp.models.cards import ModelCard
from unetrpp.pipeline.geometry import check_orientation_code
from unetrpp.pipeline.sliding_window import Accumulation, Precision, SlidingWindowConfig

__all__ = ["SegmentOptions", "SegmentResult", "StructureVolume"]


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment; every field is checked before the weights are loaded.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
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
    """

    device: str = "auto"
    overlap: float = 0.5
    use_tta: bool = False
    structures: tuple[str, ...] | None = None
    keep_largest_component: bool = False
    orientation: str | None = None
    precision: Precision = Precision.AUTO
    batch_size: int = 1
    accumulation: Accumulation = Accumulation.FLOAT16
    skip_empty_tiles: bool = True
    crop_to_body: bool = True
    series_uid: str | None = None
    check_modality: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.structures, str):  # "liver,spleen" rather than ("liver", "spleen")
            object.__setattr__(self, "structures", tuple(self.structures.split(",")))
        if self.structures is not None:
            object.__setattr__(self, "structures", tuple(str(s).strip() for s in self.structures))
        if self.orientation is not None:
            object.__setattr__(self, "orientation", check_orientation_code(self.orientation))
        config = self.sliding_window_config()  # validates overlap, precision, batch size, accumulation
        object.__setattr__(self, "precision", config.precision)
        object.__setattr__(self, "accumulation", config.accumulation)

    def sliding_window_config(self) -> SlidingWindowConfig:
        return SlidingWindowConfig(
            overlap=self.overlap,
            use_mirroring=self.use_tta,
            batch_size=self.batch_size,
            precision=self.precision,
            accumulation=self.accumulation,
            skip_empty_tiles=self.skip_empty_tiles,
        )


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
