"""SegmentationLogic against the real Slicer core: volume -> temp NRRD -> ``unetrpp segment`` child ->
segmentation node, with an oblique volume under a parent transform, cancel, failures and re-runs."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from unetrpp.errors import InputImageError
from unetrpp.labels.terminology import terminology_entry_string
from UNETRPPSegmentLib.logic import (
    CORE_DIR,
    QUALITIES,
    Device,
    JobStatus,
    SegmentationError,
    SegmentationLogic,
    SegmentationRequest,
    child_environment,
)
from UNETRPPSegmentLib.process import RunState, is_running

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SHAPE_ZYX = (12, 20, 24)


def _oblique_ijk_to_ras() -> np.ndarray:
    """Anisotropic spacing (0.9, 1.1, 2.5) mm, rotated 20 degrees about z and 10 about x."""
    a, b = math.radians(20), math.radians(10)
    rot_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot_z @ rot_x @ np.diag([0.9, 1.1, 2.5])
    matrix[:3, 3] = (-12.0, 30.5, -7.25)
    return matrix


def _vtk_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _add_volume(scene, array_zyx: np.ndarray, name: str = "CT abdomen"):
    """A scalar volume node with the oblique geometry, inside a patient/study subject hierarchy."""
    import slicer

    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(name)
    scene.AddNode(volume)
    volume.CreateDefaultDisplayNodes()
    volume.SetIJKToRASMatrix(_vtk_matrix(_oblique_ijk_to_ras()))
    slicer.util.updateVolumeFromArray(volume, array_zyx)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient 1")
    study = hierarchy.CreateStudyItem(patient, "Study 1")
    item = hierarchy.GetItemByDataNode(volume)  # the application adds items itself, the bare core not
    if item:
        hierarchy.SetItemParent(item, study)
    else:
        hierarchy.CreateItem(study, volume)
    return volume, study


def _add_transform(scene, volume):
    import slicer

    transform = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(transform)
    matrix = np.eye(4)
    c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
    matrix[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    matrix[:3, 3] = (5.0, -3.0, 12.0)
    transform.SetMatrixTransformToParent(_vtk_matrix(matrix))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    return transform


def _ct_like(shape_zyx=_SHAPE_ZYX) -> np.ndarray:
    rng = np.random.default_rng(0)
    array = rng.normal(-900, 20, size=shape_zyx)
    z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    body = ((y - shape_zyx[1] / 2) / (shape_zyx[1] / 2.5)) ** 2 + (
        (x - shape_zyx[2] / 2) / (shape_zyx[2] / 2.5)
    ) ** 2
    array[np.broadcast_to(body < 1, shape_zyx)] = 40.0
    return array.astype(np.int16)


def _sitk_on_volume_grid(volume, array_zyx: np.ndarray) -> sitk.Image:
    """A SimpleITK image on the volume's local grid (LPS physical space)."""
    ijk_to_lps = _LPS_TO_RAS @ _numpy_matrix_of(volume)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(spacing))
    image.SetDirection(tuple((ijk_to_lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(ijk_to_lps[:3, 3]))
    return image


def _numpy_matrix_of(volume) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return _numpy_matrix(matrix)


def _segment_array(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_volume)


# ---- child process set-up ----------------------------------------------------------------------


def test_child_environment_puts_core_first_sets_utf8_and_hides_gpu_only_when_forced():
    base = {"PYTHONPATH": os.pathsep.join(["/somewhere", str(CORE_DIR)]), "PATH": "/bin"}
    env = child_environment(Device.CPU, base)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(CORE_DIR), "/somewhere"]
    assert env["PYTHONIOENCODING"] == "utf-8" and env["PYTHONUTF8"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["PATH"] == "/bin"
    assert "CUDA_VISIBLE_DEVICES" not in child_environment(Device.AUTO, base)
    assert (CORE_DIR / "unetrpp" / "__init__.py").is_file()


def test_segment_command_runs_the_module_with_json_progress(slicer_app, tmp_path):
    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    request = SegmentationRequest([volume], "synapse", device="cpu", overlap=0.25, use_tta=True)
    logic = SegmentationLogic(python_executable="/opt/PythonSlicer", temp_root=tmp_path)
    command = logic.segment_command([tmp_path / "in.nrrd"], tmp_path / "out.seg.nrrd", request)
    assert command[:4] == ["/opt/PythonSlicer", "-m", "unetrpp", "segment"]
    assert command[4:6] == [str(tmp_path / "in.nrrd"), str(tmp_path / "out.seg.nrrd")]
    assert command[command.index("--model") + 1] == "synapse"
    assert command[command.index("--device") + 1] == "cpu"
    assert float(command[command.index("--overlap") + 1]) == 0.25
    assert "--tta" in command and command[-2:] == ["--progress", "json"]
    assert "--quality" not in command  # fast, the child's default


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_the_child_picks_its_backend_itself_so_an_installed_openvino_is_used(device, slicer_app, tmp_path):
    # The panel's "Install OpenVINO" needs no restart only because the child, a fresh Python, decides:
    # no --backend on its command line, and the CLI's default is auto (OpenVINO on a CPU when importable).
    from unetrpp.cli import build_parser

    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    request = SegmentationRequest([volume], "synapse", device=device)
    logic = SegmentationLogic(python_executable="/opt/PythonSlicer", temp_root=tmp_path)
    command = logic.segment_command([tmp_path / "in.nrrd"], tmp_path / "out.seg.nrrd", request)
    assert not any(word.startswith("--backend") for word in command)
    assert build_parser().parse_args(command[3:]).backend == "auto"


def test_paper_quality_is_the_childs_preset_and_sends_no_overlap_or_mirroring(slicer_app, tmp_path):
    from unetrpp.cli import build_parser
    from unetrpp.pipeline.segment_types import Quality

    assert tuple(q.value for q in Quality) == QUALITIES  # the panel's copy of the core's presets
    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    request = SegmentationRequest([volume], "synapse", overlap=0.25, use_tta=False, quality="paper")
    logic = SegmentationLogic(python_executable="/opt/PythonSlicer", temp_root=tmp_path)
    command = logic.segment_command([tmp_path / "in.nrrd"], tmp_path / "out.seg.nrrd", request)
    assert command[command.index("--quality") + 1] == "paper"
    assert "--overlap" not in command and "--tta" not in command  # the preset fixes them
    args = build_parser().parse_args(command[3:])  # the child's own parser accepts the command
    assert args.quality == "paper" and args.overlap is None and args.tta is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_volumes": []}, "select an input volume"),
        ({"overlap": 1.0}, "overlap"),
        ({"quality": "best"}, "quality must be one of fast, paper"),
    ],
    ids=["no-input", "overlap-too-large", "unknown-quality"],
)
def test_request_validation(slicer_app, kwargs, message):
    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    with pytest.raises(InputImageError, match=message):
        SegmentationRequest(**{"input_volumes": [volume], "model": "synapse", **kwargs})


def test_inputs_on_different_grids_are_refused_before_anything_runs(slicer_app, tmp_path):
    first, _ = _add_volume(slicer_app.scene, _ct_like(), "T1")
    second, _ = _add_volume(slicer_app.scene, _ct_like((12, 20, 20)), "T2")
    logic = SegmentationLogic(temp_root=tmp_path / "tmp")
    with pytest.raises(InputImageError, match="do not share one voxel grid"):
        logic.start(SegmentationRequest([first, second], "tumor")).wait(timeout_seconds=CHILD_TIMEOUT_S)
    assert not (tmp_path / "tmp").exists() or not any((tmp_path / "tmp").iterdir())


# ---- result import -----------------------------------------------------------------------------


@pytest.fixture
def synapse_result(slicer_app, tmp_path):
    """An oblique volume under a transform in a study, and a .seg.nrrd on its grid written by the core."""
    from unetrpp.labels.seg_nrrd import write_seg_nrrd
    from unetrpp.labels.terminology import structures_for

    volume, study = _add_volume(slicer_app.scene, _ct_like())
    transform = _add_transform(slicer_app.scene, volume)
    labels = np.zeros(_SHAPE_ZYX, np.uint8)
    labels[2:6, 3:9, 2:7] = 2  # right kidney
    labels[2:6, 3:9, 15:20] = 3  # left kidney
    labels[6:10, 10:16, 8:16] = 6  # liver
    structures = structures_for("synapse")
    path = write_seg_nrrd(_sitk_on_volume_grid(volume, labels), structures, tmp_path / "result.seg.nrrd")
    return volume, study, transform, labels, structures, path


def _assert_coded_segments_on_volume_grid(node, volume, labels, structures):
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(structures)
    for structure in structures:
        segment_id = segmentation.GetSegmentIdBySegmentName(structure.name)
        assert segment_id, f"segment {structure.name} missing"
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetColor() == pytest.approx(structure.color_float, abs=1e-3)
        if structure.is_coded:
            assert segment.GetTerminology() == terminology_entry_string(structure)
        array = _segment_array(node, segment_id, volume)
        assert array.shape == labels.shape
        np.testing.assert_array_equal(array != 0, labels == structure.label_value)


def test_import_creates_new_node_on_volume_grid_in_study_with_transform(slicer_app, synapse_result):
    import slicer

    volume, study, transform, labels, structures, path = synapse_result
    request = SegmentationRequest([volume], "synapse")
    node = SegmentationLogic().import_result(path, request)
    assert node.GetScene() is slicer_app.scene and node.GetDisplayNode() is not None
    assert node.GetName() == "CT abdomen synapse segmentation"
    _assert_coded_segments_on_volume_grid(node, volume, labels, structures)
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume
    assert node.GetTransformNodeID() == transform.GetID()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_app.scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    assert volume.GetStorageNode() is None  # the user's volume is untouched


def test_reimport_keeps_user_edits_unless_replace_is_confirmed(slicer_app, synapse_result):
    volume, _, _, labels, structures, path = synapse_result
    logic = SegmentationLogic()
    first = logic.import_result(path, SegmentationRequest([volume], "synapse"))
    segmentation = first.GetSegmentation()
    # The user edits: renames the liver and paints an extra segment.
    liver_id = segmentation.GetSegmentIdBySegmentName("liver")
    segmentation.GetSegment(liver_id).SetName("liver (edited)")
    edit_id = segmentation.AddEmptySegment("", "my tumour", (1.0, 1.0, 0.0))
    import slicer

    painted = np.zeros(_SHAPE_ZYX, np.uint8)
    painted[1, 1, 1] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, first, edit_id, volume)

    again = logic.import_result(
        path, SegmentationRequest([volume], "synapse", output_segmentation=first, replace_confirmed=False)
    )
    assert again is not first
    assert again.GetName() != first.GetName()
    assert segmentation.GetSegment(liver_id).GetName() == "liver (edited)"
    np.testing.assert_array_equal(_segment_array(first, edit_id, volume), painted)

    replaced = logic.import_result(
        path, SegmentationRequest([volume], "synapse", output_segmentation=first, replace_confirmed=True)
    )
    assert replaced is first
    assert segmentation.GetSegmentIdBySegmentName("my tumour") == ""
    assert segmentation.GetSegmentIdBySegmentName("liver (edited)") == ""
    _assert_coded_segments_on_volume_grid(first, volume, labels, structures)


def _reference_geometry_matrix(node) -> np.ndarray:
    import slicer

    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    values = [float(v) for v in node.GetSegmentation().GetConversionParameter(name).split(";") if v]
    return np.array(values[:16]).reshape(4, 4)


def test_reference_geometry_is_the_volumes_own_grid_under_its_transform(slicer_app, synapse_result):
    """Slicer applies the node's transform on top of the reference geometry; a geometry taken while the
    segmentation had no transform yet already holds the volume's transform, which then counts twice."""
    volume, _, _, _, _, path = synapse_result
    logic = SegmentationLogic()
    first = logic.import_result(path, SegmentationRequest([volume], "synapse"))
    np.testing.assert_allclose(_reference_geometry_matrix(first), _numpy_matrix_of(volume), atol=1e-6)
    replaced = logic.import_result(
        path, SegmentationRequest([volume], "synapse", output_segmentation=first, replace_confirmed=True)
    )
    np.testing.assert_allclose(_reference_geometry_matrix(replaced), _numpy_matrix_of(volume), atol=1e-6)


def test_replacing_keeps_the_segments_in_one_shared_labelmap_layer(slicer_app, synapse_result):
    volume, _, _, labels, structures, path = synapse_result
    logic = SegmentationLogic()
    first = logic.import_result(path, SegmentationRequest([volume], "synapse"))
    assert first.GetSegmentation().GetNumberOfLayers() == 1
    logic.import_result(
        path, SegmentationRequest([volume], "synapse", output_segmentation=first, replace_confirmed=True)
    )
    assert first.GetSegmentation().GetNumberOfLayers() == 1  # not one full-size layer per structure
    _assert_coded_segments_on_volume_grid(first, volume, labels, structures)


def test_import_can_build_3d_surfaces(slicer_app, synapse_result):
    import slicer

    volume, _, _, _, _, path = synapse_result
    node = SegmentationLogic().import_result(
        path, SegmentationRequest([volume], "synapse", create_surfaces=True)
    )
    surface_name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    liver = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("liver"))
    polydata = liver.GetRepresentation(surface_name)
    assert polydata is not None and polydata.GetNumberOfPoints() > 0


def test_missing_result_file_is_a_one_line_error(slicer_app, tmp_path):
    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    nodes_before = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(SegmentationError, match="could not be read"):
        SegmentationLogic().import_result(tmp_path / "absent.seg.nrrd", SegmentationRequest([volume], "x"))
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes_before


# ---- end to end: a real `unetrpp segment` child with a tiny UNETR++ -----------------------------

_TINY_PATCH_ZYX = (16, 32, 32)
# Longest a test waits for one real child (each takes seconds); past it the job is cancelled and the
# test fails instead of hanging.
CHILD_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A real UNETR++ (synapse variant, tiny widths) saved as a .unetrpp file with the synapse labels.

    The plans' target spacing is finer than the test volume's, so the volume is upsampled into several
    tiles and inference reports real tile progress.
    """
    import torch
    import unetrpp.cli.segment  # noqa: F401  a plain import: a broken CLI fails these tests, never skips
    from unetrpp.models.checkpoint import save_model
    from unetrpp.models.registry import find_card
    from unetrpp.network import build_network

    overrides = {"patch_size": _TINY_PATCH_ZYX, "feature_size": 4, "dims": (8, 16, 32, 64)}
    torch.manual_seed(0)
    network = build_network("synapse", out_channels=14, deep_supervision=False, **overrides)
    card = find_card("synapse")
    plans = dataclasses.replace(
        card.plans, patch_size_zyx=_TINY_PATCH_ZYX, target_spacing_zyx=(1.25, 0.5, 0.5)
    )
    card = dataclasses.replace(
        card,
        name="tiny-synapse",
        patch_size_zyx=_TINY_PATCH_ZYX,
        plans=plans,
        network_overrides={**overrides, "deep_supervision": False},
        weights=(),
    )
    return save_model(tmp_path_factory.mktemp("model") / "tiny-synapse.unetrpp", network, card)


@pytest.fixture
def child_logic(tmp_path) -> SegmentationLogic:
    """The logic with this interpreter as the child's Python, a private temp root and model cache."""
    # One thread per child: reproducible results across runs and no oversubscription of small CI machines.
    environment = {**os.environ, "UNETRPP_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    return SegmentationLogic(
        python_executable=sys.executable, temp_root=tmp_path / "tmp", base_environment=environment
    )


def _leftovers(logic: SegmentationLogic) -> list[Path]:
    return sorted(logic.temp_root.rglob("*")) if logic.temp_root.exists() else []


def test_oblique_volume_under_transform_is_segmented_by_a_real_child(slicer_app, tiny_model, child_logic):
    from unetrpp.events import ProgressEvent, ResultEvent
    from unetrpp.labels.terminology import structures_for

    volume, study = _add_volume(slicer_app.scene, _ct_like())
    transform = _add_transform(slicer_app.scene, volume)
    ijk_to_ras_before = _numpy_matrix_of(volume)
    progress, events = [], []
    request = SegmentationRequest([volume], str(tiny_model), device="cpu")
    job = child_logic.start(request, on_progress=progress.append, on_event=events.append)
    job.wait(timeout_seconds=CHILD_TIMEOUT_S)

    assert job.status is JobStatus.SUCCEEDED, job.error_message
    node = job.segmentation_node
    # Named, coloured, coded segments: one per structure of the label set, as the terminology table says.
    structures = structures_for("synapse")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(structures)
    reported = {
        entry["name"]: entry["voxels"]
        for entry in next(e for e in events if isinstance(e, ResultEvent)).structures
    }
    for structure in structures:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(structure.name))
        assert segment is not None, structure.name
        assert segment.GetColor() == pytest.approx(structure.color_float, abs=1e-3)
        assert segment.GetTerminology() == terminology_entry_string(structure)
    # Same geometry as the input: the labelmap lies on the volume's own (oblique) voxel grid ...
    import slicer

    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(0), labelmap)
    import vtk

    image_to_world = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose(_numpy_matrix(image_to_world), ijk_to_ras_before, atol=1e-5)
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume
    # ... under the same transform, so it lands where the user sees the volume; the volume is unchanged.
    assert node.GetTransformNodeID() == volume.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(_numpy_matrix_of(volume), ijk_to_ras_before)
    assert volume.GetStorageNode() is None
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer_app.scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    # Nothing lost on the way: the node holds exactly the voxels the child wrote.
    for summary in job.review:
        assert summary.voxel_count == reported[summary.name], summary.name
        array = _segment_array(node, summary.segment_id, volume)
        assert array.shape == _SHAPE_ZYX and int((array != 0).sum()) == summary.voxel_count
    assert sum(reported.values()) > 0
    # Progress: tiles counted up, overall percent never going back, ending at 100.
    tiles = [e for e in events if isinstance(e, ProgressEvent) and e.stage == "inference"]
    assert len(tiles) > 2 and [e.done for e in tiles] == list(range(tiles[-1].total + 1))
    percents = [p.percent for p in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0 and len(set(percents)) > 3
    assert _leftovers(child_logic) == []


def test_cancel_during_inference_kills_tree_and_leaves_nothing(slicer_app, tiny_model, child_logic):
    from unetrpp.events import ProgressEvent

    volume, _ = _add_volume(slicer_app.scene, _ct_like((24, 40, 48)))
    nodes_before = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    tiles = []

    def on_event(event):
        if isinstance(event, ProgressEvent) and event.stage == "inference":
            tiles.append(event)

    # A high overlap makes many tiles, so inference runs long enough to be cancelled in the middle.
    request = SegmentationRequest([volume], str(tiny_model), device="cpu", overlap=0.9)
    done = []
    job = child_logic.start(request, on_event=on_event, on_done=done.append)
    tree = [psutil.Process(job.runner.pid)]
    deadline = time.monotonic() + 120
    while not any(t.done >= 1 for t in tiles) and job.poll():
        assert time.monotonic() < deadline, "inference never started"
        time.sleep(0.02)
    assert tiles and tiles[-1].done < tiles[-1].total, "inference finished before it could be cancelled"
    tree += tree[0].children(recursive=True)
    job.cancel()
    # The whole tree goes (measured: well under a second); the deadline is generous for a loaded CI
    # machine. That it was the cancel, not the end of the inference: the child died of SIGKILL.
    deadline = time.monotonic() + 30
    while any(is_running(process) for process in tree):
        assert time.monotonic() < deadline, "the process tree survived the cancel"
        time.sleep(0.02)
    if os.name == "posix":
        assert job.runner.returncode == -signal.SIGKILL
    assert job.status is JobStatus.CANCELLED and done == [job]
    assert job.segmentation_node is None and job.error_message == ""
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes_before
    assert _leftovers(child_logic) == []


def test_removing_the_input_during_a_run_stops_it_and_leaves_nothing(slicer_app, tiny_model, child_logic):
    volume, _ = _add_volume(slicer_app.scene, _ct_like((24, 40, 48)), "Removed CT")
    nodes_before = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    request = SegmentationRequest([volume], str(tiny_model), device="cpu", overlap=0.9)
    done, events = [], []
    job = child_logic.start(request, on_event=events.append, on_done=done.append)
    tree = [psutil.Process(job.runner.pid)]
    deadline = time.monotonic() + 120
    while not events and job.poll():  # the child has read its input and is working
        assert time.monotonic() < deadline, "the child never reported"
        time.sleep(0.02)
    assert job.status is JobStatus.RUNNING
    tree += tree[0].children(recursive=True)
    slicer_app.scene.RemoveNode(volume)  # the user deletes the input while it is being segmented
    assert job.poll() is False
    assert job.status is JobStatus.CANCELLED and done == [job]
    assert job.error_message == "input volume 'Removed CT' was removed from the scene"
    deadline = time.monotonic() + 30
    while any(is_running(process) for process in tree):
        assert time.monotonic() < deadline, "the child survived the removal of its input"
        time.sleep(0.05)
    assert job.segmentation_node is None
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes_before
    assert _leftovers(child_logic) == []


class _ImportFails(SegmentationLogic):
    """The child succeeds; loading its result raises something no code path expects."""

    def import_result(self, path, request):
        raise ValueError("vtkSegmentation said no\nsecond line")


def test_an_unexpected_failure_while_importing_ends_the_job_and_cleans_up(slicer_app, tiny_model, tmp_path):
    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    environment = {**os.environ, "UNETRPP_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    logic = _ImportFails(
        python_executable=sys.executable, temp_root=tmp_path / "tmp", base_environment=environment
    )
    done = []
    request = SegmentationRequest([volume], str(tiny_model), device="cpu", overlap=0.0)
    job = logic.start(request, on_done=done.append)
    with pytest.raises(SegmentationError, match="^the result could not be loaded: vtkSegmentation said no$"):
        job.wait(timeout_seconds=CHILD_TIMEOUT_S)
    assert job.status is JobStatus.FAILED and done == [job]
    assert _leftovers(logic) == []


def test_failing_child_surfaces_its_one_line_error(slicer_app, tiny_model, child_logic):
    array = _ct_like().astype(np.float32)
    array[3, 4, 5] = np.nan
    volume, _ = _add_volume(slicer_app.scene, array, "Broken CT")
    nodes_before = slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    kept_alive = []
    child_logic.keep_alive = lambda: kept_alive.append(time.monotonic())
    with pytest.raises(SegmentationError) as raised:
        child_logic.start(SegmentationRequest([volume], str(tiny_model), device="cpu")).wait(
            timeout_seconds=CHILD_TIMEOUT_S
        )
    assert len(kept_alive) >= 2  # the blocking wait let the application run between polls
    message = str(raised.value)
    assert "\n" not in message and "NaN" in message
    assert "volume 'Broken CT'" in message and "input_0.nrrd" not in message
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes_before
    assert _leftovers(child_logic) == []


def test_rerun_into_the_users_segmentation_replaces_only_when_confirmed(slicer_app, tiny_model, child_logic):
    import slicer

    volume, _ = _add_volume(slicer_app.scene, _ct_like())
    mine = slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my contours")
    mine.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = mine.GetSegmentation().AddEmptySegment("", "my tumour", (1.0, 1.0, 0.0))
    painted = np.zeros(_SHAPE_ZYX, np.uint8)
    painted[2:4, 5:8, 6:9] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, mine, segment_id, volume)

    kept = child_logic.start(
        SegmentationRequest([volume], str(tiny_model), device="cpu", output_segmentation=mine)
    ).wait(timeout_seconds=CHILD_TIMEOUT_S)
    assert kept.segmentation_node is not mine
    assert mine.GetSegmentation().GetNumberOfSegments() == 1
    np.testing.assert_array_equal(_segment_array(mine, segment_id, volume), painted)

    replaced = child_logic.start(
        SegmentationRequest(
            [volume], str(tiny_model), device="cpu", output_segmentation=mine, replace_confirmed=True
        )
    ).wait(timeout_seconds=CHILD_TIMEOUT_S)
    assert replaced.segmentation_node is mine
    names = [mine.GetSegmentation().GetNthSegment(i).GetName() for i in range(13)]
    assert "my tumour" not in names and names == [s.name for s in replaced.review]
    counts = {s.name: s.voxel_count for s in replaced.review}
    assert counts == {s.name: s.voxel_count for s in kept.review}, "the same run gave a different result"
    assert slicer_app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2
    assert _leftovers(child_logic) == []


def test_core_command_failure_reaches_the_caller_as_one_line(child_logic, tmp_path):
    """The widget's "Import weights file..." runs `unetrpp models import` through run_core."""
    not_weights = tmp_path / "notes.unetrpp"
    not_weights.write_text("these are not weights", encoding="utf-8")
    runner = child_logic.run_core(["models", "import", str(not_weights), "--name", "synapse"])
    assert runner.wait(timeout_seconds=120) is RunState.FAILED
    assert runner.error_message and "\n" not in runner.error_message
    assert not runner.error_message.startswith("unetrpp: error:")
    assert "notes.unetrpp" in runner.error_message
    assert not (tmp_path / "home" / "models" / "synapse").exists()
