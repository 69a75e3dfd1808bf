"""Cases per hour: ``unetrpp batch`` over a cohort against a loop of ``unetrpp segment`` calls.

The cohort is small real CTs from the test data (the 3-slice chest DICOM, the abdomen DICOM and its
3 mm NIfTI crop) and synthetic abdomen phantoms of the ``demo`` model (held-out seeds, tightly framed),
all segmented with the bundled ``demo`` model on the CPU. Both ways run in the same process tree and
the same run, one after the other: the loop starts one ``unetrpp segment`` process per case (model
loaded each time, as shell loops over TotalSegmentator-style tools do); the batch is one ``unetrpp batch``
process (model loaded once). Both include interpreter start-up. The labels of every case must be equal
between the two ways, or the run fails. A table is printed and written into ``benchmarks/RESULTS.md``
between this script's markers::

    python benchmarks/bench_batch.py                  # 3 real + 9 synthetic cases
    python benchmarks/bench_batch.py --synthetic 1 --results /tmp/RESULTS.md   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import TRAINED_SEEDS, machine_description, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_CASES = {  # case name -> path under Testing/data/real_inputs
    "chest_3slice": "dcmqi_ct3slice/dicom",
    "abdomen_dicom": "totalseg_example_ct/example_ct_dicom",
    "abdomen_3mm.nii.gz": "totalseg_example_ct/example_ct.nii.gz",
}
GENERATED_START = "<!-- bench_batch.py: generated section start -->"
GENERATED_END = "<!-- bench_batch.py: generated section end -->"


def make_cohort(folder: Path, synthetic: int) -> list[Path]:
    """Copy the real cases and write ``synthetic`` held-out phantoms; return the case paths."""
    import SimpleITK as sitk
    from unetrpp.train.phantoms import generate_phantom

    folder.mkdir(parents=True)
    cases = []
    for name, relative in REAL_CASES.items():
        source, target = REPO / "Testing" / "data" / "real_inputs" / relative, folder / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        cases.append(target)
    seeds = [TRAINED_SEEDS[0] + n for n in range(synthetic)]  # 1000 and up: never trained on
    for seed in seeds:
        path = folder / f"phantom_{seed}.nrrd"
        sitk.WriteImage(generate_phantom(seed).image, str(path), useCompression=True)
        cases.append(path)
    return cases


def _unetrpp(*arguments: str) -> float:
    """Run the CLI in a fresh interpreter; its wall seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "unetrpp", *arguments, "--model", "demo", "--device", "cpu"]
    subprocess.run([*command, "--progress", "none"], check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - started


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nrrd"):
        name = name.removesuffix(suffix)
    return name


def measure(synthetic: int, work: Path) -> dict:
    import SimpleITK as sitk

    load_before = os.getloadavg()[0]
    cases = make_cohort(work / "cohort", synthetic)
    loop_dir, batch_dir = work / "loop", work / "batch"
    loop_dir.mkdir()
    loop_seconds = sum(
        _unetrpp("segment", str(c), str(loop_dir / f"{_case_name(c)}.seg.nrrd")) for c in cases
    )
    batch_seconds = _unetrpp("batch", str(work / "cohort"), str(batch_dir))
    for case in cases:  # the same labels both ways, or the comparison means nothing
        name = f"{_case_name(case)}.seg.nrrd"
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(d / name))) for d in (loop_dir, batch_dir))
        if not np.array_equal(a, b):
            raise SystemExit(f"labels differ between the loop and the batch for {name}")
    return {
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_description(),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "cases": len(cases),
        "real": len(REAL_CASES),
        "loop_seconds": loop_seconds,
        "batch_seconds": batch_seconds,
    }


def format_report(report: dict) -> str:
    machine, cases = report["machine"], report["cases"]
    loop, batch = report["loop_seconds"], report["batch_seconds"]
    return "\n".join(
        [
            f"Run {report['started_utc']} UTC: {cases} cases ({report['real']} real CTs from the test data, "
            f"{cases - report['real']} held-out demo phantoms), the `demo` model on the CPU. Machine: "
            f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']}; "
            f"1-minute load average {report['load_average']['before']:.1f} before, "
            f"{report['load_average']['after']:.1f} after. Labels equal both ways for every case.",
            "",
            "| way | wall seconds | cases per hour | vs the loop |",
            "|---|---:|---:|---:|",
            f"| loop of `unetrpp segment` | {loop:.1f} | {3600 * cases / loop:.0f} | 1.00x |",
            f"| `unetrpp batch` | {batch:.1f} | {3600 * cases / batch:.0f} | {loop / batch:.2f}x |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=9, help="held-out phantoms besides the real CTs")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="unetrpp-batch-bench-") as work:
        report = measure(args.synthetic, Path(work))
    generated = format_report(report)
    print(generated)
    write_results(args.results, generated, GENERATED_START, GENERATED_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
