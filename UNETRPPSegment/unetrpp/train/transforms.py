"""MONAI transforms that turn training files into network-ready (C, Z, Y, X) patches.

The chain mirrors what inference does with a model card (``unetrpp.pipeline``): reorient to the card's
orientation, resample to the plans' target spacing, normalise intensities as the plans say, then cut
patches of the network's patch size. MONAI works in (C, x, y, z) order with a RAS affine; the last step
transposes to (C, z, y, x), the order of SimpleITK arrays that inference feeds the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    FgBgToIndicesd,
    LoadImaged,
    NormalizeIntensityd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    Transposed,
)
from monai.utils import MetaKeys, SpaceKeys

from unetrpp.models.cards import NormalizationScheme, Plans

__all__ = ["SimpleITKReader", "preprocess_transforms", "sampling_transforms", "augment_transforms"]

# LPS (ITK world) to RAS (MONAI world): flip x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SimpleITKReader(ImageReader):
    """A MONAI image reader built on SimpleITK that also reorients (as inference does).

    MONAI's own ITKReader needs the ``itk`` package and its ``Orientationd`` needs ``nibabel``; this
    reader brings each image to ``orientation`` with ``sitk.DICOMOrient`` (the pipeline's
    ``reorient``), then gives arrays in (x, y, z) order with a RAS affine, as MONAI's ITKReader does.
    Several files are stacked as channels (they must share one grid).
    """

    def __init__(self, orientation: str = "RAS") -> None:
        super().__init__()
        self.orientation = orientation

    def verify_suffix(self, filename) -> bool:
        return True

    def read(self, data, **kwargs):
        names = [data] if isinstance(data, (str, bytes)) or not isinstance(data, Sequence) else list(data)
        images = [sitk.DICOMOrient(sitk.ReadImage(str(name)), self.orientation) for name in names]
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        images = img if isinstance(img, list) else [img]
        arrays = [sitk.GetArrayFromImage(image).transpose(2, 1, 0) for image in images]
        first = images[0]
        for other in images[1:]:
            if other.GetSize() != first.GetSize() or not np.allclose(other.GetSpacing(), first.GetSpacing()):
                raise ValueError("all channels of a case must share one voxel grid")
        affine = np.eye(4)
        affine[:3, :3] = np.array(first.GetDirection()).reshape(3, 3) @ np.diag(first.GetSpacing())
        affine[:3, 3] = first.GetOrigin()
        affine = _LPS_TO_RAS @ affine
        meta = {
            MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.array(arrays[0].shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing": np.array(first.GetSpacing()),
        }
        if len(arrays) == 1:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays), meta


def _normalize(plans: Plans) -> list:
    transforms = []
    for channel, norm in enumerate(plans.channels):
        if norm.scheme is NormalizationScheme.CT:
            # clip to the data set's percentiles, then z-score with its foreground mean/sd (nnU-Net v1)
            lower = (norm.lower_bound - norm.mean) / norm.sd
            upper = (norm.upper_bound - norm.mean) / norm.sd
            transforms.append(
                _ChannelTransform(
                    ScaleIntensityRanged(
                        "image", norm.lower_bound, norm.upper_bound, lower, upper, clip=True
                    ),
                    channel,
                    plans.num_input_channels,
                )
            )
        else:
            transforms.append(
                _ChannelTransform(
                    NormalizeIntensityd("image", nonzero=norm.use_nonzero_mask),
                    channel,
                    plans.num_input_channels,
                )
            )
    return transforms


class _ChannelTransform:
    """Apply a dictionary transform to one channel of ``image`` only."""

    def __init__(self, transform, channel: int, num_channels: int) -> None:
        self.transform, self.channel, self.num_channels = transform, channel, num_channels

    def __call__(self, data: dict) -> dict:
        if self.num_channels == 1:
            return self.transform(data)
        image = data["image"]
        part = self.transform({"image": image[self.channel : self.channel + 1]})["image"]
        image = image.clone()
        image[self.channel] = part[0]
        return {**data, "image": image}


def preprocess_transforms(plans: Plans, orientation: str) -> Compose:
    """Load, orient, resample and normalise one case: ``{"image": [paths], "label": path}`` to
    tensors (C, x, y, z) (MONAI order; :func:`augment_transforms` ends in (C, z, y, x))."""
    spacing_xyz = tuple(reversed(plans.target_spacing_zyx))
    return Compose(
        [
            LoadImaged(("image", "label"), reader=SimpleITKReader(orientation), image_only=True),
            EnsureChannelFirstd(("image", "label")),
            Spacingd(("image", "label"), pixdim=spacing_xyz, mode=("bilinear", "nearest")),
            *_normalize(plans),
            EnsureTyped(("image", "label"), dtype=(np.float32, np.uint8), track_meta=False),
        ]
    )


def sampling_transforms(patch_size_zyx: Sequence[int]) -> Compose:
    """Pad a preprocessed case to at least the patch size and index its foreground and background
    voxels once, so that random crops need not scan the volume again (keys ``label_fg_indices``,
    ``label_bg_indices``)."""
    patch_xyz = tuple(int(s) for s in reversed(patch_size_zyx))
    return Compose(
        [SpatialPadd(("image", "label"), spatial_size=patch_xyz), FgBgToIndicesd("label", image_key=None)]
    )


def augment_transforms(
    patch_size_zyx: Sequence[int], *, samples_per_case: int = 2, mirror_axes_zyx: Sequence[int] = ()
) -> Compose:
    """Random foreground-weighted patches with spatial and intensity augmentation, as (C, z, y, x).

    Mirroring is off unless asked: flipping the left-right axis would swap left and right organs.
    """
    patch_xyz = tuple(int(s) for s in reversed(patch_size_zyx))
    keys = ("image", "label")
    transforms = [
        RandCropByPosNegLabeld(
            keys,
            "label",
            spatial_size=patch_xyz,
            pos=2.0,
            neg=1.0,
            num_samples=samples_per_case,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        ),
        RandAffined(
            keys,
            prob=0.2,
            rotate_range=(0.0, 0.0, np.deg2rad(15)),
            scale_range=(0.15, 0.15, 0.15),
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandScaleIntensityd("image", factors=0.1, prob=0.2),
        RandShiftIntensityd("image", offsets=0.1, prob=0.2),
        RandGaussianNoised("image", prob=0.1, std=0.05),
    ]
    # zyx axis a is MONAI spatial axis 2 - a
    transforms += [RandFlipd(keys, prob=0.5, spatial_axis=2 - int(a)) for a in mirror_axes_zyx]
    transforms.append(Transposed(keys, indices=(0, 3, 2, 1)))
    return Compose(transforms)
