"""``benchmarks/bench_batch.py`` on a small cohort: every way (a CLI loop, a Python loop, the batch, the
batch on a local Ray cluster) gives the same labels for every case (the script fails otherwise), and the
table lands in RESULTS.md between its markers, the rest kept."""

from __future__ import annotations

import pytest
from benchmark_scripts import run_benchmark


@pytest.mark.slow  # eight fresh interpreters, a Ray cluster, 16 small segmentations: ~60 s on 2 cores
def test_batch_benchmark_compares_equal_labels_and_writes_its_table(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Notes\n", encoding="utf-8")
    run_benchmark("bench_batch.py", "--synthetic", "1", "--results", str(results_md))
    text = results_md.read_text(encoding="utf-8")
    assert text.startswith("# Notes\n") and "Labels equal every way for every case" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2:3] in ("l", "P", "`")]
    assert len(rows) == 4  # the four ways
    for row in rows:
        seconds, peak_gb = float(row.split("|")[2]), float(row.split("|")[5])
        assert seconds > 0 and 0.1 < peak_gb < 24, row
    assert "Overlapping the stages: " in text
