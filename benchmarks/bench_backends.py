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

    python benchmarks/bench_backends.py
    python benchmarks/bench_backends.py --quick --results /tmp/RESULTS.md    # a smoke run, one phantom
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

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


def tile_seconds(variant: str, repeats: int) -> tuple[dict, dict]:
    """(best seconds per tile, conversion seconds) per way, on a network of ``variant`` at its patch size."""
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
    for backend, precision in WAYS:
        started = time.perf_counter()
        runners[(backend, precision)] = network_for_backend(
            network, torch.device("cpu"), Precision(precision), backend
        )
        setup[(backend, precision)] = time.perf_counter() - started
    best = {way: float("inf") for way in WAYS}
    with torch.inference_mode():
        for _ in range(repeats):
            for way, runner in runners.items():
                started = time.perf_counter()
                runner(tile.to(torch.bfloat16) if way == ("torch", "bf16") else tile)
                best[way] = min(best[way], time.perf_counter() - started)
    return best, setup


def agreement(seeds: tuple[int, ...], field_mm: float, work_dir: Path) -> dict:
    """Per way, over the phantoms: the worst voxel agreement with the exact path, and the lowest
    structure Dice against it with the structure's name."""
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
    worst = {way: (1.0, 1.0, "") for way in WAYS}
    for seed in seeds:
        path = work_dir / f"phantom_{seed}.nrrd"
        write_phantom_ct(seed, model.card.orientation, path, field_mm)
        reference = sitk.GetArrayFromImage(segment(str(path), model, options=exact).label_map)
        for backend, precision in WAYS:
            options = SegmentOptions(device="cpu", backend=backend, precision=precision)
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
    for way in WAYS:
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
    args = parser.parse_args(argv)
    import openvino

    variant, repeats = ("tiny", 2) if args.quick else ("synapse", args.repeats)
    seeds = tuple(args.seeds[:1] if args.quick else args.seeds)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="unetrpp-backends-") as home:
        os.environ["UNETRPP_HOME"] = home  # a cold OpenVINO cache: the conversion is measured
        tiles, setup = tile_seconds(variant, repeats)
        accuracy = agreement(seeds, args.field_mm, Path(home))
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
