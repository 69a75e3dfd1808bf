"""``unetrpp download NAME``: fetch a model's weights into the per-user cache, with progress.

    unetrpp download synapse                    progress bar on stderr, path on stdout
    unetrpp download synapse --progress json    one JSON event per line on stdout (for the Slicer module)

Nothing else in the package downloads on its own: this command, and the Slicer module after asking
the user, are the only ways weights are fetched.
"""

from __future__ import annotations

import argparse
import sys
import time

from unetrpp.cli.terminal import TerminalProgress, positive_float, print_warnings
from unetrpp.events import EventCallback, JsonLinesEmitter, ResultEvent

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download a model's official weights into the cache",
        description="Download a model's weights (resumes an interrupted download; see `unetrpp models`).",
    )
    parser.add_argument("name", help="model name, e.g. synapse")
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="how to report progress (default: bar)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds without data before giving up"
    )
    parser.add_argument("--force", action="store_true", help="download again even if installed")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unetrpp.models import store

    bar = TerminalProgress(unit="B") if args.progress == "bar" else None
    # --progress none still prints warnings (such as "trusted on first use").
    on_event: EventCallback = (
        JsonLinesEmitter(sys.stdout)
        if args.progress == "json"
        else bar
        if bar is not None
        else print_warnings
    )
    started = time.perf_counter()
    try:
        path = store.download(args.name, on_event=on_event, timeout=args.timeout, force=args.force)
    finally:
        if bar is not None:
            bar.close()
    # Seconds this command spent getting the weights in place (waiting for another process's download
    # included); near zero when they were installed already.
    elapsed = round(time.perf_counter() - started, 3)
    if args.progress == "json":
        JsonLinesEmitter(sys.stdout)(ResultEvent(output=str(path), elapsed_seconds=elapsed))
    else:
        print(path)
    return 0
