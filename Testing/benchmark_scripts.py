"""Run a script of ``benchmarks/`` as a user would, for the tests that check what it writes."""

from __future__ import annotations

import subprocess
import sys

from vendored_data import REPO_ROOT

# The slowest, bench_segment.py --quick, took 97-266 s on 2 cores (the most when the machine was busy);
# pytest's own limit per test is 900 s.
TIMEOUT_SECONDS = 600


def run_benchmark(name: str, *arguments: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<name> ARGUMENTS`` in a fresh interpreter; fails the test unless it exits 0."""
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / name), *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed
