"""Training data sets in the Medical Segmentation Decathlon / nnU-Net layout, and phantom data sets.

Layout (nnU-Net v1/v2 and MSD all read)::

    DATASET/
      dataset.json        channel names ("channel_names" or "modality"), labels ("labels"), and
                          optionally a "training" list of {"image": ..., "label": ...}
      imagesTr/CASE_0000.nii.gz   one file per channel (nnU-Net), or CASE.nii.gz (MSD, one channel)
      labelsTr/CASE.nii.gz

Labels are given either as ``{"background": 0, "liver": 1}`` (nnU-Net v2) or ``{"0": "background",
"1": "liver"}`` (MSD, nnU-Net v1); both become ``((1, "liver"),)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unetrpp.atomic import write_image_atomically
from unetrpp.errors import InputImageError, OutputExistsError
from unetrpp.events import EventCallback, ProgressTracker
from unetrpp.models.cards import ChannelNormalization, NormalizationScheme
from unetrpp.train.phantoms import PHANTOM_LABELS, PhantomOptions, generate_phantom

__all__ = [
    "TrainingCase",
    "TrainingDataset",
    "read_dataset",
    "write_phantom_dataset",
    "intensity_normalization",
    "median_spacing_zyx",
]

logger = logging.getLogger(__name__)

_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class TrainingCase:
    """One training example: channel files in network input order, and the label map file."""

    name: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class TrainingDataset:
    """A data set read from disk.

    Attributes:
        root: the data set folder.
        name: ``name`` from dataset.json (or the folder name).
        channel_names: input channel names, in input order (e.g. ``("CT",)``).
        labels: (label value, structure name) of every foreground label.
        cases: the training cases, sorted by name.
        label_set: terminology table key from dataset.json's ``label_set`` (this project's extension),
            or None.
    """

    root: Path
    name: str
    channel_names: tuple[str, ...]
    labels: tuple[tuple[int, str], ...]
    cases: tuple[TrainingCase, ...]
    label_set: str | None = None

    @property
    def is_ct(self) -> bool:
        return len(self.channel_names) == 1 and self.channel_names[0].strip().upper() == "CT"


def _strip_ending(name: str) -> str:
    for ending in _ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def _parse_labels(raw: dict) -> tuple[tuple[int, str], ...]:
    pairs = []
    for key, value in raw.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # {"liver": 1} (nnU-Net v2)
            pairs.append((int(value), str(key)))
        elif str(key).lstrip("-").isdigit():  # {"1": "liver"} (MSD, nnU-Net v1)
            pairs.append((int(key), str(value)))
        else:
            raise InputImageError(
                f"dataset.json label entry {key!r}: {value!r} is neither name->value nor value->name"
            )
    return tuple(sorted((v, n) for v, n in pairs if v != 0))


def _case_images(images_dir: Path, case: str, ending: str, num_channels: int) -> tuple[Path, ...]:
    plain = images_dir / f"{case}{ending}"
    per_channel = tuple(images_dir / f"{case}_{i:04d}{ending}" for i in range(num_channels))
    if all(p.is_file() for p in per_channel):
        return per_channel
    if num_channels == 1 and plain.is_file():
        return (plain,)
    raise InputImageError(f"no image for case '{case}' in {images_dir} (expected {per_channel[0].name})")


def read_dataset(root: str | Path) -> TrainingDataset:
    """Read ``dataset.json`` and pair every label file in ``labelsTr`` with its channel images.

    Raises:
        InputImageError: missing dataset.json, folders, labels or images (one line naming which).
    """
    root = Path(root)
    description_path = root / "dataset.json"
    if not description_path.is_file():
        raise InputImageError(f"{root} is not a training data set: it has no dataset.json")
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputImageError(f"{description_path} is not valid JSON: {error}") from error
    if not isinstance(description, dict):
        raise InputImageError(
            f"{description_path} holds a JSON {type(description).__name__}, not an object with "
            "'channel_names' and 'labels'"
        )
    channels = description.get("channel_names") or description.get("modality")
    if not channels:
        raise InputImageError(f"{description_path} names no input channels ('channel_names' or 'modality')")
    channel_names = tuple(str(channels[k]) for k in sorted(channels, key=int))
    labels = _parse_labels(description.get("labels") or {})
    if not labels:
        raise InputImageError(f"{description_path} lists no foreground labels")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise InputImageError(f"{root} needs imagesTr/ and labelsTr/ folders")
    cases = []
    for label_path in sorted(labels_dir.iterdir()):
        if label_path.name.startswith(".") or not label_path.name.endswith(_ENDINGS):
            continue
        case = _strip_ending(label_path.name)
        ending = label_path.name[len(case) :]
        cases.append(
            TrainingCase(case, _case_images(images_dir, case, ending, len(channel_names)), label_path)
        )
    if not cases:
        raise InputImageError(f"{labels_dir} holds no label files ({', '.join(_ENDINGS)})")
    return TrainingDataset(
        root,
        str(description.get("name", root.name)),
        channel_names,
        labels,
        tuple(cases),
        description.get("label_set"),
    )


def write_phantom_dataset(
    root: str | Path,
    count: int,
    *,
    seed: int = 0,
    options: PhantomOptions | None = None,
    on_event: EventCallback | None = None,
) -> TrainingDataset:
    """Generate ``count`` phantoms (seeds ``seed .. seed + count - 1``) as an nnU-Net-layout data set.

    Raises:
        OutputExistsError: ``root`` exists and is not empty.
    """
    root = Path(root)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if root.exists() and any(root.iterdir()):
        raise OutputExistsError(
            f"{root} exists and is not empty; choose a new folder for the phantom data set"
        )
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    tracker = ProgressTracker(on_event, "phantoms", count)
    for index in range(count):
        phantom = generate_phantom(seed + index, options or PhantomOptions())
        case = f"phantom_{seed + index:05d}"
        write_image_atomically(phantom.image, root / "imagesTr" / f"{case}_0000.nii.gz")
        write_image_atomically(phantom.label_map, root / "labelsTr" / f"{case}.nii.gz")
        tracker.advance()
    description = {
        "name": "UNETRPP synthetic abdomen phantoms",
        "description": f"{count} synthetic CT-like abdomen phantoms (seeds {seed}..{seed + count - 1}); "
        "not patient data, not for clinical use",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: value for value, name in PHANTOM_LABELS}},
        "label_set": "btcv",
        "numTraining": count,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return read_dataset(root)


def median_spacing_zyx(dataset: TrainingDataset) -> tuple[float, float, float]:
    """Median voxel spacing (mm) over the training cases, as (z, y, x) after RAS-like reorientation
    (only the axis-aligned part: the spacing along the axis that ends up as z, y or x)."""
    spacings = []
    for case in dataset.cases:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(case.label))
        reader.ReadImageInformation()
        direction = np.abs(np.array(reader.GetDirection()).reshape(3, 3))
        spacing = np.array(reader.GetSpacing())
        # world axis a (x, y, z) is mostly along index axis argmax(direction[a, :])
        spacings.append([spacing[int(np.argmax(direction[a]))] for a in (2, 1, 0)])
    median = np.median(np.array(spacings), axis=0)
    return tuple(float(v) for v in median)


def intensity_normalization(
    dataset: TrainingDataset, schemes: Sequence[NormalizationScheme] | None = None
) -> tuple[ChannelNormalization, ...]:
    """Per-channel normalisation as nnU-Net v1 plans it.

    CT channels get the CT scheme: mean, sd and the 0.5 / 99.5 percentiles of the voxels inside the
    labelled foreground (every 10th voxel of every case); other channels get a per-image z-score.
    """
    if schemes is None:
        schemes = [
            NormalizationScheme.CT if name.strip().upper() == "CT" else NormalizationScheme.ZSCORE
            for name in dataset.channel_names
        ]
    result = []
    for channel, scheme in enumerate(schemes):
        if scheme is not NormalizationScheme.CT:
            result.append(ChannelNormalization(NormalizationScheme.ZSCORE))
            continue
        samples = []
        for case in dataset.cases:
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.images[channel]), sitk.sitkFloat32))
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
            if image.shape != label.shape:
                raise InputImageError(
                    f"{case.images[channel].name} and {case.label.name} have different sizes"
                )
            samples.append(np.asarray(image[label > 0][::10], dtype=np.float64))
        voxels = np.concatenate(samples)
        if voxels.size == 0:
            raise InputImageError(f"no labelled voxels in {dataset.root}: cannot compute CT statistics")
        result.append(
            ChannelNormalization(
                NormalizationScheme.CT,
                mean=float(voxels.mean()),
                sd=float(max(voxels.std(), 1e-8)),
                lower_bound=float(np.percentile(voxels, 0.5)),
                upper_bound=float(np.percentile(voxels, 99.5)),
            )
        )
    logger.info("intensity normalisation: %s", result)
    return tuple(result)
