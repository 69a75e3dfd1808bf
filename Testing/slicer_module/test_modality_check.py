"""The panel's modality check against the real Slicer core: real scans loaded by Slicer's own reader give
the core's warning for a wrong model and none for the right one; a volume from DICOM is named by its
DICOM Modality when the DICOM database answers, and still checked by its voxels when there is none;
``check_modality=False`` reaches the child as ``--force-modality``, so a confirmed run is not warned
twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from unetrpp.events import WarningEvent
from unetrpp.models.registry import find_card
from UNETRPPSegmentLib.logic import (
    JobStatus,
    SegmentationLogic,
    SegmentationRequest,
    modality_warning,
    volume_dicom_modality,
)
from vendored_data import data_path

BRAIN_MR = ("real_inputs", "monai_brain_mr_las", "anatomical.nii")
REAL_CT = ("real_inputs", "totalseg_example_ct", "example_ct.nii.gz")
MR_DICOM = ("real_inputs", "dcmqa_mr_decubitus_hfdr_sag")


class _DicomDatabase:
    """Stand-in for ``slicer.dicomDatabase`` (a ctkDICOMDatabase, not in slicer-core): answers
    ``instanceValue(uid, "gggg,eeee")`` from the real files of a series, as the database would."""

    def __init__(self, folder: Path) -> None:
        self.headers = {}
        for path in sorted(folder.iterdir()):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            self.headers[reader.GetMetaData("0008|0018").strip()] = reader
        self.asked: list[tuple[str, str]] = []

    def instanceValue(self, uid: str, tag: str) -> str:  # noqa: N802 (the CTK name)
        self.asked.append((uid, tag))
        reader = self.headers.get(uid)
        key = tag.replace(",", "|").lower()
        return reader.GetMetaData(key) if reader is not None and reader.HasMetaDataKey(key) else ""


def _load_dicom_series_like_slicer(slicer_app, folder: Path):
    """The series as a volume node with the ``DICOM.instanceUIDs`` attribute Slicer's DICOM plugin sets."""
    import slicer

    image = sitk.ReadImage(sorted(str(p) for p in folder.iterdir()))
    volume = slicer_app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MR sag")
    slicer.util.updateVolumeFromArray(volume, sitk.GetArrayFromImage(image))
    uids = list(_DicomDatabase(folder).headers)  # the SOP Instance UIDs of the files
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    return volume


def test_brain_mr_loaded_by_slicer_warns_the_ct_demo_model_and_not_an_mr_model(slicer_app):
    volume = slicer_app.load_volume(data_path(*BRAIN_MR))
    warning = modality_warning([volume], find_card("demo"))
    assert warning is not None and "\n" not in warning
    assert warning.startswith("model 'demo' expects CT in Hounsfield units, but the input has no air")
    assert modality_warning([volume], find_card("acdc")) is None


def test_real_ct_loaded_by_slicer_passes_the_ct_models_and_warns_an_mr_model(slicer_app):
    volume = slicer_app.load_volume(data_path(*REAL_CT))
    assert modality_warning([volume], find_card("demo")) is None
    assert modality_warning([volume], find_card("synapse")) is None
    warning = modality_warning([volume], find_card("acdc"))
    assert warning is not None and "looks like a CT in Hounsfield units" in warning


def test_a_volume_from_dicom_is_named_by_its_dicom_modality(slicer_app, monkeypatch):
    import slicer

    folder = data_path(*MR_DICOM)
    volume = _load_dicom_series_like_slicer(slicer_app, folder)
    database = _DicomDatabase(folder)
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    assert volume_dicom_modality(volume) == "MR"
    assert database.asked[0][1] == "0008,0060"
    warning = modality_warning([volume], find_card("demo"))
    assert "the input is a DICOM series of Modality MR" in warning


def test_without_a_dicom_database_the_voxels_still_decide(slicer_app, monkeypatch):
    import slicer

    volume = _load_dicom_series_like_slicer(slicer_app, data_path(*MR_DICOM))
    monkeypatch.delattr(slicer, "dicomDatabase", raising=False)
    assert volume_dicom_modality(volume) is None
    assert "has no air" in modality_warning([volume], find_card("demo"))

    class Broken:
        def instanceValue(self, uid, tag):  # noqa: N802
            raise RuntimeError("database is closed")

    monkeypatch.setattr(slicer, "dicomDatabase", Broken(), raising=False)
    assert volume_dicom_modality(volume) is None
    assert "has no air" in modality_warning([volume], find_card("demo"))


def test_a_volume_not_from_dicom_asks_no_database(slicer_app, monkeypatch):
    import slicer

    database = _DicomDatabase(data_path(*MR_DICOM))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    volume = slicer_app.load_volume(data_path(*BRAIN_MR))
    assert volume_dicom_modality(volume) is None
    assert database.asked == []


def test_force_modality_goes_to_the_child_only_when_the_check_is_off(slicer_app, tmp_path):
    volume = slicer_app.load_volume(data_path(*BRAIN_MR))
    logic = SegmentationLogic(python_executable="/opt/PythonSlicer", temp_root=tmp_path)
    paths, output = [tmp_path / "input_0.nrrd"], tmp_path / "out.seg.nrrd"
    checked = logic.segment_command(paths, output, SegmentationRequest([volume], "demo"))
    forced = logic.segment_command(paths, output, SegmentationRequest([volume], "demo", check_modality=False))
    assert "--force-modality" not in checked
    assert forced == [*checked[:-2], "--force-modality", *checked[-2:]]


@pytest.mark.parametrize("check_modality", [True, False], ids=["checked", "confirmed-by-the-user"])
def test_the_child_warns_once_unless_the_user_already_confirmed(slicer_app, tmp_path, check_modality):
    """A real child on the brain MR with the demo model: one JSON warning event, or none once forced."""
    volume = slicer_app.load_volume(data_path(*BRAIN_MR))
    environment = {**os.environ, "UNETRPP_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    logic = SegmentationLogic(
        python_executable=sys.executable, temp_root=tmp_path / "tmp", base_environment=environment
    )
    request = SegmentationRequest([volume], "demo", device="cpu", overlap=0.0, check_modality=check_modality)
    events: list = []
    job = logic.start(request, on_event=events.append, wait_for_completion=True)
    assert job.status is JobStatus.SUCCEEDED, job.error_message
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    if check_modality:
        assert len(warnings) == 1 and "model 'demo' expects CT" in warnings[0].message
    else:
        assert warnings == []
