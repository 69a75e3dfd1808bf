"""The committed test data in ``Testing/data`` is complete, unaltered and within the size budget.

``SHA256SUMS`` lists every data file with its SHA256; a changed, missing or unlisted file fails here, so
a new file must come with its line there and its entry in ``SOURCES.md``. Only the documentation files
beside the data are not listed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vendored_data import DATA_DIR, GOLDEN_DIR, GOLDEN_IO, GOLDEN_WEIGHTS, small_golden

SUMS = DATA_DIR / "SHA256SUMS"
# Beside the data, not data: the sums themselves, the sources and licences, the derivation script, and
# the attributes file that keeps git from converting line endings (which would change the hashes).
UNLISTED = {"SHA256SUMS", "SOURCES.md", "derive_small_golden.py", ".gitattributes"}
UNLISTED_DIRS = {"LICENSES", "__pycache__"}
MAX_FILE_BYTES = 10_000_000  # the repository's limit per committed file
MAX_TOTAL_BYTES = 40_000_000  # what the test data may add to the repository


def _listed() -> dict[str, str]:
    entries = {}
    for number, line in enumerate(SUMS.read_text(encoding="utf-8").splitlines(), start=1):
        digest, separator, name = line.partition("  ")
        assert separator and len(digest) == 64 and name, f"SHA256SUMS line {number} is not 'HASH  PATH'"
        assert name not in entries, f"SHA256SUMS lists {name} twice"
        entries[name] = digest
    return entries


def _data_files() -> list[Path]:
    return [
        path
        for path in DATA_DIR.rglob("*")
        if path.is_file() and not UNLISTED_DIRS.intersection(path.relative_to(DATA_DIR).parts[:-1])
    ]


def test_every_listed_file_has_its_sha256():
    entries = _listed()
    assert entries
    for name, digest in entries.items():
        path = DATA_DIR / name
        assert path.is_file(), f"{name} is listed in SHA256SUMS but missing from Testing/data"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name} differs from SHA256SUMS"


def test_every_data_file_is_listed():
    listed = set(_listed())
    unlisted = [
        path.relative_to(DATA_DIR).as_posix()
        for path in _data_files()
        if path.relative_to(DATA_DIR).as_posix() not in listed | UNLISTED
    ]
    assert not unlisted, f"files in Testing/data without a SHA256SUMS line: {sorted(unlisted)}"


def test_test_data_stays_within_the_size_budget():
    sizes = {path.relative_to(DATA_DIR).as_posix(): path.stat().st_size for path in DATA_DIR.rglob("*")}
    too_big = {name: size for name, size in sizes.items() if size > MAX_FILE_BYTES}
    assert not too_big, f"files over {MAX_FILE_BYTES} bytes: {too_big}"
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES


def test_every_listed_file_is_named_in_the_sources():
    sources = (DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    folders = {name.rsplit("/", 1)[0] if "/" in name else name for name in _listed()}
    missing = sorted(folder for folder in folders if folder.split("/", 1)[-1] not in sources)
    assert not missing, f"SOURCES.md does not describe: {missing}"


def test_small_golden_keeps_a_full_resolution_sample_that_spans_the_output():
    golden = small_golden()
    shape = golden["full_resolution_shape"]
    sample = golden["outputs_full_resolution_sample"]
    index = golden["sample_index"]
    assert shape == [1, golden["config"]["out_channels"], *golden["config"]["img_size"]]
    assert list(sample.shape) == [*shape[:2], *(len(picks) for picks in index)]
    for picks, size in zip(index, shape[2:], strict=True):
        assert picks == sorted(set(picks)) and picks[0] == 0 and picks[-1] == size - 1
    # each file on its own loads with weights_only, the weights file as a checkpoint-like dict
    import torch

    weights = torch.load(DATA_DIR.joinpath(*GOLDEN_DIR, GOLDEN_WEIGHTS), weights_only=True)
    assert set(weights) == {"config", "state_dict", "derived_from"}
    io = torch.load(DATA_DIR.joinpath(*GOLDEN_DIR, GOLDEN_IO), weights_only=True)
    assert io["derived_from"] == weights["derived_from"]


def test_every_licence_file_is_named_in_the_sources():
    sources = (DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    licences = sorted(path.name for path in (DATA_DIR / "LICENSES").iterdir())
    assert "Apache-2.0.txt" in licences
    assert all(f"LICENSES/{name}" in sources for name in licences), licences
