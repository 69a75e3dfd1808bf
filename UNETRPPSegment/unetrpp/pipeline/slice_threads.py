"""Per-slice work of preprocessing spread over the threads the process computes with.

SciPy's ``ndimage`` (under skimage's ``resize`` too) releases the GIL in its C loops, so independent
slices run truly in parallel on threads, with bitwise the same result as one after another. On a
512x512x150 CT with the synapse plans, ``preprocess()`` took 3.72 s on one thread and 1.85 s on two, and
``body_mask()`` 0.96 and 0.68 s (2-core AMD EPYC VM, ``benchmarks/RESULTS.md``, 2026-12-04).

The thread count is torch's (``OMP_NUM_THREADS`` or the cores), so a limit a user or a cluster set for
inference holds for preprocessing too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["for_each_slice"]


def for_each_slice(work: Callable[[int], None], indices: Sequence[int]) -> None:
    """Call ``work(index)`` for every index, on up to torch's thread count of threads. ``work`` must
    write only its own slice. The first error raised by any call is raised here."""
    import torch  # already loaded wherever the pipeline runs; not needed to import this module

    workers = min(torch.get_num_threads(), len(indices))
    if workers <= 1:
        for index in indices:
            work(index)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="unetrpp-slices") as pool:
        for _ in pool.map(work, indices):  # consuming the results re-raises a call's error
            pass
