"""``unetrpp segment INPUT [INPUT ...] OUTPUT.seg.nrrd --model M``: the CLI over :func:`unetrpp.segment`.

Progress (``--progress``): ``bar`` draws a progress bar on stderr (the default when stderr is a
terminal), ``none`` prints nothing while running, ``json`` writes one JSON object per line on stdout,
flushed at once, and nothing else on stdout (logs and warnings of libraries go to stderr). The Slicer
module reads these lines. Every object has an ``"event"`` key:

``stage``: a stage starts; stages come in this order (``load_model`` may come before ``read`` when
the model is a weights file)::

    {"event": "stage", "stage": "read" | "load_model" | "preprocess" | "inference" | "resample"
                                | "write", "message": "human-readable text"}

``progress``: tiles of the sliding window; ``total`` is known from the first event (``done`` = 0)
and ``done`` increases to ``total``; seconds are floats, ``eta_seconds`` null until one tile is done::

    {"event": "progress", "stage": "inference", "done": 12, "total": 49,
     "elapsed_seconds": 3.1, "eta_seconds": 9.5}

``warning``: something the user should know, the run goes on::

    {"event": "warning", "message": "..."}

One warning comes before inference when an input does not look like what the model was trained on (a
CT model given an MR or an image not in Hounsfield units, an MR model given a CT; see
:mod:`unetrpp.pipeline.modality`): the run still ends with exit status 0, so read the warning before the
organ table. ``--force-modality`` skips that check. Without ``--progress json`` every warning is one line
``unetrpp: warning: ...`` on stderr, whatever ``--progress`` says.

``result``: the last line of a successful run (exit status 0); one entry per written structure;
``dicom_seg`` is the DICOM SEG written with ``--dicom-seg`` (else null)::

    {"event": "result", "output": "/abs/or/relative/out.seg.nrrd", "elapsed_seconds": 41.2,
     "structures": [{"label_value": 1, "name": "spleen", "voxels": 12345, "volume_ml": 98.7}, ...],
     "dicom_seg": "/abs/or/relative/out.dcm"}

``error``: the last line of a failed run; exit status 2 for a problem the user can fix (bad input,
missing weights, existing output; ``error_type`` is the ``unetrpp.errors`` class name), 1 with any
other ``error_type`` for a bug (its traceback goes to stderr)::

    {"event": "error", "message": "one line naming the problem", "error_type": "InputImageError"}

Ctrl-C (SIGINT) ends the run with exit status 130 and no ``error`` event (a cancel is not a failure);
SIGTERM ends it the same way with exit status 143.

Outputs: OUTPUT, ``--labelmap`` and ``--summary`` must be different files and none of them an input
(also through symlinks, hard links or a difference only in case: :mod:`unetrpp.pipeline.output_paths`);
this and their folders are checked before any work. Nothing is left half-written: every output file is
written under a temporary name (``.<name>.unetrpp-...``), read back and only then renamed, so a full
disk or a file size limit is an ``error`` (``OutputWriteError``) and never a truncated file. Ctrl-C and
SIGTERM remove the temporary file; SIGKILL cannot, and the next run that writes into the same folder
removes what a killed run left (:mod:`unetrpp.atomic`). The ``result`` event comes after every output
is written.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unetrpp.atomic import write_bytes_atomically, write_image_atomically
from unetrpp.cli.terminal import TerminalProgress, positive_int, print_warnings

__all__ = [
    "add_case_options",
    "add_parser",
    "case_options",
    "outliving_its_reader",
    "run",
    "terminate_cleanly",
]

_LABELMAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _overlap(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"overlap must be a number in [0, 1), got {text!r}") from error
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"overlap must be in [0, 1), got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give structure names separated by commas, e.g. liver,spleen")
    return names


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a CT/MR volume into a coded Slicer segmentation (.seg.nrrd)",
        description="Segment one case with a UNETR++ model. The output lies on the input's exact voxel grid "
        "and carries names, colours and SNOMED CT codes per structure.",
        epilog="Example: unetrpp segment ct.nii.gz ct.seg.nrrd --model synapse --progress json",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="input image: NIfTI, NRRD, MHA or a DICOM folder; one per model input, in the model's order",
    )
    parser.add_argument("output", metavar="OUTPUT.seg.nrrd", help="the segmentation file to write")
    add_case_options(parser)
    parser.add_argument("--series", metavar="UID", help="DICOM folder input: Series Instance UID to read")
    parser.add_argument("--labelmap", type=Path, help="also write the label map as an image (.nii.gz, .nrrd)")
    parser.add_argument("--summary", type=Path, help="also write the per-structure volumes as JSON")
    parser.add_argument(
        "--dicom-seg",
        type=Path,
        metavar="OUT.dcm",
        help="DICOM folder input: also write a DICOM Segmentation object referencing the source series "
        '(PACS, OHIF, Slicer DICOM module; needs pip install "unetrpp[dicom]")',
    )
    parser.set_defaults(run=run)


def add_case_options(parser: argparse.ArgumentParser) -> None:
    """The options of one case, shared by ``segment`` and ``batch`` so both read them the same way:
    the model, device, quality preset, tiling, structures, orientation, precision, progress, overwrite."""
    parser.add_argument("--model", "-m", required=True, help="model name (unetrpp models) or weights file")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--quality",
        choices=("fast", "paper"),  # unetrpp.pipeline.segment_types.Quality (not imported: start-up time)
        default="fast",
        help="fast (default), or paper: what the UNETR++ paper's numbers used (8 mirrorings per tile, every "
        "tile, overlap 0.5, fp32: many times slower, see benchmarks/RESULTS.md); paper refuses options that "
        "change those",
    )
    # The options the quality preset decides default to None: the preset's value (SegmentOptions).
    parser.add_argument("--overlap", type=_overlap, help="tile overlap in [0, 1) (default 0.5)")
    parser.add_argument(
        "--tta", action="store_true", default=None, help="mirroring test-time augmentation (8x slower)"
    )
    parser.add_argument("--structures", type=_names, help="comma-separated structures to keep (default all)")
    parser.add_argument(
        "--largest-component",
        action="store_true",
        help="keep only the largest connected part of each structure",
    )
    parser.add_argument(
        "--orientation",
        help="override the model's orientation code (e.g. RAS, LPS), or 'native' to keep the stored voxel "
        "order (no reorientation)",
    )
    parser.add_argument(
        "--force-modality",
        action="store_true",
        help="skip the check that the input looks like the model's modality (CT in Hounsfield units for a "
        "CT model, not CT for an MR model), which otherwise warns before inference",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="forward-pass arithmetic; auto: fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "openvino"),  # unetrpp.pipeline.backends.Backend
        default="auto",
        help="what runs the network on the CPU: auto (default: OpenVINO when installed, for the large "
        'networks, else torch), torch, or openvino (pip install "unetrpp[openvino]"); CUDA always uses torch',
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, help="tiles per forward pass (default 1)"
    )
    parser.add_argument(
        "--accumulation",
        choices=("float16", "float32"),
        help="dtype of the blended logits (float16 halves the memory; default)",
    )
    parser.add_argument(
        "--no-body-crop",
        dest="body_crop",
        action="store_false",
        default=None,
        help="CT models: also run the tiles that are mostly air (slower; the body gets near-same labels)",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default=None,
        help="bar (default on a terminal), json (one event per line on stdout) or none",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def case_options(args: argparse.Namespace) -> Any:
    """The :class:`~unetrpp.pipeline.segment_types.SegmentOptions` that :func:`add_case_options`' values
    (and ``--series`` where the command has it) ask for."""
    from unetrpp.pipeline.segment_types import SegmentOptions

    return SegmentOptions(
        device=args.device,
        quality=args.quality,
        overlap=args.overlap,
        use_tta=args.tta,
        structures=args.structures,
        keep_largest_component=args.largest_component,
        orientation=args.orientation,
        precision=args.precision,
        batch_size=args.batch_size,
        accumulation=args.accumulation,
        crop_to_body=args.body_crop,
        series_uid=getattr(args, "series", None),
        check_modality=not args.force_modality,
        backend=args.backend,
    )


def run(args: argparse.Namespace) -> int:
    from unetrpp.errors import Cancelled, UnetrppError
    from unetrpp.events import ErrorEvent, JsonLinesEmitter

    if args.progress is None:
        args.progress = "bar" if sys.stderr.isatty() else "none"
    emitter = outliving_its_reader(JsonLinesEmitter(sys.stdout)) if args.progress == "json" else None
    try:
        with terminate_cleanly():
            return _run(args, emitter)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: temporary files are gone already (finally blocks)
        raise Cancelled("interrupted") from interrupt
    except UnetrppError:
        raise  # cli.main writes the error event and exits 2
    except MemoryError as error:  # outside segment()'s stages, e.g. importing torch
        from unetrpp.pipeline.memory import out_of_memory_message

        raise UnetrppError(out_of_memory_message("start-up", error)) from error
    except Exception as error:  # a bug: still tell a listening GUI, in its own format
        if emitter is not None:
            emitter(ErrorEvent(f"internal error: {error}".splitlines()[0], type(error).__name__))
        raise


def outliving_its_reader(emitter: Callable[[Any], None]) -> Callable[[Any], None]:
    """The emitter, except that when stdout's reader goes away (``--progress json | head -2``) the run
    goes on and still writes its files: stdout then points at the null device."""
    closed = False

    def emit_event(event: Any) -> None:
        nonlocal closed
        if closed:
            return
        try:
            emitter(event)
        except BrokenPipeError:
            closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    return emit_event


def _run(args: argparse.Namespace, emitter: Any) -> int:
    from unetrpp.pipeline.output_paths import check_distinct
    from unetrpp.pipeline.predictor import check_writable_folder, segment

    inputs, output = args.inputs, args.output
    options = case_options(args)
    extra_outputs = [(o, p) for o, p in (("--labelmap", args.labelmap), ("--summary", args.summary)) if p]
    for _, path in extra_outputs:
        _check_extra_output(path, args.overwrite)
        check_writable_folder(path)
    dicom_output = [("--dicom-seg", args.dicom_seg)] if args.dicom_seg is not None else []
    check_distinct([("OUTPUT", Path(output).expanduser()), *extra_outputs, *dicom_output], inputs)
    if args.labelmap is not None and not args.labelmap.name.lower().endswith(_LABELMAP_SUFFIXES):
        from unetrpp.errors import UnetrppError

        raise UnetrppError(f"--labelmap {args.labelmap} must end in one of {', '.join(_LABELMAP_SUFFIXES)}")

    bar = TerminalProgress(unit="tile") if args.progress == "bar" else None
    on_event = emitter if emitter is not None else bar if bar is not None else print_warnings
    dicom_source, dicom_problem = _dicom_seg_source(args, on_event)
    held: list[Any] = []  # the result event waits until every output is written
    forward = _holding_result(on_event, held)
    try:
        result = segment(inputs, args.model, output, options, on_event=forward, overwrite=args.overwrite)
    finally:
        if bar is not None:
            bar.close()
    if args.labelmap is not None:
        write_image_atomically(result.label_map, args.labelmap)
    if args.summary is not None:
        summary = {"inputs": [str(p) for p in inputs], **result.summary()}
        write_bytes_atomically(args.summary, json.dumps(summary, indent=2).encode("utf-8"))
    if dicom_source is not None:
        _write_dicom_seg(result, dicom_source, dicom_problem, args)
        held[0] = dataclasses.replace(held[0], dicom_seg=str(args.dicom_seg))
    on_event(held[0])
    if emitter is None:
        print(_table(result.volumes))
        print(f"wrote {result.output}")
        if dicom_source is not None:
            print(f"wrote {args.dicom_seg}")
    return 0


def _dicom_seg_source(args: argparse.Namespace, on_event: Any) -> tuple[Any, Any]:
    """``--dicom-seg``: (the source series, a problem that rules the SEG out) or (None, None).

    Usage problems (no highdicom, an existing or unwritable output, an input that is not a DICOM folder)
    refuse before any work. A series that cannot carry a SEG is a warning now, so the user learns it
    early; the .seg.nrrd is still written and the run then ends with that error (labels.dicom_seg).
    """
    if args.dicom_seg is None:
        return None, None
    from unetrpp.errors import DicomSegError
    from unetrpp.events import WarningEvent
    from unetrpp.labels import dicom_seg
    from unetrpp.pipeline.predictor import check_writable_folder

    dicom_seg.require_highdicom()
    _check_extra_output(args.dicom_seg, args.overwrite)
    check_writable_folder(args.dicom_seg)
    source = dicom_seg.find_dicom_source(args.inputs[0], args.series)
    try:
        dicom_seg.check_dicom_source(source)
    except DicomSegError as problem:
        on_event(WarningEvent(f"{problem}; the .seg.nrrd is still computed and written"))
        return source, problem
    return source, None


def _holding_result(on_event: Any, held: list[Any]) -> Any:
    """An event callback that keeps the result event back (in ``held``) and forwards every other."""
    from unetrpp.events import ResultEvent

    def forward(event: Any) -> None:
        if isinstance(event, ResultEvent):
            held.append(event)
        else:
            on_event(event)

    return forward


def _write_dicom_seg(result: Any, source: Any, problem: Exception | None, args: argparse.Namespace) -> None:
    """Write the DICOM SEG after the .seg.nrrd; a refusal names the .seg.nrrd that was kept."""
    from unetrpp.errors import DicomSegError
    from unetrpp.labels.dicom_seg import write_dicom_seg

    try:
        if problem is not None:
            raise problem
        write_dicom_seg(
            result.label_map,
            result.structures,
            source,
            args.dicom_seg,
            model_name=result.model.name,
            overwrite=args.overwrite,
        )
    except DicomSegError as error:
        raise DicomSegError(f"{error}; wrote {result.output} only") from error


def _check_extra_output(path: Path, overwrite: bool) -> None:
    from unetrpp.errors import OutputExistsError, UnetrppError

    if path.is_dir():
        raise UnetrppError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass --overwrite")


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM (SLURM, systemd, kill) ends the run as Ctrl-C does, through every finally block, so no
    temporary file is left; exit status 143 as for the signal. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(number: int, frame: Any) -> None:
        raise SystemExit(128 + number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _table(volumes: Any) -> str:
    width = max([len("structure"), *(len(v.name) for v in volumes)])
    lines = [f"{'structure':<{width}}  {'voxels':>10}  {'volume mL':>10}"]
    lines += [f"{v.name:<{width}}  {v.voxels:>10d}  {v.volume_ml:>10.2f}" for v in volumes]
    return "\n".join(lines)
