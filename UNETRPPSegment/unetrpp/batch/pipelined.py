"""The default executor: reading and writing overlap inference, in this process.

While the network runs on case *i* (in the calling thread, which keeps Ctrl-C and SIGTERM), a thread
reads and preprocesses case *i+1* and another resamples and writes case *i-1*. So at most three cases
are in memory at once, one per stage: about three times the peak of one case on its own (the figures
are in ``benchmarks/RESULTS.md``). Outcomes are reported in case order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from unetrpp.batch.jobs import CaseJob, CaseOutcome, CaseRun
from unetrpp.events import EventCallback
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = ["run_pipelined"]

T = TypeVar("T")


def run_pipelined(
    jobs: Sequence[CaseJob],
    loaded: LoadedModel,
    options: SegmentOptions,
    on_start: Callable[[CaseJob], None],
    on_outcome: Callable[[CaseJob, CaseOutcome], None],
    on_event: EventCallback | None = None,
) -> None:
    """Compute ``jobs`` in order with the three stages overlapped. ``on_start`` is called as a case's
    reading begins and ``on_outcome`` as soon as its last file is written (so a kill right after loses
    nothing), one call at a time. On Ctrl-C the case being written is finished and reported, so it is not
    redone; the one being read is dropped."""
    recording = threading.Lock()  # the callbacks keep the journal: one at a time, in case order

    def prepare(job: CaseJob) -> CaseRun:
        run = CaseRun(job, on_event)
        run.prepare(loaded, options)
        return run

    def finish(run: CaseRun) -> None:
        outcome = run.finish()
        with recording:
            on_outcome(run.job, outcome)

    def begin(position: int) -> Future[CaseRun] | None:
        if position >= len(jobs):
            return None
        with recording:
            on_start(jobs[position])
        return _in_thread(prepare, jobs[position])

    reading = begin(0)
    writing: Future[None] | None = None
    try:
        for position in range(len(jobs)):
            run = reading.result()
            reading = begin(position + 1)
            run.infer()
            if writing is not None:  # at most one case waits to be written: memory stays bounded
                writing.result()
            writing = _in_thread(finish, run)
    finally:
        if writing is not None:
            writing.result()


def _in_thread(function: Callable[..., T], *args: Any) -> Future[T]:
    """``function(*args)`` in a new daemon thread. concurrent.futures' pool threads are joined when the
    interpreter exits, which would hold a Ctrl-C until a large case had been read."""
    future: Future[T] = Future()

    def target() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(function(*args))
        except BaseException as error:  # handed to the thread that waits on it
            future.set_exception(error)

    threading.Thread(target=target, name=f"unetrpp-{function.__name__}", daemon=True).start()
    return future
