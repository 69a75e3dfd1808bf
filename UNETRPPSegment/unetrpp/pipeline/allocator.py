"""Keep freed memory in the process heap, so every tile does not page-fault its buffers in again.

Each forward pass of the network allocates fresh feature maps of up to 32 MiB. glibc's malloc serves
allocations above its mmap threshold with a new ``mmap`` and gives them back with ``munmap`` on free,
so the next tile faults every page in again: 60k-199k page faults per synapse tile in bf16, and a
torch fp32 tile took 1.34 s instead of 0.70 s on a 2-core Xeon (``benchmarks/RESULTS.md``, issue 17).
Two ``mallopt`` settings keep that memory in the heap instead: no mmap for large blocks
(``M_MMAP_MAX`` 0) and no trimming of the heap's top (``M_TRIM_THRESHOLD`` 2^31 - 1). The arithmetic is
untouched (results are bitwise equal); the peak resident memory grew by about 0.03 GB.

They take effect at once in a running process (no restart, unlike ``GLIBC_TUNABLES``), apply to the
whole process and are glibc's only: on macOS, Windows and musl :func:`keep_heap` does nothing and says
why. ``UNETRPP_KEEP_HEAP=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

__all__ = ["KEEP_HEAP_ENVIRONMENT_VARIABLE", "keep_heap"]

logger = logging.getLogger(__name__)

KEEP_HEAP_ENVIRONMENT_VARIABLE = "UNETRPP_KEEP_HEAP"
# glibc's malloc.h: parameter numbers for mallopt().
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_LARGEST_TRIM_THRESHOLD = 2**31 - 1  # an int; glibc refuses nothing below it

_lock = threading.Lock()
_outcome: str | None = None


def keep_heap() -> str:
    """Set the two glibc malloc options once per process (idempotent, thread-safe).

    Returns:
        What happened, for logs and benchmarks: ``"applied"``, or why not (``"off: ..."``).
    """
    global _outcome
    with _lock:
        if _outcome is None:
            _outcome = _apply()
            logger.info("keep heap: %s", _outcome)
        return _outcome


def _apply() -> str:
    if os.environ.get(KEEP_HEAP_ENVIRONMENT_VARIABLE, "").strip() == "0":
        return f"off: {KEEP_HEAP_ENVIRONMENT_VARIABLE}=0"
    if not sys.platform.startswith("linux"):
        return f"off: mallopt is glibc's, not available on {sys.platform}"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl does not)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "off: the C library is not glibc"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _LARGEST_TRIM_THRESHOLD)):
        return "off: glibc refused mallopt"  # mallopt returns 0 on error
    return "applied"
