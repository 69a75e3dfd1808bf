"""The default executor overlaps the stages of neighbouring cases and holds at most three at once: the
next case is read while the network runs on this one, the previous one is written meanwhile; outcomes
keep case order, and a case fails alone at whichever stage it fails."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from test_cli_segment import _synthetic_ct
from tiny_models import ct_plans, tiny_synapse_model
from unetrpp.batch.events import CaseDoneEvent, CaseEvent, CaseStartEvent
from unetrpp.batch.runner import run_batch
from unetrpp.events import StageEvent
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.pipeline.predictor import segment
from unetrpp.pipeline.segment_types import SegmentOptions

_OPTIONS = SegmentOptions(device="cpu")


def _stage_order(events: list) -> list[tuple[str, str]]:
    return [
        (e.case, e.inner.stage)
        for e in events
        if isinstance(e, CaseEvent) and isinstance(e.inner, StageEvent)
    ]


def test_the_next_case_is_read_during_inference_and_the_last_written_during_the_next_inference(tmp_path):
    model = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5)))
    source = tmp_path / "in"
    source.mkdir()
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        sitk.WriteImage(_synthetic_ct(), str(source / f"{name}.nii.gz"))  # 4 tiles each
    sitk.WriteImage(_synthetic_ct(size_xyz=(48, 40, 1)), str(source / "c.nii.gz"))  # fails when read
    events: list = []

    report = run_batch(source, tmp_path / "out", model, _OPTIONS, on_event=events.append)

    order = _stage_order(events)
    for reading, inferring in (("b", "a"), ("e", "d")):
        assert order.index((reading, "read")) < order.index((inferring, "resample")), order
    assert order.index(("a", "write")) > order.index(("b", "inference")), order

    in_flight, most = set(), 0
    for event in events:
        if isinstance(event, CaseStartEvent):
            in_flight.add(event.case)
        elif isinstance(event, CaseDoneEvent):
            in_flight.discard(event.case)
        most = max(most, len(in_flight))
    assert most == 3  # reading, inference and writing at once, never a fourth case

    assert [e.case for e in events if isinstance(e, CaseDoneEvent)] == names
    statuses = {r.case: r.status for r in report.cases}
    assert statuses == {"a": "done", "b": "done", "c": "failed", "d": "done", "e": "done"}
    assert report.failed[0].error_type == "InputImageError"

    alone = segment(str(source / "e.nii.gz"), model, options=_OPTIONS)
    written, _ = read_seg_nrrd(tmp_path / "out" / "e.seg.nrrd")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(alone.label_map))
