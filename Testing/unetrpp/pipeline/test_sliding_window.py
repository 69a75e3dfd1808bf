"""Sliding-window inference with a tiny real UNETR++: same logits as MONAI's own
``sliding_window_inference``, exact mirroring, exact constant-tile reuse, progress, mode restoring,
and the precision AUTO picks per device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from unetrpp.errors import UnetrppError
from unetrpp.events import ProgressEvent
from unetrpp.pipeline.sliding_window import (
    BACKGROUND_LOGIT,
    Accumulation,
    Precision,
    SlidingWindowConfig,
    gaussian_importance_map,
    plan_tiles,
    predict_sliding_window,
    resolve_precision,
    tile_starts,
)

PATCH = (16, 32, 32)
EXACT = SlidingWindowConfig(precision="fp32", accumulation=Accumulation.FLOAT32, skip_empty_tiles=False)
FP32 = SlidingWindowConfig(precision="fp32")  # the defaults, except AUTO's bf16 on bf16-capable CPUs


@pytest.fixture(scope="module")
def network():
    from unetrpp.network import build_network

    torch.manual_seed(0)
    net = build_network(
        "synapse",
        patch_size=PATCH,
        feature_size=4,
        dims=(8, 16, 32, 64),
        out_channels=3,
        deep_supervision=False,
    )
    return net.eval()


def _volume(shape_zyx, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, *shape_zyx)).astype(np.float32)


def _monai_reference(network, array: np.ndarray) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        result = sliding_window_inference(
            torch.from_numpy(array)[None],
            roi_size=PATCH,
            sw_batch_size=2,
            predictor=network,
            overlap=0.5,
            mode="gaussian",
            sigma_scale=0.125,
            padding_mode="constant",
            cval=0.0,
        )
    return result[0]


def test_tile_starts_worked_example_and_border_cases():
    assert tile_starts(110, 64, 0.5) == (0, 32, 46)
    assert tile_starts(64, 64, 0.5) == (0,)
    assert tile_starts(128, 64, 0.5) == (0, 32, 64)
    assert tile_starts(65, 64, 0.0) == (0, 1)


@pytest.mark.parametrize("size", [16, 17, 31, 32, 33, 47, 48, 100, 129])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75], ids=["o0", "o25", "o50", "o75"])
def test_tile_starts_equal_monai_dense_patch_slices(size, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    patch = 16
    interval = _get_scan_interval((size,), (patch,), 1, (overlap,))
    expected = tuple(s[0].start for s in dense_patch_slices((size,), (patch,), interval))
    assert tile_starts(size, patch, overlap) == expected


def test_gaussian_map_is_separable_with_sigma_an_eighth_of_the_patch():
    weights = gaussian_importance_map(PATCH).numpy()
    axes = []
    for size in PATCH:
        offsets = np.arange(size) - (size - 1) / 2  # centred between the two middle voxels
        axes.append(np.exp(-(offsets**2) / (2 * (size / 8) ** 2)))
    expected = np.maximum(axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :], 1e-3)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("patch", [(16, 32, 32), (64, 128, 128), (5, 7, 9)], ids=["tiny", "synapse", "odd"])
def test_gaussian_map_equals_monai_compute_importance_map(patch):
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map(patch, mode="gaussian", sigma_scale=0.125, device="cpu")
    torch.testing.assert_close(gaussian_importance_map(patch), expected, atol=0, rtol=1e-6)


@pytest.mark.parametrize(
    "shape_zyx",
    [(24, 48, 40), (10, 20, 40)],
    ids=["larger-than-patch", "smaller-than-patch-padded"],
)
def test_logits_equal_monai_sliding_window_inference(network, shape_zyx):
    array = _volume(shape_zyx)
    expected = _monai_reference(network, array)
    config = SlidingWindowConfig(precision="fp32", accumulation="float32", batch_size=3)
    result = predict_sliding_window(network, array, config)
    assert result.shape == (3, *shape_zyx)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)


def test_float16_accumulation_stays_close_to_float32(network):
    array = _volume((24, 48, 40), seed=1)
    exact = predict_sliding_window(network, array, EXACT)
    half = predict_sliding_window(
        network, array, SlidingWindowConfig(precision="fp32", skip_empty_tiles=False)
    )
    assert half.dtype == torch.float16
    # float16 keeps about 3 significant digits; each tile's share is rounded once more.
    assert (half.float() - exact).abs().max().item() < 2e-3 * exact.abs().max().item()
    assert (half.argmax(0) == exact.argmax(0)).float().mean().item() > 0.999


def test_mirroring_equals_the_mean_over_the_eight_flipped_volumes(network):
    # A shape whose tile starts are symmetric (z: 0, 8; y: 0, 16; x: 0), so flipping the volume flips
    # the tiling too and the two computations must agree.
    shape = (24, 48, 32)
    array = _volume(shape, seed=2)
    mirrored = predict_sliding_window(
        network, array, SlidingWindowConfig(precision="fp32", use_mirroring=True, accumulation="float32")
    )
    total = torch.zeros_like(mirrored)
    for flips in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]:
        flipped = np.ascontiguousarray(np.flip(array, flips)) if flips else array
        plain = predict_sliding_window(network, flipped, EXACT)
        total += torch.flip(plain, flips) if flips else plain
    torch.testing.assert_close(mirrored, total / 8, atol=1e-5, rtol=0)


def test_constant_tiles_are_predicted_once_without_changing_the_result(network):
    shape = (24, 48, 72)
    array = np.full((1, *shape), -1.5, dtype=np.float32)  # "air" clipped by the CT normalisation
    array[:, :, :, :20] = _volume((24, 48, 20), seed=3)  # a body only at one end of the x axis
    calls = []
    handle = network.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        reused = predict_sliding_window(
            network, array, SlidingWindowConfig(precision="fp32", accumulation="float32")
        )
        tiles_run_with_reuse = sum(calls)
        calls.clear()
        full = predict_sliding_window(network, array, EXACT)
        tiles_run_without = sum(calls)
    finally:
        handle.remove()
    assert tiles_run_without == len(plan_tiles(shape, PATCH, 0.5))
    assert tiles_run_with_reuse < tiles_run_without
    torch.testing.assert_close(reused, full, atol=1e-5, rtol=0)


def test_progress_counts_every_tile_in_order_with_the_total_known_up_front(network):
    shape = (24, 48, 40)
    events = []
    predict_sliding_window(
        network, _volume(shape), SlidingWindowConfig(batch_size=3, precision="fp32"), on_event=events.append
    )
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    total = len(plan_tiles(shape, PATCH, 0.5))
    assert total == 8
    assert {e.total for e in progress} == {total}
    assert {e.stage for e in progress} == {"inference"}
    assert [e.done for e in progress] == [0, 3, 6, 8]


def test_network_mode_and_deep_supervision_are_restored(network):
    network.train()
    network.deep_supervision = True
    try:
        result = predict_sliding_window(network, _volume((16, 32, 32)), EXACT)
        assert result.shape == (3, 16, 32, 32)
        assert network.training
        assert network.deep_supervision is True
    finally:
        network.deep_supervision = False
        network.eval()


def test_bf16_on_cpu_gives_logits_close_to_fp32(network):
    array = _volume((16, 32, 32), seed=4)
    exact = predict_sliding_window(network, array, EXACT)
    bf16 = predict_sliding_window(network, array, SlidingWindowConfig(precision=Precision.BF16))
    assert ((bf16.float() - exact).abs().mean() / exact.abs().mean()).item() < 0.02


@pytest.mark.parametrize(("forced", "expected"), [("1", Precision.BF16), ("0", Precision.FP32)])
def test_auto_precision_is_bf16_only_on_cpus_with_bf16_instructions(monkeypatch, forced, expected):
    monkeypatch.setenv("UNETRPP_CPU_BF16", forced)
    assert resolve_precision("auto", "cpu") is expected
    assert resolve_precision("fp32", "cpu") is Precision.FP32
    assert resolve_precision("auto", "cuda") is Precision.FP16  # decided without touching a GPU
    assert resolve_precision("bf16", "cpu") is Precision.BF16


def test_auto_precision_follows_the_cpu_flags_without_an_override(monkeypatch):
    monkeypatch.delenv("UNETRPP_CPU_BF16", raising=False)
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert resolve_precision("auto", "cpu") is (Precision.BF16 if native else Precision.FP32)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"overlap": 1.0}, "overlap must be in [0, 1)"),
        ({"batch_size": 0}, "batch size"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"accumulation": "int8"}, "accumulation dtype"),
        ({"mirror_axes": (0, 3)}, "mirror axes"),
    ],
    ids=["overlap", "batch", "precision", "accumulation", "mirror-axes"],
)
def test_bad_config_is_refused_with_the_value(kwargs, fragment):
    with pytest.raises(
        UnetrppError, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        SlidingWindowConfig(**kwargs)


def test_fp16_on_cpu_and_wrong_channel_count_are_refused(network):
    with pytest.raises(UnetrppError, match="fp16 precision needs a CUDA device"):
        predict_sliding_window(network, _volume((16, 32, 32)), SlidingWindowConfig(precision="fp16"))
    with pytest.raises(UnetrppError, match="expects 1 input channel"):
        predict_sliding_window(network, np.zeros((2, 16, 32, 32), np.float32), EXACT)


@pytest.mark.gpu
def test_cuda_fp16_matches_cpu_fp32(network):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    array = _volume((24, 48, 40), seed=5)
    exact = predict_sliding_window(network, array, EXACT)
    try:
        gpu = predict_sliding_window(network, array, SlidingWindowConfig(precision="fp16"), device="cuda")
    finally:
        network.cpu()  # the module's shared network moves in place: back to the CPU even on failure
    assert gpu.device.type == "cpu"
    assert (gpu.argmax(0) == exact.argmax(0)).float().mean().item() > 0.99


def test_body_runs_fewer_tiles_keeps_their_logits_and_says_background_where_none_ran(network):
    shape = (24, 48, 96)
    array = _volume(shape, seed=6)
    body = np.zeros(shape, dtype=bool)
    body[:, 8:40, 10:38] = True  # the body: x 10-38 of 96
    calls = []
    handle = network.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        whole = predict_sliding_window(network, array, EXACT)
        whole_tiles = sum(calls)
        calls.clear()
        masked = predict_sliding_window(network, array, EXACT, body=body)
        masked_tiles = sum(calls)
    finally:
        handle.remove()
    assert masked_tiles < whole_tiles
    # x 16-24: every tile over it (x starts 0, 8, 16) has at least 20% body, so all of them ran.
    torch.testing.assert_close(masked[..., 16:24], whole[..., 16:24], atol=1e-5, rtol=1e-5)
    uncovered = masked[..., 64:]  # no tile with body reaches x >= 64
    assert (uncovered[0] == BACKGROUND_LOGIT).all() and (uncovered[1:] == 0).all()
    probabilities = torch.softmax(uncovered[:, :1, :1, :1].float(), dim=0)
    assert probabilities[0].item() > 0.999999  # background, with certainty


@pytest.mark.parametrize("num_classes", [2, 14, 256])
def test_the_background_logit_keeps_the_softmax_out_of_subnormal_floats(num_classes):
    """Resampling back takes the softmax of these logits: a subnormal float32 (exp(-100) was one) made
    that stage 8x slower on a scan with much air (3.7 s instead of 0.45 s)."""
    logits = torch.zeros(num_classes)
    logits[0] = BACKGROUND_LOGIT
    probabilities = torch.softmax(logits, dim=0)
    assert probabilities.min().item() >= torch.finfo(torch.float32).tiny  # normal floats only
    assert probabilities[0].item() > 1 - 1e-6  # still background with certainty
    assert torch.tensor(BACKGROUND_LOGIT).half().item() == BACKGROUND_LOGIT  # exact in a float16 accumulator


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiles_over_a_body_come_from_the_whole_grid_and_cover_every_body_voxel(overlap):
    from unetrpp.pipeline.sliding_window import MIN_BODY_FRACTION, _tiles_over_body

    rng = np.random.default_rng(int(overlap * 100))
    shape, patch = (40, 150, 170), (16, 32, 32)
    grid = plan_tiles(shape, patch, overlap)
    for _ in range(10):
        body = torch.zeros(shape, dtype=torch.bool)
        centre = rng.integers(0, shape)
        radii = rng.integers(3, 60, size=3)
        z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
        inside = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
            (x - centre[2]) / radii[2]
        ) ** 2 <= 1
        body[torch.from_numpy(inside)] = True
        body[tuple(int(i) for i in rng.integers(0, shape))] = True  # a lone speck far out
        tiles = _tiles_over_body(shape, patch, overlap, body)
        assert set(tiles) <= set(grid)
        covered = torch.zeros(shape, dtype=torch.bool)
        for corner in tiles:
            covered[tuple(slice(c, c + p) for c, p in zip(corner, patch))] = True
        assert covered[body].all()
        for corner in set(grid) - set(tiles):  # skipped tiles are mostly air
            window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
            assert body[window].float().mean() < MIN_BODY_FRACTION
