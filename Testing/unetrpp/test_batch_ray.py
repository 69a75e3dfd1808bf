"""``unetrpp batch --executor ray`` on a real local Ray cluster (no mocks): the outputs equal the default
executor's case for case, a resumed run skips the finished cases untouched, a worker killed by SIGKILL
mid-case has its case redone by a new worker with no temporary left, and without Ray the flag fails in
one line naming the extra."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dying_network import DiesOnceNetwork
from test_cli_segment import _synthetic_ct
from tiny_models import ct_plans, tiny_synapse_model
from unetrpp.batch.ray_options import RayOptions
from unetrpp.batch.runner import run_batch
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.pipeline.segment_types import SegmentOptions
from vendored_data import REPO_ROOT

ray = pytest.importorskip("ray")

TESTING = Path(__file__).resolve().parents[1]
_OPTIONS = SegmentOptions(device="cpu")
_ONE_CPU = RayOptions(cpus_per_worker=1)  # two workers on the two cores the cluster is given


@pytest.fixture(scope="module")
def cluster():
    """A local two-CPU Ray cluster for this module; its workers import the test helpers."""
    path = os.pathsep.join([str(TESTING), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return tiny_synapse_model(ct_plans((3.0, 1.5, 1.5)))


def _cohort(folder: Path) -> Path:
    folder.mkdir()
    sitk.WriteImage(_synthetic_ct(), str(folder / "case one.nii.gz"))
    sitk.WriteImage(_synthetic_ct(size_xyz=(40, 36, 10), spacing=(1.0, 1.1, 3.0)), str(folder / "ünï.nrrd"))
    sitk.WriteImage(_synthetic_ct(size_xyz=(24, 20, 8)), str(folder / "small.mha"))
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    return folder


def _local(source: Path, output: Path, model) -> object:
    """The default executor's run with one torch thread, as each one-CPU Ray worker has: the sums of a
    convolution are ordered by the thread count, and this random tiny network has near-tied logits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_batch(source, output, model, _OPTIONS)
    finally:
        torch.set_num_threads(threads)


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(read_seg_nrrd(p)[0]) for p in sorted(folder.glob("*.seg.nrrd"))}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.endswith(".seg.nrrd")}


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".unetrpp-" in p.name]


def test_ray_outputs_equal_the_local_executors_and_a_resumed_run_skips_finished_cases(
    cluster, model, tmp_path
):
    source = _cohort(tmp_path / "in")
    local = _local(source, tmp_path / "local", model)
    on_ray = run_batch(source, tmp_path / "ray", model, _OPTIONS, executor="ray", ray_options=_ONE_CPU)

    assert [(r.case, r.status) for r in on_ray.cases] == [(r.case, r.status) for r in local.cases]
    assert {r.case: r.status for r in on_ray.cases} == {
        "broken": "failed",
        "case one": "done",
        "small": "done",
        "ünï": "done",
    }
    assert on_ray.failed[0].error == local.failed[0].error
    assert [r.structures for r in on_ray.cases] == [r.structures for r in local.cases]
    expected, got = _labels(tmp_path / "local"), _labels(tmp_path / "ray")
    assert sorted(got) == sorted(expected) == ["case one.seg.nrrd", "small.seg.nrrd", "ünï.seg.nrrd"]
    for name, labels in expected.items():
        np.testing.assert_array_equal(got[name], labels, err_msg=name)
    assert _no_temporaries(tmp_path / "ray")

    before = _mtimes(tmp_path / "ray")
    resumed = run_batch(source, tmp_path / "ray", model, _OPTIONS, executor="ray", ray_options=_ONE_CPU)
    assert {r.case: r.status for r in resumed.cases} == {
        "broken": "failed",  # a failed case is tried again, and fails again
        "case one": "skipped",
        "small": "skipped",
        "ünï": "skipped",
    }
    assert _mtimes(tmp_path / "ray") == before


def test_a_worker_killed_mid_case_has_its_case_redone_by_a_new_worker(cluster, model, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(_synthetic_ct(), str(source / "only.nii.gz"))
    already_died = tmp_path / "already died"
    already_died.touch()  # the same wrapped network, never dying: the reference for the redone case
    wrapped = dataclasses.replace(model, network=DiesOnceNetwork(model.network, already_died))
    reference = _local(source, tmp_path / "local", wrapped)
    marker = tmp_path / "died"
    dying = dataclasses.replace(model, network=DiesOnceNetwork(model.network, marker))

    report = run_batch(source, tmp_path / "ray", dying, _OPTIONS, executor="ray", ray_options=_ONE_CPU)

    assert marker.exists(), "no worker was killed: the test did not test anything"
    (row,) = report.cases
    assert row.status == "done", row.error
    assert any("redone after its Ray worker died (2 tries)" in w for w in row.warnings), row.warnings
    assert row.structures == reference.cases[0].structures
    np.testing.assert_array_equal(
        _labels(tmp_path / "ray")["only.seg.nrrd"], _labels(tmp_path / "local")["only.seg.nrrd"]
    )
    assert _no_temporaries(tmp_path / "ray")


def test_a_case_whose_worker_always_dies_fails_alone_after_its_tries(cluster, model, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    sitk.WriteImage(_synthetic_ct(), str(source / "only.nii.gz"))
    dying = dataclasses.replace(model, network=DiesOnceNetwork(model.network, tmp_path / "died"))
    options = dataclasses.replace(_ONE_CPU, max_attempts=1)

    report = run_batch(source, tmp_path / "ray", dying, _OPTIONS, executor="ray", ray_options=options)

    (row,) = report.cases
    assert (row.status, row.error_type) == ("failed", "WorkerDiedError")
    assert row.error == "its Ray worker died on each of 1 tries (out of memory? see the Ray logs)"
    assert not list((tmp_path / "ray").glob("*.seg.nrrd"))


def test_without_ray_the_ray_executor_fails_in_one_line_naming_the_extra(tmp_path):
    hide_ray = (
        "import sys; sys.modules['ray'] = None; from unetrpp.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", hide_ray, "batch", str(tmp_path), str(tmp_path / "out")]
    command += ["--model", "synapse", "--executor", "ray"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 2
    assert completed.stderr.strip() == 'unetrpp: error: --executor ray needs Ray: pip install "unetrpp[ray]"'


def test_the_cli_starts_a_local_cluster_for_the_run_and_writes_every_case(tmp_path):
    """``--executor ray`` with no address: a cluster of this machine for the run, the report as usual."""
    from tiny_models import save_tiny_synapse

    model_file = save_tiny_synapse(tmp_path / "tiny.unetrpp", ct_plans((3.0, 1.5, 1.5)))
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a", "b"):
        sitk.WriteImage(_synthetic_ct(size_xyz=(24, 20, 8)), str(source / f"{name}.nii.gz"))
    command = [sys.executable, "-m", "unetrpp", "batch", str(source), str(tmp_path / "out")]
    command += [
        "--model",
        str(model_file),
        "--device",
        "cpu",
        "--executor",
        "ray",
        "--ray-cpus-per-worker",
        "1",
    ]
    environment = {**os.environ, "RAY_ADDRESS": ""}  # not the module's cluster: one of its own
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1].startswith("2 done, 0 skipped, 0 failed; report: ")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.seg.nrrd")) == ["a.seg.nrrd", "b.seg.nrrd"]


def test_ray_options_are_checked_before_any_work(tmp_path, capsys):
    """A --ray-* flag without --executor ray, or an impossible worker count, is one line, exit 2."""
    from unetrpp.cli import main

    base = ["batch", str(tmp_path), str(tmp_path / "out"), "--model", "synapse"]
    cases = {
        (
            "--ray-workers",
            "2",
        ): "unetrpp: error: --ray-workers applies to --executor ray only; add --executor ray or drop it",
        ("--executor", "ray", "--ray-workers", "0"): "unetrpp: error: Ray workers must be at least 1, got 0",
        ("--executor", "ray", "--ray-cpus-per-worker", "0"): "unetrpp: error: CPUs per Ray worker must be "
        "positive, got 0",
    }
    for flags, message in cases.items():
        assert main([*base, *flags]) == 2, flags
        assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()
