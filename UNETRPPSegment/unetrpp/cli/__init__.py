"""The ``unetrpp`` command: a thin argparse layer over the library.

Each subcommand lives in its own module ``unetrpp.cli.<name>`` exposing
``add_parser(subparsers) -> None`` and ``run(args) -> int``. Those modules import nothing heavy at
import time (no torch), so ``unetrpp --help`` and ``unetrpp models`` answer instantly.

Exit codes: 0 success, 2 a :class:`~unetrpp.errors.UnetrppError` or a command-line usage error
(printed as one line, no traceback; with ``--progress json`` also as an ``error`` event, usage errors
with ``error_type`` ``"UsageError"``), 3 when ``batch`` ran and some case failed, 130 cancelled, 141 (as for
SIGPIPE) when the reader of stdout went away (``unetrpp models | head``): the command ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_COMMANDS = ("segment", "batch", "models", "download", "train", "evaluate", "demo")


def _command_modules():
    return [importlib.import_module(f"unetrpp.cli.{name}") for name in _COMMANDS]


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The ``unetrpp`` parser; with ``json_errors`` a usage error is also a JSON ``error`` event on stdout."""
    from unetrpp import __version__

    class Parser(argparse.ArgumentParser):
        # Subparsers are made with the parent's class, so every subcommand reports the same way.
        def error(self, message: str):  # type: ignore[override]
            if json_errors:
                from unetrpp.events import ErrorEvent, JsonLinesEmitter

                JsonLinesEmitter()(ErrorEvent(f"{self.prog}: {message}", "UsageError"))
            super().error(message)

    parser = Parser(
        prog="unetrpp",
        description="UNETR++ 3D medical image segmentation (CT and MR) with coded Slicer segmentations.",
    )
    parser.add_argument("--version", action="version", version=f"unetrpp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.add_parser(subparsers)
    return parser


def _asks_for_json_progress(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """Whether the command line sets ``--progress json`` as argparse will read it, found before parsing
    (which may fail): ``--progress json``, ``--progress=json`` or a unique prefix of the subcommand's
    options (``--prog json``); the last one counts, and nothing after ``--`` is an option."""
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command, options, value = None, [], None
    words = list(argv)
    for index, word in enumerate(words):
        if word == "--":
            break
        if command is None and word in commands:  # before it only the exact --progress counts
            command = word
            options = [o for a in commands[word]._actions for o in a.option_strings if o.startswith("--")]
            continue
        name, equals, inline = word.partition("=")
        matches = [option for option in options if option.startswith(name)] if len(name) > 2 else []
        if name == "--progress" or matches == ["--progress"]:
            value = inline if equals else (words[index + 1] if index + 1 < len(words) else None)
    return value == "json"


def main(argv: Sequence[str] | None = None) -> int:
    from unetrpp.pipeline.allocator import keep_heap

    keep_heap()  # before any large array: reading and resampling gain too (pipeline.allocator)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The reader went away: point stdout at /dev/null so that Python's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run(argv: list[str]) -> int:
    from unetrpp.errors import Cancelled, UnetrppError
    from unetrpp.events import ErrorEvent, JsonLinesEmitter

    parser = build_parser()
    parser = build_parser(json_errors=True) if _asks_for_json_progress(parser, argv) else parser
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
