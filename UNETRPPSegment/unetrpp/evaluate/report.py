"""Evaluate predicted segmentations against ground truth: per-structure Dice / HD95 tables and files.

Inputs are label maps (NIfTI, NRRD, MHA...) or Slicer ``.seg.nrrd`` files, one case each, or folders of
them paired by case name (the file name without its extension, e.g. ``case_001`` for
``case_001.seg.nrrd`` and ``case_001.nii.gz``). The prediction must lie on the truth's voxel grid.

A DICOM SEG (``.dcm``, either side) numbers its segments 1..N, which are not the model's label values,
so its segments pair by name with the other side's (or the ``--label-set``'s) structures; a name without
a partner gets a value of its own, so it is scored as missed or spurious rather than against another.
Against a plain label map without names (and no ``--label-set``) the segment numbers are the values.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unetrpp.atomic import atomic_output
from unetrpp.errors import InputImageError, OutputExistsError
from unetrpp.evaluate.metrics import StructureScore, score_label_maps

__all__ = [
    "CaseScores",
    "EvaluationReport",
    "read_label_map",
    "evaluate_case",
    "evaluate",
    "case_name",
]

_ENDINGS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass(frozen=True)
class CaseScores:
    """Scores of every structure in one case."""

    name: str
    scores: tuple[StructureScore, ...]


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of all cases, with per-structure means over cases (NaNs, i.e. absent structures, skipped)."""

    cases: tuple[CaseScores, ...]

    @property
    def structures(self) -> tuple[tuple[int, str], ...]:
        seen: dict[int, str] = {}
        for case in self.cases:
            for score in case.scores:
                seen.setdefault(score.label_value, score.name)
        return tuple(sorted(seen.items()))

    def mean_scores(self) -> tuple[tuple[int, str, float, float], ...]:
        """(label value, name, mean Dice, mean HD95 mm) per structure."""
        rows = []
        for value, name in self.structures:
            dice = [s.dice for c in self.cases for s in c.scores if s.label_value == value]
            hd95 = [s.hd95_mm for c in self.cases for s in c.scores if s.label_value == value]
            rows.append((value, name, _nanmean(dice), _nanmean(hd95)))
        return tuple(rows)

    @property
    def mean_dice(self) -> float:
        return _nanmean([row[2] for row in self.mean_scores()])

    @property
    def mean_hd95_mm(self) -> float:
        return _nanmean([row[3] for row in self.mean_scores()])

    def to_markdown(self) -> str:
        """A table like the paper's: one row per structure, Dice in %, HD95 in mm, then the mean."""
        lines = ["| structure | Dice (%) | HD95 (mm) |", "|---|---:|---:|"]
        for value, name, dice, hd95 in self.mean_scores():
            label = name if name == f"label {value}" else f"{name} ({value})"
            lines.append(f"| {label} | {_percent(dice)} | {_mm(hd95)} |")
        lines.append(f"| **mean** | **{_percent(self.mean_dice)}** | **{_mm(self.mean_hd95_mm)}** |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One row per case and structure, then the per-structure means (case ``mean``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["case", "label_value", "structure", "dice", "hd95_mm", "truth_voxels", "predicted_voxels"]
        )
        for case in self.cases:
            for s in case.scores:
                writer.writerow(
                    [
                        case.name,
                        s.label_value,
                        s.name,
                        _num(s.dice),
                        _num(s.hd95_mm),
                        s.truth_voxels,
                        s.predicted_voxels,
                    ]
                )
        for value, name, dice, hd95 in self.mean_scores():
            writer.writerow(["mean", value, name, _num(dice), _num(hd95), "", ""])
        writer.writerow(["mean", "", "all structures", _num(self.mean_dice), _num(self.mean_hd95_mm), "", ""])
        return buffer.getvalue()

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes None and infinity the string ``"inf"``."""
        return _json_safe(
            {
                "mean_dice": self.mean_dice,
                "mean_hd95_mm": self.mean_hd95_mm,
                "structures": [
                    {"label_value": v, "name": n, "dice": d, "hd95_mm": h}
                    for v, n, d, h in self.mean_scores()
                ],
                "cases": [{"name": c.name, "scores": [asdict(s) for s in c.scores]} for c in self.cases],
            }
        )

    def write(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write as ``.csv``, ``.json`` or ``.md`` (by extension), atomically."""
        path = Path(path)
        formats = {
            ".csv": self.to_csv,
            ".json": lambda: json.dumps(self.to_dict(), indent=2) + "\n",
            ".md": self.to_markdown,
        }
        if path.suffix.lower() not in formats:
            raise InputImageError(f"report {path.name}: use a .csv, .json or .md file name")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; choose another name or pass --overwrite")
        with atomic_output(path) as temporary:
            temporary.write_text(formats[path.suffix.lower()](), encoding="utf-8")
        return path


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def _mm(value: float) -> str:
    return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}")


def _num(value: float) -> str:
    return "" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")


def _json_safe(value):
    if isinstance(value, float):
        return None if math.isnan(value) else ("inf" if math.isinf(value) else value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def case_name(path: str | Path) -> str:
    """The case name of a file: its name without a known extension."""
    name = Path(path).name
    for ending in _ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def read_label_map(path: str | Path) -> tuple[sitk.Image, dict[int, str]]:
    """A label map and the names it carries (segment names of a ``.seg.nrrd``; none for plain maps)."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"segmentation {path} does not exist")
    if path.name.lower().endswith(".seg.nrrd"):
        from unetrpp.labels.seg_nrrd import read_seg_nrrd

        image, segments = read_seg_nrrd(path)
        return image, {s.label_value: s.name for s in segments}
    if _is_dicom_seg(path):
        from unetrpp.labels.dicom_seg import read_dicom_seg

        return read_dicom_seg(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputImageError(
            f"cannot read label map {path}: {str(error).strip().splitlines()[-1]}"
        ) from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(f"{path} is not a 3D single-component label map")
    _check_label_values(image, path)
    return image, {}


def _check_label_values(image: sitk.Image, path: Path) -> None:
    """Refuse what cannot be a label map: an image (a CT given as the truth, say) would otherwise be
    scored as hundreds of "structures" such as ``label -1000``. Whole-valued float maps are labels too."""
    values = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(values.dtype, np.integer) and not (
        np.isfinite(values).all() and np.array_equal(values, np.round(values))
    ):
        raise InputImageError(
            f"{path} is not a label map: it holds non-whole {image.GetPixelIDTypeAsString()} values; "
            "give a segmentation, not an image"
        )
    lowest = values.min()
    if lowest < 0:
        raise InputImageError(
            f"{path} is not a label map: it holds negative values (down to {lowest:g}); "
            "give a segmentation, not an image"
        )


def _is_dicom_seg(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(".dcm")


def _numbered_as(
    image: sitk.Image, names: dict[int, str], reference: dict[int, str]
) -> tuple[sitk.Image, dict[int, str]]:
    """Relabel a DICOM SEG's segment numbers with the values ``reference`` gives the same names."""
    if not reference:
        return image, names
    by_name = {_normal_name(name): value for value, name in reference.items()}
    spare = max([*reference, *names, 0]) + 1
    table = np.zeros(max([*names, 0]) + 1, dtype=np.int64)
    renamed: dict[int, str] = {}
    for number, name in sorted(names.items()):
        value = by_name.get(_normal_name(name))
        if value is None or value in renamed:
            value, spare = spare, spare + 1
        table[number], renamed[value] = value, name
    relabelled = sitk.GetImageFromArray(table[sitk.GetArrayViewFromImage(image)].astype(np.uint16))
    relabelled.CopyInformation(image)
    return relabelled, renamed


def _normal_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _on_grid(prediction: sitk.Image, truth: sitk.Image, names: tuple[str, str]) -> sitk.Image:
    """The prediction on the truth's grid; a ``.seg.nrrd`` cropped to its segments (same spacing and
    direction, whole-voxel offset) is padded back. Anything else is an error."""
    same_frame = np.allclose(prediction.GetSpacing(), truth.GetSpacing(), atol=1e-4) and np.allclose(
        prediction.GetDirection(), truth.GetDirection(), atol=1e-4
    )
    if (
        same_frame
        and prediction.GetSize() == truth.GetSize()
        and np.allclose(prediction.GetOrigin(), truth.GetOrigin(), atol=1e-3)
    ):
        return prediction
    if same_frame:
        offset = np.array(truth.TransformPhysicalPointToContinuousIndex(prediction.GetOrigin()))
        if np.allclose(offset, np.round(offset), atol=1e-3):
            return sitk.Resample(
                prediction, truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0, prediction.GetPixelID()
            )
    raise InputImageError(
        f"{names[0]} and {names[1]} are on different voxel grids (size {prediction.GetSize()} vs "
        f"{truth.GetSize()}, spacing {tuple(round(s, 4) for s in prediction.GetSpacing())} vs "
        f"{tuple(round(s, 4) for s in truth.GetSpacing())}); predict on the ground truth's image"
    )


def evaluate_case(
    prediction_path: str | Path,
    truth_path: str | Path,
    labels: Sequence[tuple[int, str]] | None = None,
    *,
    with_hd95: bool = True,
) -> CaseScores:
    """Scores of one predicted segmentation against its ground truth.

    Args:
        labels: (label value, name) pairs to score; None scores every value found in either map, named
            by the ``.seg.nrrd`` segments when there are any (else ``label N``).
    """
    prediction, predicted_names = read_label_map(prediction_path)
    truth, truth_names = read_label_map(truth_path)
    if _is_dicom_seg(prediction_path):
        prediction, predicted_names = _numbered_as(prediction, predicted_names, dict(labels or truth_names))
    if _is_dicom_seg(truth_path):
        truth, truth_names = _numbered_as(truth, truth_names, dict(labels or predicted_names))
    prediction = _on_grid(prediction, truth, (Path(prediction_path).name, Path(truth_path).name))
    predicted_array = sitk.GetArrayFromImage(prediction).astype(np.int64)
    truth_array = sitk.GetArrayFromImage(truth).astype(np.int64)
    if labels is None:
        names = {**predicted_names, **truth_names}
        values = sorted((set(np.unique(predicted_array)) | set(np.unique(truth_array)) | set(names)) - {0})
        labels = [(int(v), names.get(int(v), f"label {int(v)}")) for v in values]
    spacing_zyx = tuple(reversed(truth.GetSpacing()))
    scores = score_label_maps(predicted_array, truth_array, labels, spacing_zyx, with_hd95=with_hd95)
    return CaseScores(case_name(truth_path), scores)


def _files(folder: Path) -> dict[str, Path]:
    """The segmentation files of a folder by case name; two files of one case are refused, since
    picking one would score a case against a file the user did not mean."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(_ENDINGS):
            earlier = files.setdefault(case_name(path), path)
            if earlier != path:
                raise InputImageError(
                    f"{folder} holds two files for case {case_name(path)!r} ({earlier.name}, {path.name}); "
                    "keep one of them there"
                )
    return files


def evaluate(
    prediction: str | Path,
    truth: str | Path,
    labels: Sequence[tuple[int, str]] | None = None,
    *,
    with_hd95: bool = True,
) -> EvaluationReport:
    """Evaluate one file against one file, or every case of a prediction folder against a truth folder.

    Raises:
        InputImageError: missing paths, a file paired with a folder, a predicted case without truth,
            or grids that differ.
    """
    prediction, truth = Path(prediction), Path(truth)
    for path in (prediction, truth):
        if not path.exists():
            raise InputImageError(f"{path} does not exist")
    if prediction.is_dir() != truth.is_dir():
        raise InputImageError(f"give two files or two folders, not {prediction} and {truth}")
    if not prediction.is_dir():
        return EvaluationReport((evaluate_case(prediction, truth, labels, with_hd95=with_hd95),))
    predicted, expected = _files(prediction), _files(truth)
    if not predicted:
        raise InputImageError(f"{prediction} holds no segmentation files ({', '.join(_ENDINGS)})")
    missing = sorted(set(predicted) - set(expected))
    if missing:
        raise InputImageError(f"no ground truth in {truth} for case(s): {', '.join(missing[:5])}")
    return EvaluationReport(
        tuple(
            evaluate_case(predicted[name], expected[name], labels, with_hd95=with_hd95)
            for name in sorted(predicted)
        )
    )
