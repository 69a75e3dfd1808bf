"""What the CLI shows on a terminal: argparse value checks and a progress bar fed by events.

Shared by the subcommands so that every long command reports the same way: one line per stage, a tqdm
bar per counted stage (tiles, bytes), warnings as lines; all on stderr, so stdout keeps only results.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from unetrpp.events import Event, ProgressEvent, StageEvent, WarningEvent

__all__ = ["TerminalProgress", "positive_int", "non_negative_int", "positive_float", "print_warnings"]


def positive_int(text: str) -> int:
    """argparse ``type=``: a whole number >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type=``: a whole number >= 0 (a random seed)."""
    return _whole_number(text, 0)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=``: a number > 0."""
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from error
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def print_warnings(event: Event) -> None:
    """An ``on_event`` callback for ``--progress none``: no stage lines or bar, but a warning still gets
    its ``unetrpp: warning: ...`` line on stderr (never a silent result on a doubtful input)."""
    if isinstance(event, WarningEvent):
        print(f"unetrpp: warning: {event.message}", file=sys.stderr, flush=True)


class TerminalProgress:
    """An ``on_event`` callback for terminals: stage lines, one tqdm bar per counted stage.

    Args:
        unit: what ``done``/``total`` count (``"tile"``, or ``"B"`` for bytes, shown scaled).
    """

    def __init__(self, unit: str = "it") -> None:
        self._unit = unit
        self._bar: Any = None

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, StageEvent):
            self.close()
            tqdm.write(f"{event.stage}: {event.message}" if event.message else event.stage, file=sys.stderr)
        elif isinstance(event, WarningEvent):
            tqdm.write(f"unetrpp: warning: {event.message}", file=sys.stderr)
        elif isinstance(event, ProgressEvent):
            if self._bar is None or self._bar.total != (event.total or None):
                self.close()
                self._bar = tqdm(
                    total=event.total or None,
                    initial=event.done,
                    desc=event.stage,
                    unit=self._unit,
                    unit_scale=self._unit == "B",
                    file=sys.stderr,
                )
            self._bar.update(event.done - self._bar.n)

    def close(self) -> None:
        """End the current bar (call when the command finishes)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
