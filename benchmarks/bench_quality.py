"""What each quality preset costs and how far its labels move from the paper-faithful one.

Trained weights only (random ones say nothing about agreement): the bundled ``demo`` UNETR++ on its
held-out phantoms, each padded to a scanner's 480 mm field of air (``bench_segment.write_phantom_ct``),
segmented in one process with every preset in turn: ``paper`` (the baseline: every tile, overlap 0.5,
fp32; the demo model was trained without mirroring, so its card allows no test-time mirroring and paper
runs each tile once), ``fast`` (the default), and ``paper, 8 mirrorings``: paper as it runs for the
official models, whose trainers mirrored every axis, here forced onto the demo model to measure its
time (its labels show what mirroring does to a model that never saw mirrored images). One untimed
warm-up run comes first, so that no preset pays for the first oneDNN kernels. Reported per preset: wall
seconds per case and the ratio to paper, voxel agreement with paper's labels (worst and mean case), the
lowest Dice per structure against paper's labels, and mean Dice against the phantoms' truth.

A table is printed and written into ``benchmarks/RESULTS.md`` between this script's markers (text
outside them is kept)::

    python benchmarks/bench_quality.py                      # the five held-out phantoms
    python benchmarks/bench_quality.py --seeds 1000 --results /tmp/RESULTS.md   # one phantom
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
from bench_segment import TRAINED_SEEDS, machine_description, write_phantom_ct, write_results  # noqa: E402

# name -> (quality, the mirror axes forced onto the demo card, or None for its own); paper first: the
# others are compared with it
PRESETS = {"paper": ("paper", None), "fast": ("fast", None), "paper, 8 mirrorings": ("paper", (0, 1, 2))}
GENERATED_START = "<!-- bench_quality.py: generated section start -->"
GENERATED_END = "<!-- bench_quality.py: generated section end -->"


def measure(seeds: tuple[int, ...], work_dir: Path) -> dict:
    """Every preset on every phantom; per preset: seconds, agreement and Dice against paper and truth."""
    import dataclasses

    import SimpleITK as sitk
    from unetrpp.evaluate.metrics import dice_per_label
    from unetrpp.models.loader import LoadedModel, load_model
    from unetrpp.pipeline.predictor import SegmentOptions, segment
    from unetrpp.train.phantoms import PHANTOM_LABELS

    load_before = os.getloadavg()
    model = load_model("demo")
    values, names = [value for value, _ in PHANTOM_LABELS], dict(PHANTOM_LABELS)
    cases = []
    for seed in seeds:
        path = work_dir / f"phantom_{seed}.nrrd"
        cases.append((path, write_phantom_ct(seed, model.card.orientation, path)))
    segment(str(cases[0][0]), model, options=SegmentOptions(device="cpu"))  # warm-up, not timed

    results = {preset: {"seconds": [], "agreement": [], "dice": {}, "truth_dice": []} for preset in PRESETS}
    for path, truth in cases:
        paper_labels = None
        for preset, (quality, mirror_axes) in PRESETS.items():
            card = (
                model.card
                if mirror_axes is None
                else dataclasses.replace(model.card, mirror_axes_zyx=mirror_axes)
            )
            started = time.perf_counter()
            result = segment(
                str(path),
                LoadedModel(model.network, card, model.plans),
                options=SegmentOptions(device="cpu", quality=quality),
            )
            entry = results[preset]
            entry["seconds"].append(time.perf_counter() - started)
            labels = sitk.GetArrayFromImage(result.label_map)
            paper_labels = labels if preset == "paper" else paper_labels
            entry["agreement"].append(float((labels == paper_labels).mean()))
            for value, dice in dice_per_label(labels, paper_labels, values):
                if not np.isnan(dice):  # NaN: the structure is in neither map
                    entry["dice"].setdefault(names[value], []).append(float(dice))
            truth_dice = [d for _, d in dice_per_label(labels, truth, values) if not np.isnan(d)]
            entry["truth_dice"].append(float(np.mean(truth_dice)))
    paper_seconds = float(np.sum(results["paper"]["seconds"]))
    return {
        "seeds": list(seeds),
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_description(),
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},  # 1-minute averages
        "shape_zyx": list(cases[0][1].shape),  # the truth lies on the written image's grid
        "presets": {
            preset: {
                "seconds_per_case": float(np.mean(entry["seconds"])),
                "time_vs_paper": float(np.sum(entry["seconds"])) / paper_seconds,
                "min_agreement": min(entry["agreement"]),
                "mean_agreement": float(np.mean(entry["agreement"])),
                "min_dice": {name: min(d) for name, d in entry["dice"].items()},
                "truth_dice_mean": float(np.mean(entry["truth_dice"])),
            }
            for preset, entry in results.items()
        },
    }


def format_report(report: dict) -> str:
    machine, load = report["machine"], report["load_average"]
    lines = [
        f"Run {report['started_utc']} UTC: the `demo` model on held-out phantoms {report['seeds']} "
        f"({'x'.join(map(str, report['shape_zyx']))} voxels (z, y, x) each, in a 480 mm field of air), every "
        f"preset in one process after one warm-up run. Machine: {machine['cpu']}, {machine['logical_cpus']} "
        f"logical CPUs (bf16 instructions: {', '.join(machine['bf16_instructions']) or 'none'}), torch "
        f"{machine['torch']}, {machine['torch_threads']} threads; 1-minute load average "
        f"{load['before']:.1f} before, {load['after']:.1f} after.",
        "",
        "| preset | seconds per case | time vs paper | voxel agreement with paper (worst / mean) "
        "| min structure Dice vs paper | mean Dice vs truth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for preset, entry in report["presets"].items():
        dice = entry["min_dice"]
        worst = min(dice, key=dice.get)
        lines.append(
            f"| {preset} | {entry['seconds_per_case']:.1f} | {entry['time_vs_paper']:.2f}x "
            f"| {100 * entry['min_agreement']:.3f}% / {100 * entry['mean_agreement']:.3f}% "
            f"| {dice[worst]:.4f} ({worst}) | {entry['truth_dice_mean']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TRAINED_SEEDS), help="phantom seeds")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="unetrpp-quality-") as work_dir:
        report = measure(tuple(args.seeds), Path(work_dir))
    generated = format_report(report)
    print(generated)
    write_results(args.results, generated, GENERATED_START, GENERATED_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
