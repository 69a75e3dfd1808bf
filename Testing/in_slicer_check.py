"""The module's checks inside a real 3D Slicer, for a maintainer before a release (no CI runs Slicer).

Run from the repository root, with the extension built or its module folder added to Slicer's module
paths, and the Python packages installed (the panel's Segment button asks once)::

    Slicer --no-main-window --python-script Testing/in_slicer_check.py

It builds the panel, segments a held-out synthetic phantom under a linear transform with the bundled
``demo`` model through the panel's logic (a real background process), and checks what pytest can only
check against slicer-core: the panel binds its parameter node, the result sits on the volume's own grid
with one shared labelmap layer, it agrees with the phantom's truth, and no temporary file is left. It
prints one line per check and exits with status 0 only when all passed.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import slicer
import vtk

DICE_FLOOR = 0.85  # the demo model's held-out mean Dice is 0.93 (README); the phantom is seed 1000
results: list[tuple[str, bool, str]] = []


def check(name: str, passed: bool, detail: str = "") -> None:
    results.append((name, bool(passed), detail))
    print(f"{'PASS' if passed else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def panel():
    """The module's widget, built as when the user opens it."""
    widget = slicer.modules.unetrppsegment.widgetRepresentation().self()
    widget.enter()
    return widget


def phantom_in_scene(folder: Path):
    """The demo's held-out phantom as a volume under a 12 mm linear transform, and its truth segmentation."""
    import SimpleITK as sitk
    from unetrpp.labels.seg_nrrd import write_seg_nrrd
    from unetrpp.labels.terminology import structures_from_labels
    from unetrpp.train.phantoms import PHANTOM_LABELS, PhantomOptions, generate_phantom

    phantom = generate_phantom(1000, PhantomOptions())
    image_path, truth_path = folder / "phantom.nrrd", folder / "phantom_truth.seg.nrrd"
    sitk.WriteImage(phantom.image, str(image_path), useCompression=True)
    write_seg_nrrd(phantom.label_map, structures_from_labels("btcv", PHANTOM_LABELS), truth_path)
    volume = slicer.util.loadVolume(str(image_path))
    truth = slicer.util.loadSegmentation(str(truth_path))
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 12.0)
    transform.SetMatrixTransformToParent(shift)
    for node in (volume, truth):
        node.SetAndObserveTransformNodeID(transform.GetID())
    return volume, truth, transform


def dice(result, truth, volume, name: str) -> float:
    def mask(node):
        segment_id = node.GetSegmentation().GetSegmentIdBySegmentName(name)
        return slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume) > 0

    a, b = mask(result), mask(truth)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def main() -> int:
    slicer.mrmlScene.Clear()
    widget = panel()
    check("panel binds its parameter node", widget._parameterNode is not None)
    message = widget.ui.statusLabel.text
    check("panel shows no version or setup message", not message, message)
    missing = widget.logic.missingDependencies()
    check("Python packages installed", not missing, ", ".join(missing))
    if missing:
        return 1

    folder = Path(tempfile.mkdtemp(prefix="UNETRPPCheck-"))
    temp_root = folder / "runs"
    volume, truth, transform = phantom_in_scene(folder)
    widget.ui.inputVolumeSelector1.setCurrentNode(volume)
    widget.updateGUI()
    check("Segment is enabled with a volume selected", widget.ui.segmentButton.enabled)

    widget.logic.segmentation.temp_root = temp_root
    job = widget.logic.process(volume, "demo", forceCpu=True)
    node = job.segmentation_node
    check("segmentation succeeded", node is not None, job.error_message)
    if node is None:
        return 1
    check("result follows the volume's transform", node.GetTransformNodeID() == transform.GetID())
    geometry = node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    expected = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    stored = np.array([float(v) for v in geometry.split(";")[:16]]).reshape(4, 4)
    check("reference geometry is the volume's own grid", np.allclose(stored, expected, atol=1e-4))
    layers = node.GetSegmentation().GetNumberOfLayers()
    check("all segments share one labelmap layer", layers == 1, f"{layers} layers")
    scores = {name: dice(node, truth, volume, name) for name in ("liver", "spleen", "aorta")}
    check(
        f"Dice against the phantom's truth >= {DICE_FLOOR}",
        min(scores.values()) >= DICE_FLOOR,
        ", ".join(f"{name} {score:.3f}" for name, score in scores.items()),
    )
    leftovers = sorted(temp_root.rglob("*")) if temp_root.exists() else []
    check("no temporary files left", not leftovers, ", ".join(map(str, leftovers[:3])))
    check("review table filled", len(job.review) == node.GetSegmentation().GetNumberOfSegments())
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":
    try:
        status = main()
    except Exception:
        traceback.print_exc()
        status = 1
    print(f"{sum(p for _, p, _ in results)} passed, {sum(not p for _, p, _ in results)} failed", flush=True)
    sys.stdout.flush()
    slicer.util.exit(status)
