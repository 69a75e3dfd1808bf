"""Under CI, a skipped test fails unless the skip is a known platform limit.

A skip hides a missing part: an ``importorskip`` of slicer-core, a data file that is not there, ruff not
on the path. Locally that is a convenience; in CI (the environment variable ``CI`` set, as GitHub Actions
and ``.ci/run`` do) it would turn a broken build green, so there such a test fails and says why.

Allowed everywhere are only the skips no CI machine can avoid, named by their exact reason in
:data:`ALLOWED_SKIP_REASONS`: no CUDA device for a ``gpu`` test, a CUDA device present for a test of the
CPU-only behaviour, and a POSIX-only check on another OS. ``xfail`` is not a skip and is left alone.

Loaded from ``Testing/conftest.py`` (``pytest_plugins``); a plain module so that a test can load it
into an inner pytest run (``-p ci_skips``).
"""

from __future__ import annotations

import os

import pytest

ALLOWED_SKIP_REASONS = frozenset(
    {
        "needs a CUDA device",  # gpu-marked tests on a CPU-only machine
        "a CUDA device is present",  # CPU-only behaviour on a GPU machine
        "a CUDA device is present, so the request is valid",
        "POSIX file modes",  # skipif(os.name != "posix")
    }
)


def running_in_ci() -> bool:
    """``CI`` set to anything but empty, ``0`` or ``false``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def _skip_reason(report) -> str:
    longrepr = report.longrepr  # (path, line, "Skipped: reason") for a skip
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_unless_allowed(report) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not running_in_ci():
        return
    reason = _skip_reason(report)
    if reason in ALLOWED_SKIP_REASONS:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI: {reason}\n"
        "A skip in CI hides a missing part of the build (a package, a data file, a tool). Install or "
        "commit it; only the platform limits in Testing/ci_skips.py ALLOWED_SKIP_REASONS may skip."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_unless_allowed(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_unless_allowed(outcome.get_result())
