"""Each CPU backend and precision: seconds per tile, and agreement with the exact path on trained weights.

1. Speed: one tile of the network (``--network synapse``, 64x128x128, random weights: timing only) for
   torch's inference copy and OpenVINO, each in fp32 and bf16, best of ``--repeats`` interleaved runs in
   this process, with the heap kept (``pipeline.allocator``) as every inference process does. OpenVINO's
   one-off conversion is timed apart.
2. Accuracy: the bundled ``demo`` model (trained) on its five held-out phantoms, each padded to a
   scanner's field of air (``bench_segment.write_phantom_ct``; ``--field-mm`` another width, which moves
   the tile grid against the body): every backend and precision with the default settings against the
   exact path (torch fp32, every tile, no air skipping): voxel agreement and each structure's Dice, the
   worst phantom of each.
3. ``--int8``: also OpenVINO with int8 weights and activations (NNCF's post-training quantization, the
   rest in bf16), the way issue 17 asks to judge before it may ship. The demo model is calibrated on
   tiles of its own training phantoms (seeds 0-7 of the 40 it was trained on, never a held-out one),
   cut from each padded phantom's network grid where the body crop would run them; the timing network
   on random tiles.
   Needs ``pip install nncf``.

    python benchmarks/bench_backends.py
    python benchmarks/bench_backends.py --quick --results /tmp/RESULTS.md    # a smoke run, one phantom
    python benchmarks/bench_backends.py --int8    # also judge NNCF int8 (pip install nncf)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import (  # noqa: E402
    TRAINED_FIELD_MM,
    TRAINED_SEEDS,
    machine_description,
    write_phantom_ct,
    write_results,
)

GENERATED_START = "<!-- bench_backends.py: generated section start -->"
GENERATED_END = "<!-- bench_backends.py: generated section end -->"
WAYS = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"))
INT8 = ("openvino", "int8")
CALIBRATION_SEEDS = tuple(range(8))  # of the demo's training phantoms (train_demo.sh: seeds 0-39)
TILES_PER_PHANTOM = 8


def quantized_int8(network, calibration: list) -> object:
    """``network`` converted to OpenVINO, quantized to int8 by NNCF on the ``calibration`` tiles
    ((1, C, *patch) float32 arrays), compiled for this CPU with bf16 for what stays in floating point."""
    import nncf
    import openvino
    from unetrpp.network.openvino_runtime import OpenVINONetwork, convert_network, cpu_properties, input_shape

    model = convert_network(network.eval(), input_shape(network))
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    compiled = openvino.Core().compile_model(quantized, "CPU", cpu_properties("bf16"))
    return OpenVINONetwork(compiled, network.config)


def calibration_tiles(model, seeds: tuple[int, ...], field_mm: float, work_dir: Path) -> list:
    """Tiles of the demo's training phantoms on the network's grid, preprocessed as the pipeline does,
    each with at least ``MIN_BODY_FRACTION`` of the pipeline's body mask (the tiles the body crop runs),
    at seeded positions."""
    import SimpleITK as sitk
    from unetrpp.pipeline.body_crop import body_mask
    from unetrpp.pipeline.preprocess import mask_to_network_grid, preprocess
    from unetrpp.pipeline.sliding_window import MIN_BODY_FRACTION

    patch = np.array(model.plans.patch_size_zyx)
    rng = np.random.default_rng(0)
    tiles = []
    for seed in seeds:
        path = work_dir / f"calibration_{seed}.nrrd"
        write_phantom_ct(seed, model.card.orientation, path, field_mm)
        image = sitk.ReadImage(str(path))
        data, info = preprocess([image], model.plans)
        body = mask_to_network_grid(body_mask(image), info)
        found = 0
        for _ in range(1000):
            if found == TILES_PER_PHANTOM:
                break
            start = [int(rng.integers(0, max(1, n - p + 1))) for n, p in zip(data.shape[1:], patch)]
            window = tuple(slice(a, a + p) for a, p in zip(start, patch))
            tile = data[(slice(None), *window)]
            if tile.shape[1:] == tuple(patch) and body[window].mean() >= MIN_BODY_FRACTION:
                tiles.append(np.ascontiguousarray(tile[None], dtype=np.float32))
                found += 1
    return tiles


def tile_seconds(variant: str, repeats: int, ways: tuple) -> tuple[dict, dict]:
    """(best seconds per tile, conversion seconds) per way, on a network of ``variant`` at its patch size
    (int8: conversion and quantization on random tiles, timing only)."""
    import torch
    from unetrpp.network import build_network
    from unetrpp.pipeline.allocator import keep_heap
    from unetrpp.pipeline.backends import network_for_backend
    from unetrpp.pipeline.sliding_window import Precision

    keep_heap()
    tiny = {"patch_size": (16, 32, 32), "feature_size": 4, "dims": (8, 16, 32, 64), "deep_supervision": False}
    overrides = {"deep_supervision": False} if variant == "synapse" else tiny
    torch.manual_seed(0)
    network = build_network("synapse", out_channels=14, **overrides).eval()
    tile = torch.randn(1, 1, *network.config.patch_size)
    runners, setup = {}, {}
    for backend, precision in ways:
        started = time.perf_counter()
        if (backend, precision) == INT8:
            calibration = [torch.randn(tile.shape).numpy() for _ in range(8)]
            runners[INT8] = quantized_int8(network, calibration)
        else:
            runners[(backend, precision)] = network_for_backend(
                network, torch.device("cpu"), Precision(precision), backend
            )
        setup[(backend, precision)] = time.perf_counter() - started
    best = {way: float("inf") for way in ways}
    with torch.inference_mode():
        for _ in range(repeats):
            for way, runner in runners.items():
                started = time.perf_counter()
                runner(tile.to(torch.bfloat16) if way == ("torch", "bf16") else tile)
                best[way] = min(best[way], time.perf_counter() - started)
    return best, setup


def agreement(
    seeds: tuple[int, ...], field_mm: float, work_dir: Path, ways: tuple, calibration_seeds: tuple[int, ...]
) -> dict:
    """Per way, over the phantoms: the worst voxel agreement with the exact path, and the lowest
    structure Dice against it with the structure's name (int8 calibrated on ``calibration_seeds``)."""
    import SimpleITK as sitk
    from unetrpp import SegmentOptions, segment
    from unetrpp.evaluate.metrics import dice_per_label
    from unetrpp.models.loader import load_model
    from unetrpp.train.phantoms import PHANTOM_LABELS

    model = load_model("demo")
    names = dict(PHANTOM_LABELS)
    exact = SegmentOptions(
        device="cpu", backend="torch", precision="fp32", crop_to_body=False, skip_empty_tiles=False
    )
    worst = {way: (1.0, 1.0, "") for way in ways}
    int8 = None
    if INT8 in ways:
        int8 = quantized_int8(model.network, calibration_tiles(model, calibration_seeds, field_mm, work_dir))
    for seed in seeds:
        path = work_dir / f"phantom_{seed}.nrrd"
        write_phantom_ct(seed, model.card.orientation, path, field_mm)
        reference = sitk.GetArrayFromImage(segment(str(path), model, options=exact).label_map)
        for backend, precision in ways:
            engine, float_precision = contextlib.nullcontext(), precision
            if (backend, precision) == INT8:  # the pipeline as it would run an int8 backend
                engine = mock.patch("unetrpp.pipeline.backends.network_for_backend", lambda *_: int8)
                float_precision = "bf16"  # what stays in floating point
            options = SegmentOptions(device="cpu", backend=backend, precision=float_precision)
            with engine:
                labels = sitk.GetArrayFromImage(segment(str(path), model, options=options).label_map)
            dice, name = min(
                (d, names[v]) for v, d in dice_per_label(labels, reference, list(names)) if not np.isnan(d)
            )
            voxels, lowest, lowest_name = worst[(backend, precision)]
            worst[(backend, precision)] = (
                min(voxels, float(np.mean(labels == reference))),
                min(lowest, float(dice)),
                name if dice < lowest else lowest_name,
            )
    return worst


def format_report(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"Run {report['started_utc']} UTC, machine: {machine['cpu']}, {machine['logical_cpus']} logical "
        f"CPUs, torch {machine['torch']}, OpenVINO {report['openvino']}; 1-minute load average "
        f"{report['load'][0]:.1f} before, {report['load'][1]:.1f} after. Network `{report['network']}`, "
        f"best of {report['repeats']} interleaved tiles, heap kept. Accuracy: the demo model on held-out "
        f"phantoms {report['seeds']} in a {report['field_mm']:g} mm field of air, default settings, against "
        "torch fp32 with every tile; the worst phantom of each.",
        "",
        "| backend | precision | s per tile | vs torch bf16 | set-up s (conversion on first use) | "
        "voxel agreement | lowest Dice (structure) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = report["tiles"][("torch", "bf16")]
    for way in report["tiles"]:
        seconds, setup = report["tiles"][way], report["setup"][way]
        voxels, dice, structure = report["agreement"][way]
        lines.append(
            f"| {way[0]} | {way[1]} | {seconds:.3f} | {base / seconds:.2f}x | {setup:.1f} | "
            f"{100 * voxels:.3f}% | {dice:.4f} ({structure}) |"
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small network and 2 repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TRAINED_SEEDS), help="phantom seeds")
    parser.add_argument("--field-mm", type=float, default=TRAINED_FIELD_MM, help="in-plane field of air")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--int8", action="store_true", help="also OpenVINO int8 (NNCF), to judge it")
    args = parser.parse_args(argv)
    ways = (*WAYS, INT8) if args.int8 else WAYS
    import openvino

    variant, repeats = ("tiny", 2) if args.quick else ("synapse", args.repeats)
    seeds = tuple(args.seeds[:1] if args.quick else args.seeds)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="unetrpp-backends-") as home:
        os.environ["UNETRPP_HOME"] = home  # a cold OpenVINO cache: the conversion is measured
        tiles, setup = tile_seconds(variant, repeats, ways)
        calibration_seeds = CALIBRATION_SEEDS[:1] if args.quick else CALIBRATION_SEEDS
        accuracy = agreement(seeds, args.field_mm, Path(home), ways, calibration_seeds)
    report = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_description(),
        "openvino": openvino.get_version(),
        "load": (load_before, os.getloadavg()[0]),
        "network": variant,
        "repeats": repeats,
        "tiles": tiles,
        "setup": setup,
        "seeds": list(seeds),
        "field_mm": args.field_mm,
        "agreement": accuracy,
    }
    generated = format_report(report)
    print(generated)
    write_results(args.results, generated, GENERATED_START, GENERATED_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
