"""The CI rule of ``ci_skips``: a skip fails in CI unless it is an allowed platform limit."""

from __future__ import annotations

import pytest
from ci_skips import ALLOWED_SKIP_REASONS

INNER_TESTS = """
import pytest

@pytest.fixture
def missing_package():
    pytest.importorskip("no_such_package_unetrpp_ci", reason="the package is not installed")

def test_skips_for_a_missing_file():
    pytest.skip("shared contract data.tsv is not present")

def test_skips_in_a_fixture(missing_package):
    pass

@pytest.mark.skipif(True, reason="POSIX file modes")
def test_skips_on_another_platform():
    pass

def test_needs_cuda():
    pytest.skip("needs a CUDA device")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester.runpytest("-p", "ci_skips", "-p", "no:cacheprovider", "-rA")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_a_skip_for_a_missing_part_fails_and_a_platform_skip_stays_skipped(pytester, monkeypatch, ci):
    result = _run(pytester, monkeypatch, ci)
    # call-phase skip -> failed; fixture (setup-phase) importorskip -> error
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=2, xfailed=1)
    for line in (
        "FAILED test_inner.py::test_skips_for_a_missing_file*",
        "ERROR test_inner.py::test_skips_in_a_fixture*",
        "SKIPPED*POSIX file modes",
        "SKIPPED*needs a CUDA device",
    ):
        result.stdout.fnmatch_lines([line])
    assert "skipped in CI: shared contract data.tsv is not present" in result.stdout.str()
    assert "skipped in CI: the package is not installed" in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_outside_ci_every_skip_stays_a_skip(pytester, monkeypatch, ci):
    result = _run(pytester, monkeypatch, ci)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_in_ci_a_module_skipped_at_collection_fails(pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(
        test_module_skip="""
        import pytest
        slicer = pytest.importorskip("no_such_package_unetrpp_ci", reason="slicer-core is not installed")

        def test_never_collected():
            pass
        """
    )
    result = pytester.runpytest("-p", "ci_skips", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "skipped in CI: slicer-core is not installed" in result.stdout.str()
    assert result.ret != pytest.ExitCode.OK


def test_the_allowed_reasons_are_the_ones_the_suite_uses():
    # Each allowed reason must be spelled exactly as a skip in the suite spells it; a reworded skip
    # would otherwise fail in CI (and an unused entry would be a loophole).
    from pathlib import Path

    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for path in Path(__file__).resolve().parent.rglob("test_*.py")
        if path.name != Path(__file__).name
    )
    for reason in ALLOWED_SKIP_REASONS:
        assert f'"{reason}"' in sources, reason
