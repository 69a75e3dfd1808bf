"""``unetrpp demo [--output DIR]``: segment a generated phantom with the bundled model, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
        "--seed", type=int, default=None, help="phantom seed (default 1000, held out from training)"
    )
    parser.add_argument(
        "--model", default="demo", help="model name or .unetrpp file (default: the bundled demo)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is fastest on a busy machine)",
    )
    parser.add_argument("--progress", choices=("bar", "none"), default="bar", help="progress on stderr")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier demo run")
    parser.set_defaults(run=run)


def _progress():
    from tqdm import tqdm

    from unetrpp.events import ProgressEvent, StageEvent

    bars: dict = {}

    def on_event(event) -> None:
        if isinstance(event, StageEvent):
            print(f"{event.stage}: {event.message}" if event.message else event.stage, file=sys.stderr)
        elif isinstance(event, ProgressEvent) and event.total:
            bar = bars.get(event.stage)
            if bar is None:
                bar = bars[event.stage] = tqdm(
                    total=event.total, desc=event.stage, file=sys.stderr, leave=False
                )
            bar.update(event.done - bar.n)
            if event.done >= event.total:
                bar.close()

    return on_event


def run(args: argparse.Namespace) -> int:
    import math

    from unetrpp.train.demo import DEMO_SEED, run_demo

    result = run_demo(
        args.output,
        seed=DEMO_SEED if args.seed is None else args.seed,
        model=args.model,
        device=args.device,
        overwrite=args.overwrite,
        num_threads=args.threads,
        on_event=_progress() if args.progress == "bar" else None,
    )
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
