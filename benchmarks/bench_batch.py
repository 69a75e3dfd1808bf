"""Cases per hour: ``unetrpp batch`` over a cohort against a loop of ``unetrpp segment`` calls.

The cohort is small real CTs from the test data (the 3-slice chest DICOM, the abdomen DICOM and its
3 mm NIfTI crop) and synthetic abdomen phantoms of the ``demo`` model (held-out seeds, tightly framed),
all segmented with the bundled ``demo`` model on the CPU. Every way runs in the same run, one after the
other, each in its own process (its peak RSS is that process's):

* the loop: one ``unetrpp segment`` process per case (the model loaded each time, as shell loops over
  TotalSegmentator-style tools do);
* a Python loop over ``unetrpp.segment`` with the model loaded once, one stage after another: what the
  batch's overlapping of reading and writing with inference is measured against;
* ``unetrpp batch`` (the default executor, stages overlapped);
* ``unetrpp batch --executor ray`` on a local Ray cluster started for the run, one worker.

All include interpreter start-up. The labels of every case must be equal between the ways, or the run
fails. A table is printed and written into ``benchmarks/RESULTS.md`` between this script's markers::

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


# Runs a command as its only child and prints that child's peak RSS (bytes; Linux reports KiB).
_PEAK_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
)
# The one-stage-after-another baseline: the model loaded once, then unetrpp.segment per case.
_PYTHON_LOOP = (
    "import sys; from pathlib import Path; import unetrpp; from unetrpp.models.loader import load_model; "
    "model = load_model('demo'); options = unetrpp.SegmentOptions(device='cpu'); "
    "[unetrpp.segment(case, model, Path(sys.argv[1]) / name, options) "
    "for case, name in zip(sys.argv[2::2], sys.argv[3::2])]"
)


def _timed(command: list[str]) -> tuple[float, int]:
    """Run ``command`` in a fresh interpreter; (its wall seconds, its peak RSS in bytes)."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_CHILD, *command],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return time.perf_counter() - started, int(completed.stdout.split()[-1])


def _unetrpp(*arguments: str) -> tuple[float, int]:
    """The CLI with the demo model on the CPU, quiet; (wall seconds, peak RSS)."""
    command = [sys.executable, "-m", "unetrpp", *arguments, "--model", "demo", "--device", "cpu"]
    return _timed([*command, "--progress", "none"])


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nrrd"):
        name = name.removesuffix(suffix)
    return name


def measure(synthetic: int, work: Path) -> dict:
    import SimpleITK as sitk

    load_before = os.getloadavg()[0]
    cases = make_cohort(work / "cohort", synthetic)
    names = [f"{_case_name(c)}.seg.nrrd" for c in cases]
    folders = {way: work / way for way in WAYS}
    for folder in folders.values():
        folder.mkdir()
    runs = [_unetrpp("segment", str(c), str(folders["loop"] / n)) for c, n in zip(cases, names)]
    figures = {"loop": (sum(r[0] for r in runs), max(r[1] for r in runs))}
    pairs = [str(item) for case, name in zip(cases, names) for item in (case, name)]
    figures["python_loop"] = _timed([sys.executable, "-c", _PYTHON_LOOP, str(folders["python_loop"]), *pairs])
    figures["batch"] = _unetrpp("batch", str(work / "cohort"), str(folders["batch"]))
    ray = ("--executor", "ray", "--ray-cpus-per-worker", str(os.cpu_count()))
    figures["ray"] = _unetrpp("batch", str(work / "cohort"), str(folders["ray"]), *ray)
    for name in names:  # the same labels every way, or the comparison means nothing
        loop = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["loop"] / name)))
        for way in WAYS[1:]:
            if not np.array_equal(loop, sitk.GetArrayFromImage(sitk.ReadImage(str(folders[way] / name)))):
                raise SystemExit(f"labels differ between the loop and {way} for {name}")
    return {
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_description(),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "cases": len(cases),
        "real": len(REAL_CASES),
        "seconds": {way: figures[way][0] for way in WAYS},
        "peak_rss_bytes": {way: figures[way][1] for way in WAYS},
    }


WAYS = ("loop", "python_loop", "batch", "ray")
_WAY_NAMES = {
    "loop": "loop of `unetrpp segment` (model loaded per case)",
    "python_loop": "Python loop over `unetrpp.segment`, model loaded once, stages in turn",
    "batch": "`unetrpp batch` (stages overlapped)",
    "ray": "`unetrpp batch --executor ray`, local cluster, 1 worker (RSS: the driver only)",
}


def format_report(report: dict) -> str:
    machine, cases = report["machine"], report["cases"]
    seconds, peaks = report["seconds"], report["peak_rss_bytes"]
    rows = [
        f"| {_WAY_NAMES[way]} | {seconds[way]:.1f} | {3600 * cases / seconds[way]:.0f} | "
        f"{seconds['loop'] / seconds[way]:.2f}x | {peaks[way] / 1e9:.2f} |"
        for way in WAYS
    ]
    return "\n".join(
        [
            f"Run {report['started_utc']} UTC: {cases} cases ({report['real']} real CTs from the test data, "
            f"{cases - report['real']} held-out demo phantoms), the `demo` model on the CPU. Machine: "
            f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']}; "
            f"1-minute load average {report['load_average']['before']:.1f} before, "
            f"{report['load_average']['after']:.1f} after. Labels equal every way for every case.",
            "",
            "| way | wall seconds | cases per hour | vs the loop | peak RSS GB |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            f"Overlapping the stages: {seconds['python_loop'] / seconds['batch']:.2f}x the throughput of "
            "the same model loaded once with the stages in turn, at "
            f"{peaks['batch'] / peaks['python_loop']:.2f}x its peak RSS.",
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
