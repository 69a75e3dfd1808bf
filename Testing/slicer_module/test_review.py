"""Review flags and volumes on hand-made label maps, and on a real segmentation node."""

from __future__ import annotations

import numpy as np
import pytest
from UNETRPPSegmentLib.review import (
    FLAG_EMPTY,
    FLAG_FRAGMENTED,
    FLAG_SWAPPED,
    review_label_map,
    review_segmentation_node,
)

# Anisotropic, oblique-free but flipped: IJK i runs towards the patient's left (x decreases).
IJK_TO_RAS = np.array(
    [
        [-0.8, 0.0, 0.0, 40.0],
        [0.0, 0.8, 0.0, -20.0],
        [0.0, 0.0, 2.5, 10.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _segments(*names: str) -> list[tuple[str, str, int, tuple[float, float, float]]]:
    return [(f"s{value}", name, value, (0.5, 0.2, 0.1)) for value, name in enumerate(names, start=1)]


def test_volume_voxels_and_centroid_follow_geometry():
    label_map = np.zeros((6, 20, 30), np.uint8)
    label_map[1:4, 5:10, 2:6] = 1  # 3 * 5 * 4 = 60 voxels
    (summary,) = review_label_map(label_map, IJK_TO_RAS, _segments("liver"))
    voxel_mm3 = 0.8 * 0.8 * 2.5
    assert summary.voxel_count == 60
    assert summary.volume_ml == pytest.approx(60 * voxel_mm3 / 1000)
    expected = IJK_TO_RAS @ np.array([3.5, 7.0, 2.0, 1.0])  # mean (i, j, k) of the block
    assert summary.centroid_ras == pytest.approx(tuple(expected[:3]))
    assert summary.flags == ()


def test_empty_segment_is_flagged():
    label_map = np.zeros((4, 4, 4), np.uint8)
    label_map[0, 0, 0] = 1
    liver, spleen = review_label_map(label_map, IJK_TO_RAS, _segments("liver", "spleen"))
    assert FLAG_EMPTY not in liver.flags
    assert spleen.flags == (FLAG_EMPTY,) and spleen.volume_ml == 0 and spleen.centroid_ras is None


def test_two_large_components_are_flagged_but_a_speck_is_not():
    label_map = np.zeros((8, 16, 16), np.uint8)
    label_map[1:4, 1:5, 1:5] = 1  # 48 voxels
    label_map[5:8, 10:14, 10:14] = 1  # 48 voxels, not touching
    label_map[1:4, 1:5, 10:14] = 2  # 48 voxels
    label_map[7, 0, 0] = 2  # a single stray voxel: 1/49 of the segment
    fragmented, solid = review_label_map(label_map, IJK_TO_RAS, _segments("liver", "spleen"))
    assert fragmented.large_components == 2 and FLAG_FRAGMENTED in fragmented.flags
    assert solid.large_components == 1 and solid.flags == ()


@pytest.mark.parametrize(
    ("right_kidney_i", "is_swapped"),
    [(2, False), (20, True)],
    ids=["right-kidney-on-patient-right", "right-kidney-on-patient-left"],
)
def test_left_right_pair_on_wrong_sides_is_flagged(right_kidney_i, is_swapped):
    # IJK_TO_RAS maps larger i to smaller x (patient's left): small i is the patient's right.
    label_map = np.zeros((4, 8, 24), np.uint8)
    left_i = 22 - right_kidney_i
    label_map[1:3, 2:5, right_kidney_i : right_kidney_i + 2] = 1
    label_map[1:3, 2:5, left_i : left_i + 2] = 2
    label_map[1:3, 2:5, 11:13] = 3
    right, left, aorta = review_label_map(
        label_map, IJK_TO_RAS, _segments("Right kidney", "kidney left", "aorta")
    )
    assert (FLAG_SWAPPED in right.flags) is is_swapped
    assert (FLAG_SWAPPED in left.flags) is is_swapped
    assert FLAG_SWAPPED not in aorta.flags


def test_review_segmentation_node_reads_each_segment(slicer_app):
    import slicer
    import vtk

    scene = slicer_app.scene
    volume = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(volume)
    image = vtk.vtkImageData()
    image.SetDimensions(24, 8, 4)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    volume.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, IJK_TO_RAS[row, column])
    volume.SetIJKToRASMatrix(matrix)
    segmentation_node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(segmentation_node)
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    label_map = np.zeros((4, 8, 24), np.uint8)
    label_map[1:3, 2:5, 20:22] = 1
    label_map[1:3, 2:5, 0:2] = 2
    names = ("right kidney", "left kidney", "spleen")
    for value, name in enumerate(names, start=1):
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment(name, name, (0.1 * value, 0.5, 0.5))
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (label_map == value).astype(np.uint8), segmentation_node, segment_id, volume
        )
    from_node = review_segmentation_node(segmentation_node)
    from_array = review_label_map(
        label_map,
        IJK_TO_RAS,
        [(name, name, value, (0.1 * value, 0.5, 0.5)) for value, name in enumerate(names, 1)],
    )
    assert [s.name for s in from_node] == list(names)
    for node_summary, array_summary in zip(from_node, from_array, strict=True):
        assert node_summary.voxel_count == array_summary.voxel_count
        assert node_summary.volume_ml == pytest.approx(array_summary.volume_ml)
        assert node_summary.flags == array_summary.flags
        assert node_summary.color_rgb == pytest.approx(array_summary.color_rgb)
    assert FLAG_SWAPPED in from_node[0].flags and from_node[2].flags == (FLAG_EMPTY,)


def test_review_of_a_loaded_seg_nrrd_with_one_shared_layer(slicer_app, tmp_path):
    """Segments read from a .seg.nrrd share one labelmap layer with label values 1, 2, 3."""
    import SimpleITK as sitk
    from unetrpp.labels.seg_nrrd import write_seg_nrrd
    from unetrpp.labels.terminology import structures_for

    label_map = np.zeros((4, 8, 24), np.uint8)
    label_map[1:3, 2:5, 20:22] = 2
    label_map[1:3, 2:5, 0:2] = 3
    label_map[0, 0:3, 5:9] = 6
    structures = structures_for("synapse")
    path = write_seg_nrrd(sitk.GetImageFromArray(label_map), structures, tmp_path / "labels.seg.nrrd")
    node = slicer_app.load_segmentation(path)
    from_node = review_segmentation_node(node)
    assert [s.name for s in from_node] == [s.name for s in structures]
    for summary, structure in zip(from_node, structures, strict=True):
        assert summary.voxel_count == int((label_map == structure.label_value).sum()), structure.name
