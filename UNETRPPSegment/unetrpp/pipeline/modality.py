"""Does the input look like the kind of scan the model was trained on? One warning line, or None.

A CT model run on an MR (or an MR model on a CT) still gives a plausible-looking organ table: the bundled
CT ``demo`` model labelled a brain MR "right kidney 1443 mL" without a word. So before inference
:func:`unetrpp.segment` asks :func:`modality_warning` and emits its answer as a ``WarningEvent``
(``SegmentOptions(check_modality=False)``, CLI ``--force-modality``, turns it off); the Slicer module asks
the same function before it starts a run.

What each input channel should be comes from the model's plans (nnU-Net's per-channel normalisation:
``CT`` = Hounsfield units, ``nonCT`` = anything else, usually MR), or from the card's ``modality`` when
the plans are not known yet. The rules, per channel:

* a DICOM Modality (0008,0060), when the input came from DICOM: a CT channel warns unless it is ``CT``,
  a non-CT channel warns when it is ``CT``;
* otherwise (and also for a DICOM CT, which could still be stored without its rescale to HU) the
  share of voxels below -500 HU, the body-mask threshold halfway between air (-1000) and fat (-100):

  - CT channel: warns when under ``CT_MIN_AIR_FRACTION`` (0.5 %). Every CT of a body has air around
    it or inside it (lungs, bowel gas); an MR has none: its values start near 0. On the real scans in
    ``Testing/data/real_inputs`` the share below -500 is 35.9 % (TotalSegmentator example CT), 55.1 %
    (dcmqi 3-slice CT), 65.0 % (TotalSegmentator CT DICOM series), but 0.00 % for the abdominal MR,
    the MR DICOM series, the BraTS FLAIR and both prostate MRs, and 0.01 % for the brain MR (a few
    reconstruction undershoots down to -610). 0.5 % lies 50x above the highest MR and 70x below the
    lowest CT. A normalised image (floats in [0, 1], z-scores) or a CT stored without its rescale
    (air at 0) has no voxel below -500 either, and is warned about too. Only a CT cropped to the
    inside of the body (no air at all) is a false alarm; it is also not what the bundled CT models
    were trained on (whole fields of view).
  - non-CT channel: warns when at least ``MR_MAX_AIR_FRACTION`` (10 %) of the voxels lie below -500
    and the lowest value is at most -900 (air is -1000 HU; scanners pad with -1024, -2048 or -3024).
    The real CTs have 36-65 % below -500 and minima -1207, -3024 and -1024; no MR above reaches -900
    or 0.1 %.

Before either rule, any channel whose voxels are a few small non-negative integers (at most
``LABEL_MAP_MAX_VALUES`` distinct values, none above ``LABEL_MAP_MAX_LABEL``) is a label map given as an
image, and warned about whatever the model: no CT or MR scan has so few grey values.

The statistics are computed on a strided subsample of at most ``SAMPLE_VOXELS`` voxels (every 5th voxel
along each axis of a 512 x 512 x 300 CT): a share is estimated to well under 1 % that way, and the check
costs milliseconds rather than a pass over a whole volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetrpp.models.cards import ModelCard, NormalizationScheme, Plans
from unetrpp.pipeline.body_crop import BODY_THRESHOLD_HU

__all__ = [
    "AIR_HU",
    "CT_MIN_AIR_FRACTION",
    "MR_MAX_AIR_FRACTION",
    "PADDING_HU",
    "SAMPLE_VOXELS",
    "MODALITY_TAG",
    "IntensityStats",
    "intensity_stats",
    "expects_ct",
    "dicom_modality",
    "modality_warning",
]

AIR_HU = BODY_THRESHOLD_HU  # -500: below it is air (-1000 HU), above it fat, tissue, bone
CT_MIN_AIR_FRACTION = 0.005  # a CT channel with less air than this does not look like a CT in HU
MR_MAX_AIR_FRACTION = 0.10  # a non-CT channel with this much "air" (and PADDING_HU) looks like a CT
PADDING_HU = -900.0  # a CT's lowest value is air (-1000) or padding (-1024, -2048, -3024)
SAMPLE_VOXELS = 1_000_000
LABEL_MAP_MAX_VALUES = 64  # label maps hold a few labels; a CT or MR has hundreds of grey values
LABEL_MAP_MAX_LABEL = 1000
MODALITY_TAG = "0008|0060"  # DICOM Modality, as SimpleITK names metadata keys


@dataclass(frozen=True)
class IntensityStats:
    """What the rules look at, from a subsample: share of voxels below ``AIR_HU``, lowest and highest,
    and for integer voxels how many distinct values (None for floats)."""

    air_fraction: float
    minimum: float
    maximum: float
    distinct_integers: int | None = None


def intensity_stats(array: Any) -> IntensityStats:
    """Statistics of a voxel array (any shape; a SimpleITK image is read as its array view)."""
    values = _array(array)
    if values.size > SAMPLE_VOXELS:
        step = math.ceil((values.size / SAMPLE_VOXELS) ** (1.0 / values.ndim))
        values = values[(slice(None, None, step),) * values.ndim]
    minimum, maximum = float(values.min()), float(values.max())
    few = np.issubdtype(values.dtype, np.integer) and minimum >= 0 and maximum <= LABEL_MAP_MAX_LABEL
    return IntensityStats(
        air_fraction=float(np.count_nonzero(values < AIR_HU)) / max(values.size, 1),
        minimum=minimum,
        maximum=maximum,
        distinct_integers=int(np.unique(values).size) if few else None,
    )


def expects_ct(card: ModelCard, plans: Plans | None = None) -> tuple[bool, ...]:
    """Per input channel: True when the model wants Hounsfield units (``CT`` normalisation).

    From ``plans`` (the loaded model's), else the card's own plans, else the card's ``modality``
    (``CT`` for every channel or none).
    """
    plans = plans if plans is not None else card.plans
    if plans is not None and len(plans.channels) == card.num_inputs:
        return tuple(channel.scheme is NormalizationScheme.CT for channel in plans.channels)
    return (card.modality.strip().upper() == "CT",) * card.num_inputs


def dicom_modality(image: Any) -> str | None:
    """The DICOM Modality a SimpleITK image carries (a DICOM file, or a series read by
    :func:`unetrpp.pipeline.dicom.read_dicom_series`), upper case; None when it has none."""
    has_key = getattr(image, "HasMetaDataKey", None)
    if has_key is None or not has_key(MODALITY_TAG):
        return None
    return image.GetMetaData(MODALITY_TAG).strip().upper() or None


def modality_warning(
    images: Sequence[Any],
    card: ModelCard,
    *,
    plans: Plans | None = None,
    dicom_modalities: Sequence[str | None] | None = None,
) -> str | None:
    """One line saying why the inputs do not look like what ``card``'s model expects, or None.

    Args:
        images: one SimpleITK image or numpy voxel array per model input channel, in card order.
        card: the model's card (its name, channel names and modality go into the message).
        plans: the loaded model's plans (per-channel normalisation), when known.
        dicom_modalities: per input, the DICOM Modality when it came from DICOM (None: not DICOM or
            unknown); by default read from each SimpleITK image's metadata.
    """
    if dicom_modalities is None:
        dicom_modalities = [dicom_modality(image) for image in images]
    problems = []
    for index, (image, wants_ct) in enumerate(zip(images, expects_ct(card, plans), strict=False)):
        tag = dicom_modalities[index] if index < len(dicom_modalities) else None
        problem = _channel_problem(image, wants_ct, tag.strip().upper() if tag else None)
        if problem:
            channel = card.input_channels[index] if index < card.num_inputs else str(index + 1)
            name = "the input" if len(images) == 1 else f"input {index + 1} ({channel})"
            problems.append(f"{name} {problem}")
    if not problems:
        return None
    wanted = "CT in Hounsfield units" if any(expects_ct(card, plans)) else f"{card.modality}, not CT"
    return f"model {card.name!r} expects {wanted}, but {'; '.join(problems)}; its result would be meaningless"


def _channel_problem(image: Any, wants_ct: bool, tag: str | None) -> str | None:
    if tag is not None and (tag != "CT") == wants_ct:
        return f"is a DICOM series of Modality {tag}"
    if tag is not None and not wants_ct:
        return None  # the series says it is not a CT: nothing more to check
    stats = intensity_stats(image)
    if stats.distinct_integers is not None and stats.distinct_integers <= LABEL_MAP_MAX_VALUES:
        return (
            f"looks like a label map, not a scan: only {stats.distinct_integers} distinct values, the "
            f"integers {stats.minimum:.0f} to {stats.maximum:.0f}"
        )
    percent = f"{100 * stats.air_fraction:.2g}% of its voxels"
    values = f"values {stats.minimum:.5g} to {stats.maximum:.5g}"
    if wants_ct and stats.air_fraction < CT_MIN_AIR_FRACTION:
        return (
            f"has no air: {percent} below {AIR_HU:g} HU, where a CT of a body has air around or inside it "
            f"({values}: an MR, or a CT not in Hounsfield units?)"
        )
    if not wants_ct and stats.air_fraction >= MR_MAX_AIR_FRACTION and stats.minimum <= PADDING_HU:
        return f"looks like a CT in Hounsfield units: {percent} below {AIR_HU:g} (air), {values}"
    return None


def _array(image: Any) -> np.ndarray:
    if hasattr(image, "GetPixelIDValue"):  # a SimpleITK image
        import SimpleITK as sitk

        return sitk.GetArrayViewFromImage(image)
    return np.asarray(image)
