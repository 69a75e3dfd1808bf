"""``--executor ray``: each case a task on a Ray cluster, one loaded model per worker.

Ray's docs (docs.ray.io, "Actors" and "Fault tolerance: actor process failure", Ray 2.60) are the
contract used here: an actor keeps state between its method calls, so each worker holds the model it
received once from the object store; when its process dies, a pending call raises ``RayActorError``.
Such a case is given to a new worker, up to ``RayOptions.max_attempts`` tries, by this driver rather than
by Ray's own task retries, so the journal sees each attempt and a case that kills every worker fails
alone instead of holding the run.

What is assumed: every node reads the inputs and writes the output folder at the same paths (a shared
file system such as NFS or Lustre), and has ``unetrpp`` installed at the same version. Workers write
each file atomically (a hidden temporary, then a rename), so the folder never holds a half-written
output; a temporary left by a killed worker is removed by the next write to that folder from the same
node. Only this driver writes the journal and the reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from unetrpp.batch.jobs import CaseJob, CaseOutcome, run_job
from unetrpp.batch.ray_options import RayOptions, require_ray
from unetrpp.errors import BatchInputError
from unetrpp.models.cards import LoadedModel
from unetrpp.pipeline.segment_types import SegmentOptions

__all__ = ["run_on_ray"]

logger = logging.getLogger(__name__)


class CaseWorker:
    """A Ray actor: the model, deserialised once when the worker starts, then one case per call."""

    def __init__(self, loaded: LoadedModel, options: SegmentOptions) -> None:
        self._loaded, self._options = loaded, options

    def run(self, job: CaseJob) -> CaseOutcome:
        return run_job(job, self._loaded, self._options)


def run_on_ray(
    jobs: Sequence[CaseJob],
    loaded: LoadedModel,
    options: SegmentOptions,
    on_start: Callable[[CaseJob], None],
    on_outcome: Callable[[CaseJob, CaseOutcome], None],
    ray_options: RayOptions,
) -> None:
    """Compute ``jobs`` on the cluster; ``on_start`` is called as a case is first handed to a worker,
    ``on_outcome`` as it ends (in the order cases end). Ctrl-C stops every worker; the cases they held
    are redone by the next run."""
    if not jobs:
        return
    with _cluster(ray_options.address) as ray:
        from ray.exceptions import RayActorError, RayTaskError

        cpus, gpus, count = _worker_shape(ray.cluster_resources(), ray_options, len(jobs))
        worker_class = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(CaseWorker)
        model = ray.put(loaded)  # sent to each node once, not once per case
        workers = [worker_class.remote(model, options) for _ in range(count)]
        waiting, attempts = deque(jobs), {job.case.name: 0 for job in jobs}
        running: dict[Any, tuple[CaseJob, int]] = {}
        try:
            while waiting or running:
                busy = {slot for _, slot in running.values()}
                for slot in (s for s in range(count) if s not in busy):
                    if not waiting:
                        break
                    job = waiting.popleft()
                    if attempts[job.case.name] == 0:
                        on_start(job)
                    attempts[job.case.name] += 1
                    running[workers[slot].run.remote(job)] = (job, slot)
                (done,), _ = ray.wait(list(running), num_returns=1)
                job, slot = running.pop(done)
                try:
                    outcome = ray.get(done)
                except RayActorError as error:
                    workers[slot] = worker_class.remote(model, options)
                    tries = attempts[job.case.name]
                    logger.warning("case %s: its Ray worker died (try %d): %s", job.case.name, tries, error)
                    if tries < ray_options.max_attempts:
                        waiting.appendleft(job)
                        continue
                    message = (
                        f"its Ray worker died on each of {tries} tries (out of memory? see the Ray logs)"
                    )
                    outcome = CaseOutcome("failed", 0.0, error=message, error_type="WorkerDiedError")
                except RayTaskError as error:  # a bug in the worker outside the case's own guard
                    outcome = CaseOutcome(
                        "failed", 0.0, error=f"internal error: {error}", error_type="RayTaskError"
                    )
                if attempts[job.case.name] > 1:
                    redone = f"redone after its Ray worker died ({attempts[job.case.name]} tries)"
                    outcome = dataclasses.replace(outcome, warnings=(redone, *outcome.warnings))
                on_outcome(job, outcome)
        finally:
            for worker in workers:
                ray.kill(worker)


@contextlib.contextmanager
def _cluster(address: str | None) -> Iterator[Any]:
    """Ray, connected: to the cluster already joined in this process, else to ``address`` (None: a local
    cluster for this run, or the one RAY_ADDRESS names), shut down after the run only if started here."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _worker_shape(
    resources: dict[str, float], ray_options: RayOptions, jobs: int
) -> tuple[float, float, int]:
    """(CPUs, GPUs, workers): one per GPU where the cluster has GPUs, else as many as its CPUs hold; never
    more workers than the cluster holds at once or than there are cases."""
    cpus, total_cpus = ray_options.cpus_per_worker, resources.get("CPU", 0.0)
    total_gpus = resources.get("GPU", 0.0)
    gpus = ray_options.gpus_per_worker
    gpus = (1.0 if total_gpus >= 1 else 0.0) if gpus is None else gpus
    fits = int(min(total_cpus // cpus, total_gpus // gpus if gpus else float("inf")))
    if fits < 1:
        raise BatchInputError(
            f"the Ray cluster has {total_cpus:g} CPUs and {total_gpus:g} GPUs, less than one worker asks for "
            f"({cpus:g} CPUs, {gpus:g} GPUs); lower --ray-cpus-per-worker or --ray-gpus-per-worker"
        )
    if ray_options.workers is not None and ray_options.workers > fits:
        # a worker that cannot be placed would hold its cases forever (no autoscaler is assumed)
        logger.warning("the Ray cluster holds %d workers, not %d; using %d", fits, ray_options.workers, fits)
    count = min(ray_options.workers or fits, fits, jobs)
    return cpus, gpus, count
