"""Cohorts: segment a folder or CSV of cases with one loaded model, resumable, with a report.

``unetrpp.batch.run_batch`` (also ``unetrpp.run_batch``) is the library call behind ``unetrpp batch``
(:mod:`unetrpp.cli.batch`); :mod:`unetrpp.batch.cases` finds the cases, :mod:`unetrpp.batch.report`
records them, :mod:`unetrpp.batch.events` is what a listener receives.
"""

from __future__ import annotations

from unetrpp.batch.cases import Case, find_cases
from unetrpp.batch.report import CaseReport
from unetrpp.batch.runner import BatchReport, run_batch

__all__ = ["BatchReport", "Case", "CaseReport", "find_cases", "run_batch"]
