"""Nothing lost, nothing silently wrong on the output side (reliability review F-01, F-02, F-10, F-17, F-18,
F-21): outputs that are one file with another output or an input are refused before any work; a write the
disk cannot hold is a one-line error for every output kind, never a truncated file; signals and kills
leave no temporary file for long; the ``result`` event comes after every output.

The full disk is real: a child process runs under ``RLIMIT_FSIZE`` (``resource.setrlimit``), so every
write past the limit fails in the kernel with EFBIG ("File too large"), exactly where ENOSPC would on a
full disk; that needs no root and no mount.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from unetrpp.cli import main
from vendored_data import data_path

FAST = ["--model", "demo", "--device", "cpu", "--overlap", "0", "--precision", "fp32"]
LIMIT = 16384  # bytes per file in the limited children: a .seg.nrrd of the CT block fits, its .nii does not


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """40 x 40 x 20 voxels (3 mm) of the real example CT: one tile of the bundled demo model."""
    image = sitk.ReadImage(str(data_path("real_inputs", "totalseg_example_ct", "example_ct.nii.gz")))
    path = tmp_path_factory.mktemp("input") / "ct.nrrd"
    sitk.WriteImage(image[80:120, 0:40, 50:70], str(path))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _limited(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# F-01 -------------------------------------------------------------------------------------------------


def _clash(case: str, folder: Path, ct: Path) -> tuple[list[str], list[str]]:
    """(segment arguments, fragments the one-line error must hold) for one way to name a file twice."""
    source = folder / "ct.nrrd"
    source.write_bytes(ct.read_bytes())
    out = folder / "out.seg.nrrd"
    if case == "hard-link-to-input":
        os.link(source, folder / "copy.nrrd")
    if case == "symlink-to-input":
        (folder / "link.json").symlink_to(source)
    if case == "folder-symlink":
        (folder / "alias").symlink_to(folder)
    arguments, fragments = {
        "summary-is-output": (["--summary", str(out)], ["OUTPUT", "--summary", "are the same file"]),
        "labelmap-is-output": (["--labelmap", str(out)], ["OUTPUT", "--labelmap", "are the same file"]),
        "labelmap-is-summary": (
            ["--labelmap", str(folder / "x.nrrd"), "--summary", str(folder / "x.nrrd")],
            ["--labelmap", "--summary", "are the same file"],
        ),
        "case-only": (["--summary", str(folder / "OUT.SEG.NRRD")], ["OUTPUT", "--summary", "same file"]),
        "folder-symlink": (
            ["--labelmap", str(folder / "alias" / "lab.nii.gz"), "--summary", str(folder / "lab.nii.gz")],
            ["--labelmap", "--summary", "are the same file"],
        ),
        "labelmap-is-input": (
            ["--labelmap", str(source), "--overwrite"],
            ["--labelmap", "the same file as the input", "never writes over its inputs"],
        ),
        "symlink-to-input": (
            ["--summary", str(folder / "link.json"), "--overwrite"],
            ["--summary", "the same file as the input"],
        ),
        "hard-link-to-input": (
            ["--labelmap", str(folder / "copy.nrrd"), "--overwrite"],
            ["--labelmap", "the same file as the input"],
        ),
    }[case]
    return ["segment", str(source), str(out), *FAST, "--progress", "json", *arguments], fragments


@pytest.mark.parametrize(
    "case",
    [
        "summary-is-output",
        "labelmap-is-output",
        "labelmap-is-summary",
        "case-only",
        "folder-symlink",
        "labelmap-is-input",
        "symlink-to-input",
        "hard-link-to-input",
    ],
)
def test_outputs_that_are_one_file_are_refused_before_any_work(tmp_path, ct, capsys, case):
    argv, fragments = _clash(case, tmp_path, ct)
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["error"]  # no stage began: refused before any work
    assert all(fragment in events[0]["message"] for fragment in fragments), events[0]["message"]
    assert _snapshot(tmp_path) == before


def test_the_library_refuses_an_output_that_is_its_input(tmp_path):
    from unetrpp import segment
    from unetrpp.errors import UnetrppError

    source = tmp_path / "truth.seg.nrrd"
    source.write_bytes(b"a segmentation someone made by hand")
    with pytest.raises(UnetrppError, match="the same file as the input"):
        segment(source, "demo", source, overwrite=True)
    assert source.read_bytes() == b"a segmentation someone made by hand"


# F-02, F-10 --------------------------------------------------------------------------------------------

_WRITE_UNDER_A_LIMIT = """
import json, resource, sys
import numpy as np, SimpleITK as sitk
from pathlib import Path
from unetrpp.atomic import write_bytes_atomically, write_image_atomically

folder = Path(sys.argv[1])
labels = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 14, (40, 64, 64)).astype(np.uint8))
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
outcome = {{}}
for name in ("lab.nii.gz", "lab.nii", "lab.nrrd", "lab.mha", "summary.json"):
    try:
        if name.endswith(".json"):
            write_bytes_atomically(folder / name, json.dumps(list(range(20000))).encode())
        else:
            write_image_atomically(labels, folder / name)
        outcome[name] = "written"
    except Exception as error:
        outcome[name] = f"{{type(error).__name__}}: {{error}}"
print(json.dumps(outcome))
"""


def test_every_output_kind_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path):
    names = ("lab.nii.gz", "lab.nii", "lab.nrrd", "lab.mha", "summary.json")
    for name in names:
        (tmp_path / name).write_bytes(b"the previous result")
    script = _WRITE_UNDER_A_LIMIT.format(limit=LIMIT)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    outcome = json.loads(completed.stdout)
    for name in names:
        assert outcome[name] == f"OutputWriteError: cannot write {tmp_path / name}: File too large", name
        assert (tmp_path / name).read_bytes() == b"the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary left


def test_a_label_map_the_disk_cannot_hold_fails_the_run_with_no_result_event(tmp_path, ct):
    command = [sys.executable, "-m", "unetrpp", "segment", str(ct), str(tmp_path / "out.seg.nrrd"), *FAST]
    command += ["--labelmap", str(tmp_path / "lab.nii"), "--progress", "json"]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300, preexec_fn=_limited(LIMIT), cwd=tmp_path
    )
    assert completed.returncode == 2, completed.stderr
    events = [json.loads(line) for line in completed.stdout.splitlines()]
    assert events[-1] == {
        "event": "error",
        "message": f"cannot write {tmp_path / 'lab.nii'}: File too large",
        "error_type": "OutputWriteError",
    }
    assert "result" not in [e["event"] for e in events]  # F-18: no success before every output exists
    assert completed.stderr.strip().splitlines()[-1] == f"unetrpp: error: {events[-1]['message']}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.seg.nrrd"]


# F-18 --------------------------------------------------------------------------------------------------


class _Witness(io.StringIO):
    """stdout that notes, for every line written, which of ``paths`` exist at that moment."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths, self.seen = paths, []

    def write(self, text: str) -> int:
        self.seen.append((text, [p.exists() for p in self.paths]))
        return super().write(text)


def test_the_result_event_comes_after_the_label_map_and_summary_exist(tmp_path, ct, monkeypatch):
    outputs = [tmp_path / "out.seg.nrrd", tmp_path / "lab.nii.gz", tmp_path / "summary.json"]
    witness = _Witness(outputs)
    monkeypatch.setattr(sys, "stdout", witness)
    argv = ["segment", str(ct), str(outputs[0]), *FAST, "--progress", "json"]
    assert main([*argv, "--labelmap", str(outputs[1]), "--summary", str(outputs[2])]) == 0
    results = [exist for text, exist in witness.seen if '"event": "result"' in text]
    assert results == [[True, True, True]]
    assert json.loads(witness.getvalue().splitlines()[-1])["event"] == "result"


# F-17 --------------------------------------------------------------------------------------------------

_HOLD_A_TEMPORARY = """
import os, signal, sys
from pathlib import Path
from unetrpp.atomic import atomic_output

with atomic_output(Path(sys.argv[1]) / sys.argv[2]) as temporary:
    temporary.write_bytes(b"half of a result")
    print(temporary.name, flush=True)
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()  # alive until told
"""


def test_a_write_after_a_killed_run_removes_its_temporary_but_not_a_live_ones(tmp_path):
    def holder(name: str, mode: str) -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD_A_TEMPORARY, str(tmp_path), name, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return process, process.stdout.readline().strip()

    alive, live = holder("other.json", "wait")
    try:
        killed, stale = holder("lab.nii.gz", "kill")
        assert killed.wait(timeout=60) == -signal.SIGKILL
        assert {stale, live} <= {p.name for p in tmp_path.iterdir()}
        from unetrpp.atomic import write_bytes_atomically

        write_bytes_atomically(tmp_path / "summary.json", b"{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, "summary.json"])
    finally:
        alive.communicate("\n", timeout=60)
    assert alive.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "summary.json"]


def test_sigterm_ends_a_run_like_ctrl_c_and_keeps_the_old_output(tmp_path, ct):
    output = tmp_path / "out.seg.nrrd"
    output.write_bytes(b"the previous result")
    command = [sys.executable, "-m", "unetrpp", "segment", str(ct), str(output), *FAST, "--overwrite"]
    process = subprocess.Popen(
        [*command, "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:
            if json.loads(line)["event"] == "stage":  # the run has begun (and its handlers are set)
                process.send_signal(signal.SIGTERM)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM  # ended by Python, through every finally block
    assert "error" not in rest  # a cancel, not a failure
    assert _snapshot(tmp_path) == {"out.seg.nrrd": b"the previous result"}


# F-21 --------------------------------------------------------------------------------------------------


def test_a_legal_long_name_is_written_and_a_too_long_one_is_named_as_such(tmp_path):
    from unetrpp.atomic import write_bytes_atomically
    from unetrpp.errors import UnetrppError
    from unetrpp.pipeline.predictor import check_writable_folder

    longest_length = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = tmp_path / ("n" * (longest_length - len(".json")) + ".json")
    check_writable_folder(longest)
    write_bytes_atomically(longest, b"{}")
    assert [p.name for p in tmp_path.iterdir()] == [longest.name]
    too_long = tmp_path / ("n" * longest_length + "s.seg.nrrd")
    expected = f"its name is {longest_length + 10} bytes long and the file system allows {longest_length}$"
    with pytest.raises(UnetrppError, match=expected):
        check_writable_folder(too_long)
