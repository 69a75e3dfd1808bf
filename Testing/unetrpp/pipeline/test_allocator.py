"""``keep_heap``: after it, a freed 64 MiB buffer stays in the process heap for the next one (glibc no
longer unmaps it, so the next tile does not fault its pages in again), measured in a fresh process from
its resident memory; ``UNETRPP_KEEP_HEAP=0`` leaves glibc's default, which gives it back at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")

_RESIDENT_AFTER_FREE = """
import json, os, numpy as np
from unetrpp.pipeline.allocator import keep_heap
outcome = keep_heap()
def resident():
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = resident()
buffer = np.ones(1 << 23)  # 64 MiB, every page touched
held = resident()
del buffer
print(json.dumps({"outcome": outcome, "held": held - before, "after_free": resident() - before}))
"""


def _run(keep: str) -> dict:
    environment = {**os.environ, "UNETRPP_KEEP_HEAP": keep}
    completed = subprocess.run(
        [sys.executable, "-c", _RESIDENT_AFTER_FREE],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    return json.loads(completed.stdout)


def test_a_freed_large_buffer_stays_in_the_heap_only_when_the_heap_is_kept():
    kept, default = _run("1"), _run("0")
    assert kept["outcome"] == "applied"
    assert default["outcome"] == "off: UNETRPP_KEEP_HEAP=0"
    size = 1 << 26
    assert kept["held"] > 0.9 * size and default["held"] > 0.9 * size
    assert default["after_free"] < 0.1 * size, default  # unmapped: the next buffer faults in again
    assert kept["after_free"] > 0.9 * size, kept  # kept for the next buffer
