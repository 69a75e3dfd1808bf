"""``benchmarks/bench_backends.py --quick``: every backend and precision is timed on a tile and compared
with the exact path on the trained demo model (one held-out phantom in a field of air), and the table
lands in RESULTS.md between its markers."""

from __future__ import annotations

import pytest
from benchmark_scripts import run_benchmark
from unetrpp.train.phantoms import PHANTOM_LABELS

STRUCTURES = {name for _, name in PHANTOM_LABELS}


@pytest.mark.slow  # two OpenVINO conversions and five demo segmentations: ~40 s on 2 cores
def test_backend_benchmark_writes_speed_and_agreement_for_every_way(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Notes\n", encoding="utf-8")
    run_benchmark("bench_backends.py", "--quick", "--results", str(results_md))
    text = results_md.read_text(encoding="utf-8")
    rows = [line.split("|") for line in text.splitlines() if line.startswith(("| torch", "| openvino"))]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
    ]
    for row in rows:
        assert float(row[3]) > 0
        assert float(row[6].rstrip("% ")) >= 99.9 and float(row[7].split()[0]) >= 0.99, row  # the bar
        assert row[7].strip().split(" ", 1)[1].strip("()") in STRUCTURES, row  # the worst structure is named
