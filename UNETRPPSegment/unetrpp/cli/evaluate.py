"""``unetrpp evaluate PRED GT``: Dice and HD95 per structure, as a table and as CSV/JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and HD95 per structure of predictions against ground truth",
        description="Compare predicted segmentations with ground truth: two files, or two folders whose "
        "files pair by case name. Label maps (NIfTI, NRRD, MHA), Slicer .seg.nrrd files or DICOM SEG files "
        "(.dcm, segments paired by name); the prediction must be on the ground truth's voxel grid.",
    )
    parser.add_argument("prediction", type=Path, help="predicted segmentation file or folder")
    parser.add_argument("truth", type=Path, help="ground-truth segmentation file or folder")
    parser.add_argument(
        "--label-set",
        default=None,
        help="name labels after a label set (btcv, synapse, acdc, brats, lung) and score all of its labels",
    )
    parser.add_argument("--csv", type=Path, default=None, help="write per-case scores as CSV")
    parser.add_argument("--json", type=Path, default=None, help="write scores as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the summary table as Markdown")
    parser.add_argument("--no-hd95", action="store_true", help="Dice only (HD95 is slower)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unetrpp.evaluate.report import evaluate

    labels = None
    if args.label_set:
        from unetrpp.labels.terminology import structures_for

        labels = [(s.label_value, s.name) for s in structures_for(args.label_set)]
    report = evaluate(args.prediction, args.truth, labels, with_hd95=not args.no_hd95)
    for path in (args.csv, args.json, args.markdown):
        if path is not None:
            report.write(path, overwrite=args.overwrite)
    print(f"{len(report.cases)} case(s)")
    print(report.to_markdown(), end="")
    return 0
