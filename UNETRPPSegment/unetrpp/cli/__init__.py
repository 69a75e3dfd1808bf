"""The ``unetrpp`` command: a thin argparse layer over the library.

Each subcommand lives in its own module ``unetrpp.cli.<name>`` exposing
``add_parser(subparsers) -> None`` and ``run(args) -> int``. Those modules import nothing heavy at
import time (no torch), so ``unetrpp --help`` and ``unetrpp models`` answer instantly.

Exit codes: 0 success, 2 a :class:`~unetrpp.errors.UnetrppError` (printed as one line, no
traceback; with ``--progress json`` also as an ``error`` event), 130 cancelled.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_COMMANDS = ("segment", "models", "download", "train", "evaluate", "demo")


def _command_modules():
    return [importlib.import_module(f"unetrpp.cli.{name}") for name in _COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    from unetrpp import __version__

    parser = argparse.ArgumentParser(
        prog="unetrpp",
        description="UNETR++ 3D medical image segmentation (CT and MR) with coded Slicer segmentations.",
    )
    parser.add_argument("--version", action="version", version=f"unetrpp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from unetrpp.errors import Cancelled, UnetrppError
    from unetrpp.events import ErrorEvent, JsonLinesEmitter

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except Cancelled:
        print("unetrpp: cancelled", file=sys.stderr)
        return 130
    except UnetrppError as error:
        if getattr(args, "progress", None) == "json":
            JsonLinesEmitter()(ErrorEvent(str(error), type(error).__name__))
        print(f"unetrpp: error: {error}", file=sys.stderr)
        return 2
