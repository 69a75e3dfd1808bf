"""``unetrpp download NAME``: fetch a model's weights into the per-user cache, with progress.

    unetrpp download synapse                    progress bar on stderr, path on stdout
    unetrpp download synapse --progress json    one JSON event per line on stdout (for the Slicer module)

Nothing else in the package downloads on its own: this command, and the Slicer module after asking
the user, are the only ways weights are fetched.
"""

from __future__ import annotations

import argparse
import sys

from unetrpp.events import Event, EventCallback, JsonLinesEmitter, ProgressEvent, ResultEvent, StageEvent

__all__ = ["add_parser", "run", "progress_bar_callback"]


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
        "--timeout", type=_positive_float, default=30.0, help="seconds without data before giving up"
    )
    parser.add_argument("--force", action="store_true", help="download again even if installed")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from unetrpp.models import store

    if args.progress == "json":
        on_event: EventCallback | None = JsonLinesEmitter(sys.stdout)
    elif args.progress == "bar":
        on_event = progress_bar_callback()
    else:
        on_event = None
    try:
        path = store.download(args.name, on_event=on_event, timeout=args.timeout, force=args.force)
    finally:
        close = getattr(on_event, "close", None)
        if close is not None:
            close()
    if args.progress == "json":
        JsonLinesEmitter(sys.stdout)(ResultEvent(output=str(path)))
    else:
        print(path)
    return 0


class _ProgressBar:
    """An ``on_event`` callback drawing download progress with tqdm on stderr."""

    def __init__(self) -> None:
        self._bar = None

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, StageEvent):
            print(event.message, file=sys.stderr)
        elif isinstance(event, ProgressEvent):
            if self._bar is None:
                self._bar = tqdm(
                    total=event.total or None, initial=event.done, unit="B", unit_scale=True, file=sys.stderr
                )
            self._bar.update(event.done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar_callback() -> _ProgressBar:
    """A callback showing a byte progress bar on stderr; call its ``close()`` when done."""
    return _ProgressBar()


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
