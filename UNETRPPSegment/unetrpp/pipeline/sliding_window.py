"""Sliding-window inference: tile a preprocessed volume with the network's patch, blend the logits.

Three small steps, each testable alone:

1. tile planning (:func:`tile_starts`, :func:`plan_tiles`): where the tiles go. The rule is MONAI's
   ``dense_patch_slices``: step ``int(patch * (1 - overlap))``, the last tile pushed back so it ends at
   the border, so the tile count is known up front and is the progress total;
2. batched prediction (:func:`_predict_batch`): the network's logits, optionally averaged over the
   8 mirrorings of the three spatial axes (nnU-Net's test-time augmentation), under autocast;
3. blending: each tile's logits are weighted by a Gaussian importance map (sigma = patch / 8,
   as nnU-Net and MONAI's ``mode="gaussian"``) divided by the sum of all weights at that voxel, and
   added up.

Logits, not softmax probabilities, are blended, as nnU-Net v2 does and as MONAI's
``sliding_window_inference`` does with a network's raw output; nnU-Net v1 blended probabilities. The
argmax of the two differs where overlapping tiles disagree; blending logits keeps this pipeline on the
reference way of running UNETR++ (``benchmarks/bench_segment.py``) and skips a softmax per tile. Their
softmax is taken when they are resampled back (:mod:`unetrpp.pipeline.postprocess`).

Why not call ``monai.inferers.sliding_window_inference`` directly: it holds a float32 accumulator for
every class plus its own output copy (for a 512x512x150 CT and 14 classes that is over 4 GB), emits no
per-tile progress and cannot reuse the prediction of constant tiles. The test suite checks that this
module gives the same logits as MONAI's function (float32 accumulation) to 1e-5.

Tiles always have the network's native patch size: UNETR++'s positional embeddings are sized to the
token count of that patch, so no other size can run. Volumes smaller than the patch are padded with
zeros, centred (as nnU-Net and MONAI do), and the padding is cropped off the result.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unetrpp.errors import UnetrppError
from unetrpp.events import EventCallback, ProgressTracker, warn

__all__ = [
    "Precision",
    "Accumulation",
    "SlidingWindowConfig",
    "tile_starts",
    "plan_tiles",
    "gaussian_importance_map",
    "predict_sliding_window",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

_MAX_CACHED_CONSTANT_TILES = 4
# An overlap whose tiling runs this many times the tiles of the default overlap (0.5) is warned about:
# 0.75 runs about 8x (twice the tiles along each axis), 0.9 about 60x, 0.99 over 2500x.
TILE_COUNT_WARNING_FACTOR = 10
DEFAULT_OVERLAP = 0.5


class Precision(str, enum.Enum):
    """Arithmetic of the network's forward pass.

    AUTO is fp16 autocast on CUDA (as nnU-Net), bf16 on CPUs with bf16 instructions (AVX512-BF16 or
    AMX; 2.4x per tile over the fp32 inference copy of
    :func:`~unetrpp.network.optimize.optimize_for_inference`, ``benchmarks/RESULTS.md``) and fp32 on
    other CPUs, where bf16 is emulated and slower. BF16 works on both devices; FP16 is CUDA only.
    :func:`resolve_precision` turns AUTO into one of the others.
    """

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Accumulation(str, enum.Enum):
    """Dtype of the whole-volume logit accumulator (and of the returned logits).

    FLOAT16 halves the largest buffer of the pipeline (14 classes x 150 x 512 x 512 voxels: 1.1 GB
    instead of 2.2 GB); its relative rounding error (about 5e-4) is far below what changes an argmax
    except at near ties.
    """

    FLOAT32 = "float32"
    FLOAT16 = "float16"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self is Accumulation.FLOAT16 else torch.float32


@dataclass(frozen=True)
class SlidingWindowConfig:
    """How the volume is tiled and predicted.

    Attributes:
        overlap: fraction of a tile shared with its neighbour along each axis, in [0, 1).
        use_mirroring: average the logits over all mirrorings of ``mirror_axes`` (8x slower).
        mirror_axes: spatial axes (0 = z, 1 = y, 2 = x of the array) mirrored for test-time augmentation.
        batch_size: tiles per forward pass.
        precision: forward-pass arithmetic, see :class:`Precision`.
        accumulation: dtype of the blended logits, see :class:`Accumulation`.
        skip_empty_tiles: run a tile whose input is one constant value per channel (air clipped by the
            CT normalisation, zero padding) through the network only once and reuse that prediction
            for every later tile with the same values. The network sees exactly the same input, so the
            result does not change.
        sigma_scale: Gaussian sigma as a fraction of the patch size (nnU-Net: 1/8).
    """

    overlap: float = 0.5
    use_mirroring: bool = False
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 1
    precision: Precision = Precision.AUTO
    accumulation: Accumulation = Accumulation.FLOAT16
    skip_empty_tiles: bool = True
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "precision", Precision(self.precision))
        except ValueError as error:
            choices = ", ".join(p.value for p in Precision)
            raise UnetrppError(f"unknown precision {self.precision!r}; use one of {choices}") from error
        try:
            object.__setattr__(self, "accumulation", Accumulation(self.accumulation))
        except ValueError as error:
            raise UnetrppError(
                f"unknown accumulation dtype {self.accumulation!r}; use float16 or float32"
            ) from error
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        if not 0.0 <= float(self.overlap) < 1.0:
            raise UnetrppError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.batch_size) < 1:
            raise UnetrppError(f"batch size must be at least 1, got {self.batch_size}")
        if not set(self.mirror_axes) <= {0, 1, 2}:
            raise UnetrppError(f"mirror axes must be among 0, 1, 2 (z, y, x), got {self.mirror_axes}")
        if not float(self.sigma_scale) > 0.0:
            raise UnetrppError(f"sigma scale must be positive, got {self.sigma_scale}")


def tile_starts(size: int, patch: int, overlap: float) -> tuple[int, ...]:
    """Start indices of the tiles along one axis of length ``size`` (>= ``patch``).

    Tiles step by ``int(patch * (1 - overlap))`` voxels and the last one is pushed back to end at the
    border. Example: size 110, patch 64, overlap 0.5: step 32, starts 0, 32 and 46 (not 64, which
    would run past the end).
    """
    if size <= patch:
        return (0,)
    step = max(int(patch * (1.0 - overlap)), 1)
    starts = []
    start = 0
    while start + patch < size:
        starts.append(start)
        start += step
    starts.append(size - patch)
    return tuple(starts)


def plan_tiles(
    shape_zyx: Sequence[int], patch_size_zyx: Sequence[int], overlap: float
) -> list[tuple[int, int, int]]:
    """Start corners (z, y, x) of every tile covering a volume of ``shape_zyx`` (each >= the patch)."""
    per_axis = [tile_starts(s, p, overlap) for s, p in zip(shape_zyx, patch_size_zyx)]
    return list(itertools.product(*per_axis))


@functools.lru_cache(maxsize=8)
def _cached_importance_map(patch_size_zyx: tuple[int, int, int], sigma_scale: float) -> torch.Tensor:
    weights = torch.ones(())
    for size in patch_size_zyx:
        offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0  # centred between voxels
        along_axis = torch.exp(offsets**2 / (-2.0 * (size * sigma_scale) ** 2))
        weights = weights.unsqueeze(-1) * along_axis
    return weights.clamp_(min=max(weights.min().item(), 1e-3))


def gaussian_importance_map(patch_size_zyx: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Tile weights (Z, Y, X) float32: a Gaussian centred on the tile, sigma = ``sigma_scale`` x patch,
    peak 1 (between the middle voxels for even sizes), never below 1e-3 (so a voxel seen only by tile
    borders still gets a prediction). The same map as MONAI's ``compute_importance_map(mode="gaussian")``,
    computed here because importing MONAI alone costs seconds at every CLI start."""
    return _cached_importance_map(tuple(int(p) for p in patch_size_zyx), float(sigma_scale)).clone()


def _mirrorings(axes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every non-empty subset of ``axes``, as tensor dims of a (B, C, Z, Y, X) batch."""
    dims = [a + 2 for a in sorted(set(axes))]
    for count in range(1, len(dims) + 1):
        yield from itertools.combinations(dims, count)


def resolve_precision(precision: Precision | str, device: torch.device | str) -> Precision:
    """The arithmetic ``precision`` means on ``device``: AUTO resolved, FP16 on the CPU refused.

    Raises:
        UnetrppError: fp16 was asked for on a CPU.
    """
    precision, device = Precision(precision), torch.device(device)
    if precision is Precision.FP16 and device.type != "cuda":
        raise UnetrppError("fp16 precision needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision is not Precision.AUTO:
        return precision
    if device.type == "cuda":
        return Precision.FP16
    from unetrpp.pipeline.device import cpu_has_native_bf16

    return Precision.BF16 if cpu_has_native_bf16() else Precision.FP32


def _autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    precision = resolve_precision(precision, device)
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.float16 if precision is Precision.FP16 else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _logits(network: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    output = network(batch)
    if isinstance(output, (list, tuple)):  # deep supervision left on: full resolution comes first
        output = output[0]
    return output


def _predict_batch(network: nn.Module, batch: torch.Tensor, config: SlidingWindowConfig) -> torch.Tensor:
    """Logits (B, K, Z, Y, X) of one batch of tiles, mirror-averaged (in float32) if asked, as nnU-Net v2.

    Without mirroring they keep the network's output dtype: the accumulator casts them once.
    """
    logits = _logits(network, batch)
    if config.use_mirroring:
        logits = logits.float()
        count = 1
        for dims in _mirrorings(config.mirror_axes):
            logits += torch.flip(_logits(network, torch.flip(batch, dims)), dims)
            count += 1
        logits /= count
    return logits


def _constant_key(tile: torch.Tensor) -> tuple[float, ...] | None:
    """Per-channel value of a tile (C, Z, Y, X) that holds one value per channel, else None."""
    flat = tile.reshape(tile.shape[0], -1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    if torch.equal(low, high):
        return tuple(float(v) for v in low)
    return None


def _pad_to_patch(
    volume: torch.Tensor, patch_size_zyx: Sequence[int]
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad (C, Z, Y, X) centred up to the patch where smaller; also return the crop that undoes it."""
    before, after = [], []
    for size, patch in zip(volume.shape[1:], patch_size_zyx):
        missing = max(patch - size, 0)
        before.append(missing // 2)
        after.append(missing - missing // 2)
    crop = tuple(slice(b, b + s) for b, s in zip(before, volume.shape[1:]))
    if not any(before) and not any(after):
        return volume, crop
    # F.pad lists pads from the last axis backwards: (x_before, x_after, y_before, ...).
    pads = [p for axis in reversed(range(3)) for p in (before[axis], after[axis])]
    return torch.nn.functional.pad(volume, pads, mode="constant", value=0.0), crop


def _network_patch_size(network: nn.Module) -> tuple[int, int, int]:
    config = getattr(network, "config", None)
    patch = getattr(config, "patch_size", None)
    if patch is None or len(patch) != 3:
        raise UnetrppError(
            "the network has no 3D config.patch_size; build it with unetrpp.network.build_network"
        )
    return tuple(int(p) for p in patch)


def _summed_weights(
    shape_zyx: Sequence[int], tiles: Sequence[tuple[int, int, int]], weight: torch.Tensor
) -> torch.Tensor:
    """Sum of the tile weights at every voxel (Z, Y, X) float32.

    Known before any prediction, so each tile is added already divided by it: the accumulator then
    only ever holds values in [0, 1], which keeps a float16 accumulator accurate to about 1e-3, and
    no whole-volume division pass is needed at the end.
    """
    weight_sum = torch.zeros(tuple(shape_zyx), dtype=torch.float32, device=weight.device)
    for corner in tiles:
        weight_sum[tuple(slice(c, c + p) for c, p in zip(corner, weight.shape))] += weight
    return weight_sum


MIN_BODY_FRACTION = 0.2  # a tile with less body than this is skipped (unless a body voxel needs it)


def _tiles_over_body(
    shape_zyx: Sequence[int],
    patch_size_zyx: Sequence[int],
    overlap: float,
    body: torch.Tensor | None,
) -> list[tuple[int, int, int]]:
    """The tiles to run: those of the whole volume's grid (:func:`plan_tiles`) with at least
    ``MIN_BODY_FRACTION`` of body voxels, plus, for any body voxel none of them covers, the most body-filled
    tile that does. Every tile run is one the whole grid runs too, so it predicts exactly what it would
    have; only the blend near skipped tiles changes (measured in ``benchmarks/RESULTS.md``: a grid of
    its own over the body's bounding box moved predictions far more). All tiles when ``body`` is None.
    """
    tiles = plan_tiles(shape_zyx, patch_size_zyx, overlap)
    if body is None:
        return tiles
    windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch_size_zyx)) for corner in tiles]
    fractions = [float(body[window].float().mean()) for window in windows]
    keep = [fraction >= MIN_BODY_FRACTION for fraction in fractions]
    covered = torch.zeros_like(body)
    for window, kept in zip(windows, keep):
        if kept:
            covered[window] = True
    for index in sorted(range(len(tiles)), key=lambda n: -fractions[n]):  # a safety net, rarely used
        if not keep[index] and (body[windows[index]] & ~covered[windows[index]]).any():
            keep[index] = True
            covered[windows[index]] = True
    return [tile for tile, kept in zip(tiles, keep) if kept]


# Where no tile ran: background with certainty (softmax 1 - 2e-8 for 14 classes), and it fits in float16.
# Not larger: with 100 the softmax's exp(-100) = 4e-44 is a float32 subnormal, which x86 computes slowly,
# and resampling back took 3.5-5.5 s instead of 0.45 s on a demo phantom in a 480 mm field of air
# (benchmarks/bench_quality.py's case); exp(-20) = 2e-9 is a normal float.
BACKGROUND_LOGIT = 20.0


def _background_where_uncovered(accumulator: torch.Tensor, weight_sum: torch.Tensor) -> None:
    """Logits that say background with certainty where no tile ran (summed weight 0)."""
    uncovered = weight_sum == 0
    if not bool(uncovered.any()):
        return
    for index, scores in enumerate(accumulator):  # per class: no index tensor as large as the volume
        scores.masked_fill_(uncovered, BACKGROUND_LOGIT if index == 0 else 0.0)


@contextlib.contextmanager
def _inference_state(network: nn.Module) -> Iterator[None]:
    """Eval mode and no deep supervision for the duration; the caller's settings come back after."""
    was_training = network.training
    had_deep_supervision = getattr(network, "deep_supervision", None)
    network.eval()
    if had_deep_supervision is not None:
        network.deep_supervision = False
    try:
        with torch.inference_mode():
            yield
    finally:
        network.train(was_training)
        if had_deep_supervision is not None:
            network.deep_supervision = had_deep_supervision


def _warn_if_many_tiles(
    shape_zyx: Sequence[int], patch_size_zyx: Sequence[int], overlap: float, on_event: EventCallback | None
) -> None:
    """A WarningEvent, before the tiles are planned in detail, when ``overlap`` multiplies the run time."""
    count = math.prod(len(tile_starts(s, p, overlap)) for s, p in zip(shape_zyx, patch_size_zyx))
    usual = math.prod(len(tile_starts(s, p, DEFAULT_OVERLAP)) for s, p in zip(shape_zyx, patch_size_zyx))
    if count > TILE_COUNT_WARNING_FACTOR * usual:
        factor = f"{count / usual:.0f}x"
        message = (
            f"overlap {overlap:g} tiles the volume with {count} tiles, {factor} the {usual} of overlap "
            f"{DEFAULT_OVERLAP:g}, so inference takes about {factor} as long; lower --overlap"
        )
        warn(on_event, message, logger)


def predict_sliding_window(
    network: nn.Module,
    array: np.ndarray,
    config: SlidingWindowConfig = SlidingWindowConfig(),
    device: torch.device | str = "cpu",
    on_event: EventCallback | None = None,
    body: np.ndarray | None = None,
) -> torch.Tensor:
    """Class logits of a whole preprocessed volume by Gaussian-blended sliding-window inference.

    Args:
        network: a UNETR++ module with ``config.patch_size`` (z, y, x); moved to ``device``, run in eval
            mode without deep supervision (its previous mode is restored afterwards).
        array: (C, Z, Y, X) float32 preprocessed input.
        config: tiling, mirroring, precision and accumulation settings.
        device: where the network runs and the logits are accumulated.
        on_event: receives a ``ProgressEvent`` (stage ``"inference"``) with done/total tiles at the start
            and after every batch.
        body: (Z, Y, X) bool mask of the voxels worth predicting (the CT body, on the array's grid):
            tiles of the whole volume's grid that are mostly outside it are skipped (see
            :func:`_tiles_over_body`), and every voxel no tile covers gets logits that say background
            (class 0) with certainty. None: every tile runs.

    Returns:
        (K, Z, Y, X) blended logits on the CPU, float16 or float32 per ``config.accumulation``; their
        softmax is the class probabilities, their argmax the labels.

    Raises:
        UnetrppError: the array is not 4D, its channel count differs from the network's, or the
            precision does not suit the device.
    """
    device = torch.device(device)
    patch_size = _network_patch_size(network)
    if array.ndim != 4:
        raise UnetrppError(f"sliding-window input must be (C, Z, Y, X), got shape {tuple(array.shape)}")
    in_channels = getattr(network.config, "in_channels", None)
    if in_channels is not None and array.shape[0] != in_channels:
        raise UnetrppError(f"the network expects {in_channels} input channel(s), got {array.shape[0]}")
    autocast = _autocast(config.precision, device)  # raises before any work for fp16 on the CPU

    volume, crop = _pad_to_patch(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), patch_size)
    body_mask = None
    if body is not None:  # padded like the volume
        body_mask = torch.zeros(volume.shape[1:], dtype=torch.bool)
        body_mask[crop] = torch.as_tensor(np.asarray(body, dtype=bool))
    _warn_if_many_tiles(volume.shape[1:], patch_size, config.overlap, on_event)
    tiles = _tiles_over_body(volume.shape[1:], patch_size, config.overlap, body_mask)
    del body_mask
    weight = gaussian_importance_map(patch_size, config.sigma_scale).to(device)
    weight_sum = _summed_weights(volume.shape[1:], tiles, weight)
    accumulator: torch.Tensor | None = None
    constant_cache: dict[tuple[float, ...], torch.Tensor] = {}
    tracker = ProgressTracker(on_event, "inference", len(tiles))
    logger.info("sliding window: %d tiles of %s over %s", len(tiles), patch_size, tuple(volume.shape[1:]))

    network.to(device)
    with _inference_state(network):
        for first in range(0, len(tiles), config.batch_size):
            corners = tiles[first : first + config.batch_size]
            windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch_size)) for corner in corners]
            inputs = [volume[(slice(None), *window)] for window in windows]
            keys = [_constant_key(tile) if config.skip_empty_tiles else None for tile in inputs]
            to_run = [i for i, key in enumerate(keys) if key is None or key not in constant_cache]
            predicted: dict[int, torch.Tensor] = {}
            if to_run:
                batch = torch.stack([inputs[i] for i in to_run]).to(device)
                with autocast:
                    logits = _predict_batch(network, batch, config)
                predicted = dict(zip(to_run, logits))
            for i, (window, key) in enumerate(zip(windows, keys)):
                tile_logits = predicted[i] if i in predicted else constant_cache[key]
                if (
                    key is not None
                    and key not in constant_cache
                    and len(constant_cache) < _MAX_CACHED_CONSTANT_TILES
                ):
                    constant_cache[key] = tile_logits.clone()  # not a view pinning the whole batch
                if accumulator is None:
                    num_classes = tile_logits.shape[0]
                    accumulator = torch.zeros(
                        (num_classes, *volume.shape[1:]), dtype=config.accumulation.dtype, device=device
                    )
                tile_weight = weight / weight_sum[window]
                if accumulator.dtype != tile_logits.dtype:
                    # Mixed-dtype in-place arithmetic is several times slower on the CPU than casting first.
                    tile_logits = tile_logits.to(accumulator.dtype)
                    tile_weight = tile_weight.to(accumulator.dtype)
                accumulator[(slice(None), *window)].addcmul_(tile_logits, tile_weight)
            tracker.advance(len(corners))
        _background_where_uncovered(accumulator, weight_sum)
        return accumulator[(slice(None), *crop)].contiguous().cpu()
