"""The offline demo: generate a held-out phantom, segment it with the bundled model, score it.

Everything goes through the normal pipeline (:func:`unetrpp.segment` reading the phantom from disk), so
a good score here means reading, reorientation, preprocessing, sliding-window inference, resampling back
and the ``.seg.nrrd`` writer all work on this machine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import OutputExistsError
from unetrpp.evaluate.metrics import StructureScore, score_label_maps
from unetrpp.events import EventCallback, StageEvent, emit
from unetrpp.train.phantoms import PHANTOM_LABELS, PhantomOptions, generate_phantom

__all__ = ["DEMO_SEED", "DemoResult", "run_demo"]

# Training phantoms use seeds 0-39 (benchmarks/train_demo.md); the demo's default is far from them.
DEMO_SEED = 1000


@dataclass(frozen=True)
class DemoResult:
    """Files written and scores of one demo run."""

    image_path: Path
    segmentation_path: Path
    truth_path: Path
    scores: tuple[StructureScore, ...]
    elapsed_seconds: float
    segment_seconds: float

    @property
    def mean_dice(self) -> float:
        values = [s.dice for s in self.scores if not math.isnan(s.dice)]
        return float(np.mean(values)) if values else math.nan


def run_demo(
    output_dir: str | Path,
    *,
    seed: int = DEMO_SEED,
    model: str | Path = "demo",
    device: str = "auto",
    overwrite: bool = False,
    num_threads: int | None = None,
    on_event: EventCallback | None = None,
) -> DemoResult:
    """Write ``phantom_SEED.nrrd`` (image), ``phantom_SEED_truth.seg.nrrd`` and the model's
    ``phantom_SEED.seg.nrrd`` into ``output_dir`` and score the prediction against the truth.

    ``num_threads`` sets torch's CPU threads for the segmentation (restored afterwards); None keeps them.

    The model loads before anything is written, and a run that fails removes the files it created, so
    the next run needs no ``--overwrite``.

    Raises:
        OutputExistsError: one of the three files exists and ``overwrite`` is False.
    """
    from unetrpp.labels.seg_nrrd import write_seg_nrrd
    from unetrpp.labels.terminology import structures_from_labels
    from unetrpp.models.loader import load_model
    from unetrpp.pipeline.predictor import SegmentOptions, segment

    began = time.perf_counter()
    output_dir = Path(output_dir)
    stem = f"phantom_{seed}"
    image_path = output_dir / f"{stem}.nrrd"
    truth_path = output_dir / f"{stem}_truth.seg.nrrd"
    segmentation_path = output_dir / f"{stem}.seg.nrrd"
    existing = [p.name for p in (image_path, truth_path, segmentation_path) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{output_dir} already holds {', '.join(existing)}; pass --overwrite or another --output"
        )
    loaded = load_model(model, on_event=on_event)  # a bad model fails before any file is written
    with _removed_on_failure((output_dir, image_path, truth_path, segmentation_path)):
        output_dir.mkdir(parents=True, exist_ok=True)
        emit(on_event, StageEvent("phantom", f"generating held-out phantom (seed {seed})"))
        phantom = generate_phantom(seed, PhantomOptions())
        temporary = image_path.with_name(f".{image_path.name}.tmp.nrrd")
        try:
            sitk.WriteImage(phantom.image, str(temporary), useCompression=True)
            temporary.replace(image_path)
        finally:
            temporary.unlink(missing_ok=True)
        structures = structures_from_labels("btcv", PHANTOM_LABELS)
        write_seg_nrrd(phantom.label_map, structures, truth_path, overwrite=overwrite)

        started = time.perf_counter()
        with _torch_threads(num_threads):
            result = segment(
                image_path,
                loaded,
                segmentation_path,
                SegmentOptions(device=device),
                on_event=on_event,
                overwrite=overwrite,
            )
        segment_seconds = time.perf_counter() - started
        prediction = sitk.GetArrayFromImage(result.label_map)
        truth = sitk.GetArrayFromImage(phantom.label_map)
        spacing_zyx = tuple(reversed(phantom.label_map.GetSpacing()))
        scores = score_label_maps(prediction, truth, PHANTOM_LABELS, spacing_zyx, with_hd95=False)
    return DemoResult(
        image_path, segmentation_path, truth_path, scores, time.perf_counter() - began, segment_seconds
    )


@contextlib.contextmanager
def _removed_on_failure(paths: Sequence[Path]) -> Iterator[None]:
    """If the block fails, remove those of ``paths`` that did not exist before it (files, and a folder
    once empty; list a folder before its files), so a failed run leaves nothing a rerun trips over."""
    created = [path for path in paths if not path.exists()]
    try:
        yield
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``count`` for the block and restored after it (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
