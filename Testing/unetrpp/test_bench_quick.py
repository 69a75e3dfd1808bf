"""``benchmarks/bench_segment.py --quick`` runs end to end and reports every configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from vendored_data import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_segment.py"


@pytest.mark.slow  # four fresh interpreters importing torch and MONAI: ~35 s idle, more on a busy CPU
def test_quick_benchmark_writes_tables_and_json_for_every_configuration(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Hand-written notes\n\nkept across runs\n")
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--out-dir",
            str(tmp_path / "out"),
            "--results",
            str(results_md),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]

    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(report["runs"]) == {"reference", "default", "fp32", "fast"}
    for run in report["runs"].values():
        assert run["tiles_run"] >= 1
        assert run["stage_seconds"]["inference"] > 0
        assert run["peak_rss_bytes"] > run["baseline_rss_bytes"] > 0
    assert report["matmul_gflops"]["fp32"] > 0 and report["matmul_gflops"]["bf16"] > 0
    assert report["complexity"]["bench_network"]["multiply_adds"] > 0
    for config in ("default", "fp32", "fast"):
        agreement = report["agreement"][config]
        assert 0.0 <= agreement["agreement"] <= 1.0
        assert all(0.0 <= d <= 1.0 for d in agreement["dice"].values())
        trained = report["trained"]["configs"][config]
        assert 0.0 <= trained["min_agreement"] <= 1.0
        assert set(trained["min_dice"]) and all(0.0 <= d <= 1.0 for d in trained["min_dice"].values())
    assert report["trained"]["configs"]["reference"]["truth_dice_mean"] > 0.5  # the demo model segments

    text = results_md.read_text()
    assert text.startswith("# Hand-written notes\n\nkept across runs\n")
    assert "| reference (" in text and "| default (" in text and "| fp32 (" in text and "| fast (" in text
    assert "Agreement with trained weights" in text
    assert "| reference (" in completed.stdout
