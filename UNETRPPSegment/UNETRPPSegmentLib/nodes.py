"""MRML nodes to files and back: input volumes to NRRD for the child, its ``.seg.nrrd`` into a node.

Qt-free (slicer, vtk, numpy). The user's nodes are never modified: volumes are written through a
standalone storage node, and an existing segmentation is only filled when the caller passes it as
``replace`` (after the user confirmed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
from unetrpp.errors import InputImageError, UnetrppError

__all__ = ["SegmentationError", "check_inputs", "write_volume", "import_segmentation", "place_in_study"]


class SegmentationError(UnetrppError):
    """The child failed or its result could not be imported; the message is one line."""


def _ijk_to_ras(volume) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def check_inputs(volumes: Sequence) -> None:
    """Every input has voxels, and all share one grid and parent transform (the child needs one grid)."""
    first = volumes[0]
    for volume in volumes:
        if (
            volume is None
            or not volume.IsA("vtkMRMLScalarVolumeNode")
            or volume.IsA("vtkMRMLLabelMapVolumeNode")
        ):
            raise InputImageError("each input must be a scalar volume (not a labelmap or empty selection)")
        image = volume.GetImageData()
        if image is None or min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
            raise InputImageError(f"input volume '{volume.GetName()}' has no voxels")
        if image.GetNumberOfScalarComponents() != 1:
            raise InputImageError(
                f"input volume '{volume.GetName()}' is not a scalar (single-component) volume"
            )
        if volume is first:
            continue
        same_grid = image.GetDimensions() == first.GetImageData().GetDimensions() and np.allclose(
            _ijk_to_ras(volume), _ijk_to_ras(first), atol=1e-4
        )
        if not same_grid or volume.GetTransformNodeID() != first.GetTransformNodeID():
            raise InputImageError(
                f"input volumes '{first.GetName()}' and '{volume.GetName()}' do not share one voxel grid "
                "and transform; resample them onto the first one (Resample Scalar/Vector/DWI Volume)"
            )


def write_volume(volume, path: Path) -> Path:
    """Write a volume to an uncompressed NRRD through a standalone storage node (node unchanged)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volume) or not path.is_file():
        raise SegmentationError(
            f"could not write volume '{volume.GetName()}' to the temporary folder {path.parent}"
        )
    return path


def place_in_study(scene, reference, segmentation_node) -> None:
    """Put the segmentation under the same subject-hierarchy parent (study) as the reference volume."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference)
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    segmentation_item = hierarchy.GetItemByDataNode(segmentation_node)
    if not segmentation_item:  # Slicer's GUI adds items by itself; the bare core does not
        segmentation_item = hierarchy.CreateItem(parent, segmentation_node)
    if parent and parent != hierarchy.GetSceneItemID():
        hierarchy.SetItemParent(segmentation_item, parent)


def import_segmentation(
    path: str | Path,
    reference,
    name: str,
    *,
    replace=None,
    create_surfaces: bool = False,
):
    """Read a ``.seg.nrrd`` into a new segmentation node named ``name`` (or into ``replace``, whose
    segments are all replaced), with ``reference`` as reference geometry, its parent transform and its
    subject-hierarchy study. Names, colours and terminology come from the file.

    Raises:
        SegmentationError: the file is missing or unreadable (no node is left behind).
    """
    scene = reference.GetScene()
    # Read into a node already in the scene: the reader creates display nodes for it.
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not Path(path).is_file() or not storage.ReadData(loaded):
        scene.RemoveNode(loaded)
        raise SegmentationError(f"the segmentation result {Path(path).name} could not be read")
    if replace is not None:
        target = replace
        # One deep copy of the whole segmentation keeps the file's single shared labelmap layer;
        # CopySegmentFromSegmentation per segment would give every structure a full-size layer of its own
        # (vtkSegmentation::CopySegmentFromSegmentation deep-copies the segment, Slicer v5.6.2 to v5.12.3).
        target.GetSegmentation().DeepCopy(loaded.GetSegmentation())
        scene.RemoveNode(loaded)
    else:
        target = loaded
        target.SetName(scene.GenerateUniqueName(name))
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    # Carried over, not hardened: the result sits on the volume's grid and follows its transform.
    # The transform goes first: SetReferenceImageGeometryParameterFromVolumeNode multiplies in the
    # volume-to-segmentation transform (vtkMRMLSegmentationNode.cxx, Slicer v5.6.2 lines 779-789), which
    # is the identity only once both nodes are under the same transform.
    target.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    target.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    place_in_study(scene, reference, target)
    if create_surfaces:
        target.CreateClosedSurfaceRepresentation()
    return target
