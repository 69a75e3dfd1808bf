"""Qt-free runner for the ``unetrpp`` child process: start, stream JSON-line events, cancel the tree.

The child writes one JSON object per line on stdout (``unetrpp.events``) and log text on stderr.
Two reader threads put lines on one queue; :meth:`ProcessRunner.poll` drains it on the caller's
thread (Slicer's main thread, driven by a QTimer), so MRML and Qt are only touched from there.

States::

    IDLE -> STARTING -> RUNNING -> IMPORTING  (child exited 0; the owner imports, then calls finish())
                           |   \\-> FAILED     (non-zero exit; ``error_message`` says why in one line)
                           \\-> CANCELLING -> CANCELLED  (cancel(): the whole process tree is killed)
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import queue
import re
import subprocess
import threading
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from unetrpp.events import ErrorEvent, Event, ProgressEvent, ResultEvent, StageEvent, WarningEvent

__all__ = ["RunState", "ProcessRunner", "event_from_json", "kill_process_tree"]

logger = logging.getLogger(__name__)

_EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (StageEvent, ProgressEvent, WarningEvent, ResultEvent, ErrorEvent)
}
# Each event field's type, to check what a child sends before the GUI computes with it.
_FIELD_TYPES: dict[type[Event], dict[str, Any]] = {
    cls: typing.get_type_hints(cls) for cls in _EVENT_TYPES.values()
}
_STDOUT, _STDERR = "stdout", "stderr"
_PIPE_GRACE_SECONDS = 2.0
# How the unetrpp CLI starts its one-line errors: "unetrpp: error: " or "unetrpp segment: error: " (argparse).
_CLI_ERROR_PREFIX = re.compile(r"^unetrpp(?: [\w-]+)*: error: ")


class RunState(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        """True while the child may still produce output or hold resources."""
        return self in (RunState.STARTING, RunState.RUNNING, RunState.CANCELLING)


def event_from_json(line: str) -> Event | None:
    """The event a ``--progress json`` line describes, or None when the line is not an event."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    cls = _EVENT_TYPES.get(str(data.get("event")))
    if cls is None:
        return None
    types_by_name = _FIELD_TYPES[cls]
    values = {key: value for key, value in data.items() if key in types_by_name}
    if not all(_fits(value, types_by_name[key]) for key, value in values.items()):
        return None  # e.g. "done": "3": the GUI would fail computing with it, so it is only log text
    try:
        return cls(**values)
    except TypeError:  # a required field is missing: treat the line as plain log text
        return None


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value fits an event field's type; numbers (counts, seconds) must also be finite
    and not negative, and a bool is not a number."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, argument) for argument in arguments)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint in (int, float):
        number = isinstance(value, (int,) if hint is int else (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value) and value >= 0
    if origin is list:
        return isinstance(value, list) and all(_fits(item, arguments[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(key, arguments[0]) and _fits(item, arguments[1]) for key, item in value.items()
        )
    return isinstance(value, hint)


def kill_process_tree(pid: int, timeout_seconds: float = 2.0) -> bool:
    """Kill a process and all its descendants; True when none of them is left after the timeout.

    Killing only the direct child is not enough: ``PythonSlicer`` is a launcher, and torch may
    start worker processes, so the tree is collected first and then killed bottom-up.
    """
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    try:
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        processes = [parent]
    for process in reversed(processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    deadline = time.monotonic() + timeout_seconds
    while True:
        alive = [process for process in processes if is_running(process)]
        if not alive or time.monotonic() >= deadline:
            return not alive
        # Poll, never reap: psutil.wait_procs would reap our own child, and its Popen would then read
        # exit status 0 (ECHILD) instead of the kill. A killed child stays a zombie until Popen waits.
        time.sleep(0.05)


def is_running(process) -> bool:
    """Whether a psutil process still runs. A killed grandchild stays a zombie until an init process
    reaps it, which some container inits never do promptly; a zombie runs no code, so it counts as gone."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ProcessRunner:
    """Runs one command in the background and turns its output into events.

    Args:
        command: program and arguments (no shell).
        env: the child's complete environment.
        on_event: called on the polling thread for each JSON event the child writes on stdout.
        on_log: called on the polling thread for each other line (stderr, non-JSON stdout).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.command = [str(part) for part in command]
        self.env = dict(env) if env is not None else None
        self.on_event = on_event
        self.on_log = on_log
        self.state = RunState.IDLE
        self.returncode: int | None = None
        self.error_message = ""
        self.result: ResultEvent | None = None
        self._last_stderr_line = ""
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._exited_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child; returns at once."""
        if self.state is not RunState.IDLE:
            raise RuntimeError(f"the process runner is {self.state.value}, not idle")
        self.state = RunState.STARTING
        logger.debug("Starting %s", self.command)
        creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0
        try:
            self._process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                creationflags=creationflags,
            )
        except OSError as error:
            self.state = RunState.FAILED
            self.error_message = f"could not start {self.command[0]}: {error}"
            return
        for name, stream in ((_STDOUT, self._process.stdout), (_STDERR, self._process.stderr)):
            thread = threading.Thread(target=self._read_lines, args=(name, stream), daemon=True)
            thread.start()
            self._threads.append(thread)
        self.state = RunState.RUNNING

    def _read_lines(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\r\n")))
        stream.close()

    def poll(self) -> RunState:
        """Hand queued lines to the callbacks and update the state; call it often (e.g. every 100 ms)."""
        self._drain()
        if self.state in (RunState.RUNNING, RunState.STARTING) and self._process is not None:
            if self._process.poll() is not None and self._output_closed():
                self._drain()
                self._finish(self._process.returncode)
        elif self.state is RunState.CANCELLING and self._process and self._process.poll() is not None:
            self._drain()
            self.returncode = self._process.returncode
            self.state = RunState.CANCELLED
        return self.state

    def wait(self, timeout_seconds: float | None = None, interval_seconds: float = 0.05) -> RunState:
        """Poll until the child has ended (blocking mode for scripts and tests)."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while self.poll().is_active:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.command[0]} still running after {timeout_seconds} s")
            time.sleep(interval_seconds)
        return self.state

    def cancel(self) -> None:
        """Kill the child and all its descendants; the state becomes CANCELLED when they are gone."""
        if not self.state.is_active or self._process is None:
            return
        self.state = RunState.CANCELLING
        if not kill_process_tree(self._process.pid):
            logger.warning("Some processes of %s survived the kill", self.command[0])
        try:
            self._process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not exit after kill", self.command[0])
        self.poll()

    def finish(self) -> None:
        """Called by the owner when the result is imported (IMPORTING -> IDLE)."""
        if self.state is RunState.IMPORTING:
            self.state = RunState.IDLE

    def _output_closed(self) -> bool:
        """True when both pipes reached EOF, or a grace period after exit has passed (a stray
        grandchild may keep the pipes open; its output is not worth hanging for)."""
        if not any(thread.is_alive() for thread in self._threads):
            return True
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        return time.monotonic() - self._exited_at > _PIPE_GRACE_SECONDS

    def _drain(self) -> None:
        while True:
            try:
                source, line = self._lines.get_nowait()
            except queue.Empty:
                return
            event = event_from_json(line) if source == _STDOUT else None
            if event is None:
                if source == _STDERR and line.strip():
                    self._last_stderr_line = line.strip()
                if self.on_log is not None:
                    self.on_log(line)
                continue
            if isinstance(event, ErrorEvent):
                self.error_message = event.message
            elif isinstance(event, ResultEvent):
                self.result = event
            if self.on_event is not None and self.state is not RunState.CANCELLING:
                self.on_event(event)

    def _finish(self, returncode: int) -> None:
        self.returncode = returncode
        if returncode == 0:
            self.state = RunState.IMPORTING
            return
        self.state = RunState.FAILED
        if not self.error_message:
            fallback = f"{self.command[0]} exited with status {returncode}"
            line = self._last_stderr_line
            # The unetrpp CLI prefixes its one-line errors; the caller shows the message itself.
            self.error_message = _CLI_ERROR_PREFIX.sub("", line) if line else fallback
