"""Running out of host memory as one line: how much was in use, what failed, and what lowers the need.

Python's ``MemoryError`` often has an empty message (an allocation inside an import) or one about an
array shape, and torch's CPU allocator raises a ``RuntimeError`` instead; either way a user sees a
traceback that does not say what to do. :func:`out_of_memory_message` turns any of them into one line
with the measured numbers (peak memory of this process, the failed request, the limit set by
``ulimit -v`` when there is one) and the options that lower the peak.
"""

from __future__ import annotations

import re
import sys

__all__ = ["is_out_of_memory", "out_of_memory_message"]

# What lowers the peak: the float16 logit accumulator halves the largest buffer, one tile per batch
# keeps only one tile's activations, and fewer classes or a smaller input shrink the rest.
LOWER_MEMORY_HINT = (
    "lower the need with --accumulation float16 and --batch-size 1, crop the input, or free memory "
    "(close other programs, raise the limit)"
)
_TORCH_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
_NUMPY_ALLOCATION = re.compile(r"Unable to allocate ([\d.]+ \w+) for an array")


def is_out_of_memory(error: BaseException) -> bool:
    """True for Python's MemoryError and torch's CPU allocator failure (a RuntimeError)."""
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and _TORCH_ALLOCATION.search(str(error)) is not None
    )


def out_of_memory_message(stage: str, error: BaseException) -> str:
    """One line for an out-of-memory ``error`` raised during ``stage``."""
    text = str(error)
    torch_request = _TORCH_ALLOCATION.search(text)
    numpy_request = _NUMPY_ALLOCATION.search(text)
    if torch_request:
        request = f"; a further {_gigabytes(int(torch_request.group(1)))} could not be allocated"
    elif numpy_request:
        request = f"; a further {numpy_request.group(1)} could not be allocated"
    else:
        request = ""
    limit, peak = _limit_and_peak_bytes()
    limited = f" under a memory limit of {_gigabytes(limit)} (ulimit -v)" if limit else ""
    needed = f": this process needed more than its peak of {_gigabytes(peak)}" if peak else ""
    return f"out of memory during {stage}{limited}{needed}{request}; {LOWER_MEMORY_HINT}"


def _limit_and_peak_bytes() -> tuple[int | None, int | None]:
    """(address-space limit or None, peak resident memory) of this process; (None, None) on Windows."""
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return None, None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB, macOS bytes
    return (None if limit == resource.RLIM_INFINITY else limit), peak


def _gigabytes(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.0f} MB"
