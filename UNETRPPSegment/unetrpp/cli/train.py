"""``unetrpp train DATASET OUTPUT.unetrpp``: train (or fine-tune) UNETR++ on an nnU-Net-layout data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from error


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace("x", ",").split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from error
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive numbers z,y,x, got {text!r}")
    return values


def _axes(text: str) -> tuple[int, ...]:
    names = {"z": 0, "y": 1, "x": 2}
    try:
        return tuple(names[a.strip().lower()] for a in text.split(",") if a.strip())
    except KeyError as error:
        raise argparse.ArgumentTypeError(f"mirror axes are z, y, x; got {text!r}") from error


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a UNETR++ on your data (nnU-Net/MSD layout) or on generated phantoms",
        description="Train UNETR++ on a data set with imagesTr/, labelsTr/ and dataset.json, and write a "
        ".unetrpp model (weights + card with plans, labels and validation scores).",
    )
    parser.add_argument("dataset", type=Path, help="data set folder (created when --phantoms is given)")
    parser.add_argument("output", type=Path, help="model file to write (.unetrpp)")
    parser.add_argument("--phantoms", type=int, metavar="N", help="first generate N phantoms into DATASET")
    parser.add_argument("--phantom-seed", type=int, default=0, help="seed of the first phantom (default 0)")
    parser.add_argument("--name", default=None, help="model name in its card (default: output file stem)")
    parser.add_argument("--title", default=None, help="one-line title for the card")
    parser.add_argument("--notes", default="", help="text added to the card's notes")
    parser.add_argument("--variant", default="synapse", help="network variant (default synapse)")
    parser.add_argument("--patch", type=_ints, default=None, help="patch size z,y,x (default: native)")
    parser.add_argument(
        "--spacing", type=_floats, default=None, help="target spacing z,y,x mm (default: median)"
    )
    parser.add_argument("--feature-size", type=int, default=None, help="network width (default 16)")
    parser.add_argument(
        "--depths", type=_ints, default=None, help="EPA blocks per encoder stage, e.g. 3,3,3,3"
    )
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (sgd 0.01, adamw 1e-3)")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--validate-every", type=int, default=100, help="iterations between validations")
    parser.add_argument(
        "--mirror", type=_axes, default=(), help="axes to mirror, e.g. z,y (never x with L/R labels)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="default: OUTPUT's name + .checkpoints"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.add_argument(
        "--fp16-weights", action="store_true", help="store weights as float16 (half the size)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    parser.set_defaults(run=run)


def _progress_callback(mode: str):
    if mode == "json":
        from unetrpp.events import JsonLinesEmitter

        return JsonLinesEmitter(), None
    if mode == "none":
        return None, None
    from tqdm import tqdm

    from unetrpp.events import StageEvent
    from unetrpp.train.loop import TrainingProgress

    state: dict = {}

    def on_event(event) -> None:
        if isinstance(event, TrainingProgress):
            bar = state.get("bar")
            if bar is None:
                bar = state["bar"] = tqdm(
                    total=event.total, initial=event.iteration - 1, desc="train", file=sys.stderr
                )
            postfix = {"loss": f"{event.loss:.3f}", "lr": f"{event.learning_rate:.2g}"}
            if event.validation_dice is not None:
                postfix["val_dice"] = f"{event.validation_dice:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        elif isinstance(event, StageEvent):
            print(f"{event.stage}: {event.message}", file=sys.stderr)

    def close() -> None:
        if state.get("bar") is not None:
            state["bar"].close()

    return on_event, close


def run(args: argparse.Namespace) -> int:
    from unetrpp.errors import OutputExistsError
    from unetrpp.train.config import TrainConfig
    from unetrpp.train.dataset import read_dataset, write_phantom_dataset
    from unetrpp.train.export import card_for, save_trained_model
    from unetrpp.train.loop import train

    if args.output.exists() and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists; choose another name or pass --overwrite")
    overrides = {}
    if args.feature_size is not None:
        overrides["feature_size"] = args.feature_size
    if args.depths is not None:
        overrides["depths"] = args.depths
    config = TrainConfig(
        model_name=args.name or args.output.name.removesuffix(".unetrpp"),
        variant=args.variant,
        patch_size_zyx=args.patch,
        target_spacing_zyx=args.spacing,
        network_overrides=overrides,
        iterations=args.iterations,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        validation_fraction=args.validation_fraction,
        validate_every=args.validate_every,
        mirror_axes_zyx=args.mirror,
        seed=args.seed,
        device=args.device,
        use_amp=not args.no_amp,
        num_threads=args.threads,
    )
    on_event, close = _progress_callback(args.progress)
    try:
        if args.phantoms:
            dataset = write_phantom_dataset(
                args.dataset, args.phantoms, seed=args.phantom_seed, on_event=on_event
            )
        else:
            dataset = read_dataset(args.dataset)
        checkpoint_dir = args.checkpoint_dir or args.output.with_name(args.output.name + ".checkpoints")
        result = train(dataset, config, checkpoint_dir=checkpoint_dir, resume=args.resume, on_event=on_event)
    finally:
        if close is not None:
            close()
    card = card_for(dataset, config, result, title=args.title, notes=args.notes)
    path = save_trained_model(
        args.output, result, card, overwrite=args.overwrite, use_float16=args.fp16_weights
    )
    if args.progress != "json":
        mean = result.mean_validation_dice
        score = f"validation mean Dice {mean:.3f}" if mean is not None else "no validation"
        print(f"wrote {path} ({score}, {result.elapsed_seconds / 60:.1f} min)")
    return 0
