"""atomic_output: the old file or the new one, never half of one, never a temporary left behind."""

from __future__ import annotations

import pytest
from unetrpp.atomic import atomic_output


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with atomic_output(target, suffix=".json") as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".json")
        temporary.write_text("new")
        assert target.read_text() == "old"  # nobody sees the new file before it is complete
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "weights.unetrpp"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_output(target) as temporary:
        temporary.write_text("half")
        raise OSError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.unetrpp"]
