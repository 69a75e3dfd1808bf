"""``unetrpp demo``: the README's first command works offline with the shipped weights and reaches the
accuracy goal (mean Dice >= 0.85 on a held-out phantom) through the normal pipeline."""

from __future__ import annotations

import json
import re

import numpy as np
import SimpleITK as sitk
from unetrpp.cli import main
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.models.cards import ModelCard
from unetrpp.models.checkpoint import read_metadata
from unetrpp.models.registry import bundled_file, find_card
from unetrpp.train.phantoms import PHANTOM_LABELS


def read_card(path) -> ModelCard:
    return ModelCard.from_dict(json.loads(read_metadata(path)["card"]))


def test_bundled_demo_model_is_small_and_marked_synthetic():
    path = bundled_file(find_card("demo"))
    assert path is not None and path.is_file()
    assert path.stat().st_size <= 10 * 1024 * 1024
    card = read_card(path)
    assert "phantom" in card.title.lower() and "not for clinical use" in card.title.lower()
    assert "held-out" in card.notes.lower() and "unetrpp train" in card.notes
    assert tuple(card.labels) == tuple(PHANTOM_LABELS) == tuple(find_card("demo").labels)


def test_demo_segments_a_held_out_phantom_with_the_bundled_model(tmp_path, capsys):
    # One thread: on a busy 2-core CI machine two OpenMP threads are several times slower.
    code = main(
        ["demo", "--output", str(tmp_path), "--progress", "none", "--device", "cpu", "--threads", "1"]
    )
    assert code == 0
    out = capsys.readouterr().out
    mean = float(re.search(r"mean Dice: ([0-9.]+)", out).group(1))
    assert mean >= 0.85, out
    for _, name in PHANTOM_LABELS:
        assert re.search(rf"^{name}\s+[0-9.]+$", out, re.MULTILINE), name
    assert re.search(r"^time: [0-9.]+ s", out, re.MULTILINE)

    image = sitk.ReadImage(str(tmp_path / "phantom_1000.nrrd"))
    label_map, segments = read_seg_nrrd(tmp_path / "phantom_1000.seg.nrrd")
    assert label_map.GetSize() == image.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(label_map, getter)(), getattr(image, getter)(), atol=1e-6), getter
    assert {s.name for s in segments} == {name for _, name in PHANTOM_LABELS}
    # A second run refuses to overwrite the files of the first.
    assert main(["demo", "--output", str(tmp_path), "--progress", "none"]) == 2
