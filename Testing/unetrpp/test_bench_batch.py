"""``benchmarks/bench_batch.py`` on a small cohort: both ways give the same labels for every case (the
script fails otherwise), and the table lands in RESULTS.md between its markers, the rest kept."""

from __future__ import annotations

import pytest
from benchmark_scripts import run_benchmark


@pytest.mark.slow  # five fresh interpreters and five small segmentations: ~40 s on 2 cores
def test_batch_benchmark_compares_equal_labels_and_writes_its_table(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Notes\n", encoding="utf-8")
    run_benchmark("bench_batch.py", "--synthetic", "1", "--results", str(results_md))
    text = results_md.read_text(encoding="utf-8")
    assert text.startswith("# Notes\n") and "Labels equal both ways for every case" in text
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| loop") or line.startswith("| `unetrpp batch`")
    ]
    assert len(rows) == 2
    loop_seconds, batch_seconds = (float(row.split("|")[2]) for row in rows)
    assert loop_seconds > 0 and batch_seconds > 0
