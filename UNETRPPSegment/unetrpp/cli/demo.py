"""``unetrpp demo [--output DIR]``: segment a generated phantom with the bundled model, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from unetrpp.cli.terminal import TerminalProgress, non_negative_int, positive_int, print_warnings

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment a synthetic abdomen phantom with the bundled demo model and score it (offline)",
        description="Generate a held-out synthetic CT phantom, segment it with the bundled 'demo' model "
        "through the normal pipeline, write the image and .seg.nrrd files, and print Dice per structure "
        "against the phantom's truth. The demo model is trained on phantoms only: not for clinical use.",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("unetrpp-demo"), help="folder (default ./unetrpp-demo)"
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="phantom seed, 0 or more (default 1000, held out from training)",
    )
    parser.add_argument(
        "--model", default="demo", help="model name or .unetrpp file (default: the bundled demo)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is fastest on a busy machine)",
    )
    parser.add_argument("--progress", choices=("bar", "none"), default="bar", help="progress on stderr")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier demo run")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import math

    from unetrpp.train.demo import DEMO_SEED, run_demo

    bar = TerminalProgress(unit="tile") if args.progress == "bar" else None
    try:
        result = run_demo(
            args.output,
            seed=DEMO_SEED if args.seed is None else args.seed,
            model=args.model,
            device=args.device,
            overwrite=args.overwrite,
            num_threads=args.threads,
            on_event=bar if bar is not None else print_warnings,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"phantom image:   {result.image_path}")
    print(f"truth:           {result.truth_path}")
    print(f"segmentation:    {result.segmentation_path}")
    print()
    print(f"{'structure':<22}{'Dice':>8}")
    for score in result.scores:
        dice = "-" if math.isnan(score.dice) else f"{score.dice:.3f}"
        print(f"{score.name:<22}{dice:>8}")
    print(f"mean Dice: {result.mean_dice:.3f} over {len(result.scores)} structures")
    print(f"time: {result.elapsed_seconds:.1f} s (segmentation {result.segment_seconds:.1f} s)")
    print("The demo model is trained on synthetic phantoms only: not for clinical use.")
    return 0
