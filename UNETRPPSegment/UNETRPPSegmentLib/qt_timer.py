"""Drive a job's ``poll()`` from a QTimer on Slicer's main thread (the only Qt-aware part of the library)."""

from __future__ import annotations

from collections.abc import Callable

import qt

__all__ = ["PollTimer"]


class PollTimer:
    """Calls ``poll()`` every ``interval_ms`` until it returns False, then stops itself."""

    def __init__(self, poll: Callable[[], bool], interval_ms: int = 100) -> None:
        self._poll = poll
        self._timer = qt.QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.connect("timeout()", self._on_timeout)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _on_timeout(self) -> None:
        try:
            still_running = self._poll()
        except Exception:
            self._timer.stop()  # never leave a timer firing into a broken job
            raise
        if not still_running:
            self._timer.stop()
