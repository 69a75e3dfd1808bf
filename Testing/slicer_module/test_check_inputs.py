"""Which input volumes the panel refuses before anything runs, and why (against the real Slicer core)."""

from __future__ import annotations

import numpy as np
import pytest
from unetrpp.errors import InputImageError
from UNETRPPSegmentLib.nodes import check_inputs


def _volume(scene, name: str, node_class: str = "vtkMRMLScalarVolumeNode", components: int = 1):
    import slicer

    volume = scene.AddNewNodeByClass(node_class, name)
    shape = (4, 5, 6, components) if components > 1 else (4, 5, 6)
    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    slicer.util.updateVolumeFromArray(volume, array)
    return volume


def test_inputs_on_one_grid_under_one_transform_pass(slicer_app):
    first, second = _volume(slicer_app.scene, "FLAIR"), _volume(slicer_app.scene, "T1")
    transform = slicer_app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    for volume in (first, second):
        volume.SetAndObserveTransformNodeID(transform.GetID())
    check_inputs([first, second])


def test_a_second_input_under_another_transform_is_refused(slicer_app):
    first, second = _volume(slicer_app.scene, "FLAIR"), _volume(slicer_app.scene, "T1")
    second.SetAndObserveTransformNodeID(slicer_app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    with pytest.raises(InputImageError, match="'FLAIR' and 'T1' do not share one voxel grid and transform"):
        check_inputs([first, second])


def test_a_labelmap_input_is_refused(slicer_app):
    labels = _volume(slicer_app.scene, "labels", "vtkMRMLLabelMapVolumeNode")
    with pytest.raises(InputImageError, match="must be a scalar volume \\(not a labelmap"):
        check_inputs([labels])


def test_a_multi_component_input_is_refused(slicer_app):
    colour = _volume(slicer_app.scene, "RGB photo", "vtkMRMLVectorVolumeNode", components=3)
    with pytest.raises(InputImageError, match="'RGB photo' is not a scalar"):
        check_inputs([colour])
