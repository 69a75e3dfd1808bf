"""``segment()``: clinical volume(s) in, a coded Slicer segmentation on the exact input grid out.

The stages, each a plain function of its own module with plain data in between (so each is testable
alone and the Slicer module can show where a run is):

    read        pipeline.io.read_inputs: validate, one image per model input channel
    preprocess  pipeline.geometry.reorient to the model's orientation, pipeline.preprocess.preprocess
    inference   pipeline.sliding_window.predict_sliding_window (one progress event per tile)
    resample    pipeline.postprocess.restore_label_map, optional largest component, structure subset,
                pipeline.geometry.restore_orientation back onto the input grid
    write       labels.seg_nrrd.write_seg_nrrd (atomic: temporary file, then rename)

Everything the user can get wrong (options, output path, input count, input files) is checked before
the weights are loaded or any voxel is computed, so a mistake costs seconds, not a whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import (
    CheckpointError,
    InputImageError,
    ModelNotFoundError,
    OutputExistsError,
    UnetrppError,
)
from unetrpp.events import EventCallback, ResultEvent, StageEvent, WarningEvent, emit
from unetrpp.labels.terminology import Structure, select_structures, structures_for, structures_from_labels
from unetrpp.models.cards import ModelCard, NormalizationScheme, Plans
from unetrpp.models.loader import LoadedModel
from unetrpp.pipeline.geometry import (
    NATIVE_ORIENTATION,
    check_orientation_code,
    reorient,
    restore_orientation,
)
from unetrpp.pipeline.segment_types import SegmentOptions, SegmentResult, StructureVolume

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unetrpp.pipeline.sliding_window import Precision, SlidingWindowConfig

__all__ = [
    "PreparedCase",
    "SEG_NRRD_SUFFIX",
    "SegmentOptions",
    "SegmentResult",
    "StructureVolume",
    "finish_case",
    "infer_case",
    "prepare_case",
    "segment",
]

logger = logging.getLogger(__name__)

SEG_NRRD_SUFFIX = ".seg.nrrd"
_REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

PathLike = str | os.PathLike[str]
Inputs = PathLike | sitk.Image | Sequence[PathLike] | Sequence[sitk.Image]


def segment(
    inputs: Inputs,
    model: str | Path | LoadedModel,
    output: PathLike | None = None,
    options: SegmentOptions | None = None,
    on_event: EventCallback | None = None,
    overwrite: bool = False,
) -> SegmentResult:
    """Segment one case with a UNETR++ model and optionally write a Slicer ``.seg.nrrd``.

    Args:
        inputs: one path (file or DICOM folder) or SimpleITK image per model input channel, in the
            order of ``model.card.input_channels`` (a single 4D file holding all channels also works).
        model: registry name (``synapse``), path to a ``.unetrpp`` or official checkpoint, or a
            :class:`LoadedModel` (reused as is, so repeated calls do not reload weights).
        output: ``.seg.nrrd`` path to write, or None to only return the label map.
        options: see :class:`SegmentOptions`; None means the defaults.
        on_event: receives stage events, one progress event per tile, warnings (an input that does not
            look like the model's modality: see ``SegmentOptions.check_modality``) and a result event.
        overwrite: replace an existing output file.

    Returns:
        :class:`SegmentResult`; its label map lies exactly on the first input's grid.

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is False (checked before any work).
        InputImageError: unreadable or unsuitable input, or the wrong number of inputs.
        ModelNotFoundError, CheckpointError: the model cannot be found or loaded.
        UnetrppError: a bad option or an unwritable output folder.
    """
    prepared = prepare_case(inputs, model, output, options, on_event, overwrite)
    return finish_case(prepared, infer_case(prepared, on_event), on_event)


@dataclasses.dataclass
class PreparedCase:
    """One case read and preprocessed, ready for :func:`infer_case`; what :func:`finish_case` needs to put
    the result back on the input grid. ``array`` and ``body`` are dropped once inference has used them."""

    loaded: LoadedModel
    structures: tuple[Structure, ...]
    options: SegmentOptions
    output_path: Path | None
    overwrite: bool
    images: list[sitk.Image]
    oriented: sitk.Image
    array: np.ndarray | None
    info: Any
    body: np.ndarray | None
    config: SlidingWindowConfig
    device: torch.device
    started: float
    timings: dict[str, float]


def prepare_case(
    inputs: Inputs,
    model: str | Path | LoadedModel,
    output: PathLike | None = None,
    options: SegmentOptions | None = None,
    on_event: EventCallback | None = None,
    overwrite: bool = False,
) -> PreparedCase:
    """The stages of :func:`segment` before inference: check, load, read, preprocess. Split out so a
    cohort can prepare the next case while the network runs on this one (``unetrpp.batch``)."""
    from unetrpp.pipeline.device import resolve_device
    from unetrpp.pipeline.sliding_window import resolve_precision

    started = time.perf_counter()
    options = options if options is not None else SegmentOptions()
    timings: dict[str, float] = {}
    output_path = _check_output(output, overwrite, inputs) if output is not None else None
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)  # fp16 on a CPU fails here, not later
    loaded = model if isinstance(model, LoadedModel) else None
    card = loaded.card if loaded else _card_without_loading(model)
    if card is not None:
        _structures(card, options)  # a misspelt structure fails before weights or images load

    if loaded is None and card is None:  # a weights file: its card is inside
        with _stage("load_model", None, on_event, timings):  # the loader announces it
            loaded = _load(model, on_event)
        card = loaded.card
    _, structures = _structures(card, options)
    orientation = check_orientation_code(options.orientation or card.orientation)  # before any reading

    with _stage("read", f"Reading {card.num_inputs} input(s)", on_event, timings):
        images = _read(inputs, card, options.series_uid, on_event)
    if loaded is None:
        with _stage("load_model", None, on_event, timings):  # the loader announces it
            loaded = _load(model, on_event)
    _check_model(loaded, card)
    if options.check_modality:
        _warn_if_wrong_modality(images, card, loaded.plans, on_event, options.refuse_wrong_modality)

    native = orientation == NATIVE_ORIENTATION
    reorienting = "Stored voxel order" if native else f"Reorienting to {orientation}"
    with _stage("preprocess", f"{reorienting}, resampling, normalising", on_event, timings):
        from unetrpp.pipeline.preprocess import preprocess

        oriented = [reorient(image, orientation) for image in images]
        array, info = preprocess(oriented, loaded.plans)
        body = _body_on_network_grid(oriented[0], loaded.plans, info) if options.crop_to_body else None

    config = _sliding_window_config(options, card, precision, on_event)
    return PreparedCase(
        loaded=loaded,
        structures=structures,
        options=options,
        output_path=output_path,
        overwrite=overwrite,
        images=images,
        oriented=oriented[0],
        array=array,
        info=info,
        body=body,
        config=config,
        device=device,
        started=started,
        timings=timings,
    )


def infer_case(prepared: PreparedCase, on_event: EventCallback | None = None) -> torch.Tensor:
    """The sliding window over a prepared case: the logits on the network grid."""
    from unetrpp.pipeline.sliding_window import predict_sliding_window

    config, device = prepared.config, prepared.device
    mirrored = f", {2 ** len(config.mirror_axes)} mirrorings" if config.use_mirroring else ""
    message = f"Sliding window on {device} ({config.precision.value}{mirrored})"
    with _stage("inference", message, on_event, prepared.timings):
        import torch

        try:
            network = _inference_network(
                prepared.loaded.network, device, config.precision, prepared.options.backend
            )
            logits = predict_sliding_window(network, prepared.array, config, device, on_event, prepared.body)
        except torch.cuda.OutOfMemoryError as error:
            raise UnetrppError(_out_of_memory_message(device, config.batch_size)) from error
        finally:
            prepared.array = prepared.body = None  # the largest arrays of the case, no longer needed
    return logits


def finish_case(prepared: PreparedCase, logits: Any, on_event: EventCallback | None = None) -> SegmentResult:
    """The stages of :func:`segment` after inference: back onto the input grid, volumes, the file."""
    card, structures, timings = prepared.loaded.card, prepared.structures, prepared.timings
    reference, output_path = prepared.images[0], prepared.output_path
    with _stage("resample", "Back to the input grid", on_event, timings):
        label_map = _to_input_grid(
            logits, prepared.info, prepared.oriented, reference, structures, prepared.options
        )
        del logits

    volumes = _volumes(label_map, structures)
    _warn_if_nothing_found(volumes, reference, prepared.loaded.plans, on_event)
    if output_path is not None:
        with _stage("write", f"Writing {output_path.name}", on_event, timings):
            from unetrpp.labels.seg_nrrd import write_seg_nrrd

            write_seg_nrrd(label_map, structures, output_path, overwrite=prepared.overwrite)
    elapsed = time.perf_counter() - prepared.started
    result = SegmentResult(label_map, structures, volumes, output_path, card, elapsed, timings)
    emit(on_event, ResultEvent(str(output_path or ""), [v.to_dict() for v in volumes], round(elapsed, 3)))
    logger.info("segmented %d structures of model %s in %.1f s", len(structures), card.name, elapsed)
    return result


def _sliding_window_config(
    options: SegmentOptions, card: ModelCard, precision: Precision, on_event: EventCallback | None
) -> SlidingWindowConfig:
    """The options' tiling with the resolved precision; test-time mirroring only along the axes the
    model was trained to see mirrored (none: no mirroring, and a warning says so)."""
    config = dataclasses.replace(options.sliding_window_config(), precision=precision)
    if not config.use_mirroring:
        return config
    axes = tuple(axis for axis in config.mirror_axes if axis in card.mirror_axes_zyx)
    if not axes:
        emit(
            on_event,
            WarningEvent(
                f"model {card.name!r} was trained without mirroring, so test-time mirroring is off: mirrored "
                "images would be ones it never saw"
            ),
        )
        return dataclasses.replace(config, use_mirroring=False)
    return dataclasses.replace(config, mirror_axes=axes)


def _out_of_memory_message(device: torch.device, batch_size: int) -> str:
    """One line with the way out: the CPU always works, a smaller batch sometimes does."""
    smaller = " or a smaller --batch-size" if batch_size > 1 else ""
    return (
        f"the GPU ({device}) ran out of memory during inference; run on the CPU instead (--device cpu; in "
        f"Slicer choose the CPU as device){smaller}, or close other programs that use the GPU"
    )


def _warn_if_wrong_modality(
    images: Sequence[sitk.Image],
    card: ModelCard,
    plans: Plans,
    on_event: EventCallback | None,
    refuse: bool = False,
) -> None:
    """Emit a WarningEvent when the inputs do not look like the model's modality (a CT model on an MR);
    with ``refuse`` raise InputImageError instead."""
    from unetrpp.pipeline.modality import modality_warning

    warning = modality_warning(images, card, plans=plans)
    if warning is not None and refuse:
        raise InputImageError(f"{warning} (--force-modality runs it anyway)")
    if warning is not None:
        logger.info("modality check: %s", warning)
        emit(on_event, WarningEvent(f"{warning} (--force-modality skips this check)"))


def _body_on_network_grid(image: sitk.Image, plans: Plans, info: Any) -> np.ndarray | None:
    """The body mask on the network's grid (CT models only: their input is in Hounsfield units), or None
    for every tile."""
    if not all(channel.scheme is NormalizationScheme.CT for channel in plans.channels):
        return None
    from unetrpp.pipeline.body_crop import body_mask
    from unetrpp.pipeline.preprocess import mask_to_network_grid

    mask = body_mask(image)
    return None if mask is None else mask_to_network_grid(mask, info)


def _inference_network(
    network: nn.Module, device: torch.device, precision: Precision, backend: str
) -> nn.Module:
    """The network to tile with (``pipeline.backends``: torch's inference copy or OpenVINO on the CPU,
    the network itself on CUDA). On the CPU freed memory stays in the heap from here on
    (``pipeline.allocator``), in every process that runs inference: CLI, cohort worker, Slicer child."""
    from unetrpp.pipeline.allocator import keep_heap
    from unetrpp.pipeline.backends import network_for_backend

    if device.type == "cpu":
        keep_heap()
    return network_for_backend(network, device, precision, backend)


@contextlib.contextmanager
def _stage(
    name: str, message: str | None, on_event: EventCallback | None, timings: dict[str, float]
) -> Iterator[None]:
    """Time a stage; announce it with a StageEvent unless ``message`` is None. Running out of host
    memory in it is one line naming the stage and what lowers the need (``pipeline.memory``)."""
    if message is not None:
        emit(on_event, StageEvent(name, message))
    started = time.perf_counter()
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        from unetrpp.pipeline.memory import is_out_of_memory, out_of_memory_message

        if is_out_of_memory(error):
            raise UnetrppError(out_of_memory_message(name, error)) from error
        raise
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def _check_output(output: PathLike, overwrite: bool, inputs: Inputs) -> Path:
    """Refuse, before any work, an output that exists, is not ``.seg.nrrd``, cannot be written or is one
    of the inputs."""
    path = Path(output).expanduser()
    if not path.name.lower().endswith(SEG_NRRD_SUFFIX):
        raise UnetrppError(f"output {path} must end in {SEG_NRRD_SUFFIX} (Slicer's segmentation format)")
    if path.is_dir():
        raise UnetrppError(f"output {path} is a folder; give a file name ending in {SEG_NRRD_SUFFIX}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")
    check_writable_folder(path)
    from unetrpp.pipeline.output_paths import check_distinct

    items = _input_items(inputs)
    check_distinct([("output", path)], [item for item in items if isinstance(item, (str, os.PathLike))])
    return path


def check_writable_folder(path: Path) -> None:
    """Raise UnetrppError unless a file can be created next to ``path`` (probed, not guessed:
    permission bits say nothing on read-only mounts or for root)."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UnetrppError(f"cannot write {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise UnetrppError(f"cannot write {path}: folder {folder} does not exist")
    from unetrpp.atomic import name_max, probe_writable

    length, limit = len(os.fsencode(path.name)), name_max(folder)
    if length > limit:
        raise UnetrppError(
            f"cannot write {path}: its name is {length} bytes long and the file system allows {limit}"
        )
    try:
        probe_writable(folder)
    except OSError as error:
        raise UnetrppError(f"cannot write to folder {folder}: {error.strerror or error}") from error


def _card_without_loading(model: str | Path) -> ModelCard | None:
    """The registry card for a model name (no weights read); None for a weights file path."""
    text = str(model)
    if isinstance(model, Path) or not _REGISTRY_NAME.match(text) or Path(text).exists() or "." in text:
        return None
    from unetrpp.models import store
    from unetrpp.models.registry import find_card

    card = find_card(text)
    if store.installed_weights(card.name) is None:  # load_model would say so only after reading
        raise ModelNotFoundError(
            f"the weights of model {card.name!r} are not installed; run `unetrpp download {card.name}` "
            f"or, with a file you downloaded, `unetrpp models import PATH --name {card.name}`"
        )
    return card


def _load(model: str | Path | LoadedModel, on_event: EventCallback | None) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    from unetrpp.models.loader import load_model

    return load_model(model, on_event=on_event)


def _check_model(loaded: LoadedModel, card: ModelCard) -> None:
    """Refuse, before any voxel is computed, a model that can only give nonsense: plans that do not fit
    the card, CT normalisation that is not finite (or sd 0), or NaN/infinite weights (a diverged
    training). Either would give an all-background result with exit status 0."""
    if loaded.plans.num_input_channels != card.num_inputs:
        raise UnetrppError(
            f"model {card.name!r}: its plans have {loaded.plans.num_input_channels} input channels but its "
            f"card lists {card.num_inputs} ({', '.join(card.input_channels)})"
        )
    for number, channel in enumerate(loaded.plans.channels, start=1):
        if channel.scheme is not NormalizationScheme.CT:
            continue  # the other schemes use the image's own mean and sd
        values = (channel.mean, channel.sd, channel.lower_bound, channel.upper_bound)
        if not (np.all(np.isfinite(values)) and channel.sd > 0 and channel.lower_bound < channel.upper_bound):
            raise CheckpointError(
                f"model {card.name!r}: the CT normalisation of input {number} is unusable (mean "
                f"{channel.mean:g}, sd {channel.sd:g}, clip {channel.lower_bound:g} to "
                f"{channel.upper_bound:g}; all must be finite, sd positive); the model file is damaged"
            )
    import torch

    from unetrpp.network.state import weights_stamp

    # A network found finite is not scanned again while its weights are unchanged: a cohort pays the
    # scan once, not per case (90 ms per case for synapse, 229 MB of weights, on 2 cores).
    stamp = weights_stamp(loaded.network)
    if _FINITE_NETWORKS.get(loaded.network) == stamp:
        return
    bad = [
        name
        for name, tensor in loaded.network.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"model {card.name!r} has NaN or infinite weights in {len(bad)} tensor(s) ({bad[0]}, ...); its "
            "training diverged or the file is damaged: use another checkpoint"
        )
    _FINITE_NETWORKS[loaded.network] = stamp


# networks whose weights were found finite, with the stamp of their tensors then (see _check_model)
_FINITE_NETWORKS: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()


def _warn_if_nothing_found(
    volumes: Sequence[StructureVolume], image: sitk.Image, plans: Plans, on_event: EventCallback | None
) -> None:
    """A CT model that labels nothing in a scan that holds a body is suspicious: say so (the result
    is still written, since an empty field of view is possible)."""
    if any(v.voxels for v in volumes) or not all(c.scheme is NormalizationScheme.CT for c in plans.channels):
        return
    from unetrpp.pipeline.body_crop import dense_mask

    mask = dense_mask(image)
    if not mask.any():
        return
    share = 100.0 * float(np.count_nonzero(mask)) / mask.size
    emit(
        on_event,
        WarningEvent(
            f"no structure was found, although {share:.0f}% of the input is body (above -500 HU): check that "
            "the input is the kind of scan the model was trained on, in Hounsfield units"
        ),
    )


def _structures(
    card: ModelCard, options: SegmentOptions
) -> tuple[tuple[Structure, ...], tuple[Structure, ...]]:
    """(every structure the model outputs, the ones to keep)."""
    every = (
        structures_from_labels(card.label_set, card.labels) if card.labels else structures_for(card.label_set)
    )
    chosen = select_structures(every, options.structures) if options.structures is not None else every
    return every, chosen


def _read(
    inputs: Inputs, card: ModelCard, series_uid: str | None, on_event: EventCallback | None
) -> list[sitk.Image]:
    from unetrpp.pipeline.io import read_inputs, validate_image

    items = _input_items(inputs)
    if not items:
        raise InputImageError(f"model {card.name} needs {card.num_inputs} input(s), got none")
    if all(isinstance(item, sitk.Image) for item in items):
        if len(items) != card.num_inputs:
            names = ", ".join(card.input_channels)
            raise InputImageError(
                f"model {card.name} needs {card.num_inputs} input(s) ({names}), got {len(items)}"
            )
        images = [validate_image(image, name=f"input {n + 1}") for n, image in enumerate(items)]
        _check_same_grid(images)
        return images
    if any(isinstance(item, sitk.Image) for item in items):
        raise InputImageError("give either paths or SimpleITK images as inputs, not a mix")
    return read_inputs(
        items,
        card.num_inputs,
        series_uid=series_uid,
        channel_names=card.input_channels,
        model_name=card.name,
        on_event=on_event,
    )


def _input_items(inputs: Inputs) -> list[Any]:
    """The inputs as a list: one path or image, or a sequence of them."""
    return [inputs] if isinstance(inputs, (str, os.PathLike, sitk.Image)) else list(inputs)


def _check_same_grid(images: Sequence[sitk.Image]) -> None:
    first = images[0]
    for n, image in enumerate(images[1:], start=2):
        same = (
            image.GetSize() == first.GetSize()
            and np.allclose(image.GetSpacing(), first.GetSpacing(), rtol=1e-4)
            and np.allclose(image.GetOrigin(), first.GetOrigin(), atol=1e-2 * min(first.GetSpacing()))
            and np.allclose(image.GetDirection(), first.GetDirection(), atol=1e-4)
        )
        if not same:
            raise InputImageError(
                f"input {n} does not lie on the grid of input 1; resample it onto input 1 first"
            )


def _to_input_grid(
    logits: Any,
    info: Any,
    oriented: sitk.Image,
    reference: sitk.Image,
    structures: Sequence[Structure],
    options: SegmentOptions,
) -> sitk.Image:
    """Logits on the network grid -> label image with exactly ``reference``'s geometry."""
    from unetrpp.pipeline.postprocess import keep_largest_component, restore_label_map

    array = restore_label_map(logits, info)  # (Z, Y, X) on the oriented image's grid
    kept = [s.label_value for s in structures]
    if options.structures is not None:
        array[~np.isin(array, kept)] = 0
    if options.keep_largest_component:
        array = keep_largest_component(array, kept)
    label_image = sitk.GetImageFromArray(array)
    label_image.CopyInformation(oriented)
    label_image = restore_orientation(label_image, reference)
    label_image.CopyInformation(reference)  # the input's exact geometry, not a recomputed one
    return label_image


def _volumes(label_map: sitk.Image, structures: Sequence[Structure]) -> tuple[StructureVolume, ...]:
    array = sitk.GetArrayViewFromImage(label_map)
    top = max((s.label_value for s in structures), default=0)
    counts = np.bincount(array.ravel(), minlength=top + 1)
    voxel_ml = float(np.prod(label_map.GetSpacing())) / 1000.0
    return tuple(
        StructureVolume(
            s.label_value, s.name, int(counts[s.label_value]), float(counts[s.label_value]) * voxel_ml
        )
        for s in structures
    )
