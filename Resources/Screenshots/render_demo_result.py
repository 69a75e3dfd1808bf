"""Render the demo phantom with its predicted segmentation (axial, coronal, sagittal) to a PNG.

Made the extension's screenshot from `unetrpp demo --output demo_output`:

    python Resources/Screenshots/render_demo_result.py demo_output/phantom_1000.nrrd \
        demo_output/phantom_1000.seg.nrrd Resources/Screenshots/UNETRPPSegment.png
"""

import sys

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.pipeline.geometry import reorient

image = reorient(sitk.ReadImage(sys.argv[1]), "LPS")
labels, segments = read_seg_nrrd(sys.argv[2])
labels = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor)
ct = sitk.GetArrayFromImage(image).astype(float)  # z, y, x (LPS: x to the patient's left)
lab = sitk.GetArrayFromImage(labels)
sx, sy, sz = image.GetSpacing()
colors = np.zeros((lab.max() + 1, 4))
for seg in segments:
    colors[seg.label_value] = (*seg.color, 0.55)
window = np.clip((ct + 160) / 400, 0, 1)
z = int(np.argmax((lab > 0).sum(axis=(1, 2))))
y = int(np.argmax((lab > 0).sum(axis=(0, 2))))
x = int(np.argmax((lab > 0).sum(axis=(0, 1))))
views = [
    ("axial", window[z], lab[z], sy / sx, False),
    ("coronal", window[:, y, :], lab[:, y, :], sz / sx, True),
    ("sagittal", window[:, :, x], lab[:, :, x], sz / sy, True),
]
fig, axes = plt.subplots(1, 3, figsize=(13, 5), facecolor="black")
for ax, (name, gray, seg, aspect, flip) in zip(axes, views):
    if flip:
        gray, seg = gray[::-1], seg[::-1]
    ax.imshow(gray, cmap="gray", aspect=aspect, interpolation="nearest")
    ax.imshow(colors[seg], aspect=aspect, interpolation="nearest")
    ax.set_title(name, color="white")
    ax.axis("off")
handles = [plt.Rectangle((0, 0), 1, 1, color=s.color) for s in segments if (lab == s.label_value).any()]
names = [s.name for s in segments if (lab == s.label_value).any()]
fig.legend(handles, names, loc="lower center", ncol=5, facecolor="black", labelcolor="white", frameon=False)
fig.suptitle(
    "unetrpp demo: bundled model on a held-out synthetic phantom "
    "(radiological view: patient's right on the left)",
    color="white",
)
fig.tight_layout(rect=(0, 0.08, 1, 0.95))
fig.savefig(sys.argv[3], dpi=80, facecolor="black")
