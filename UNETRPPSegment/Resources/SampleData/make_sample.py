"""Regenerate the UNETR++ sample data in this folder: the ``demo`` model's held-out phantom 1000.

    python UNETRPPSegment/Resources/SampleData/make_sample.py [FOLDER]

writes, into FOLDER (default: this folder), the phantom CT (``UNETRPPPhantom.nrrd``), its truth as a
Slicer segmentation with the demo's names, colours and SNOMED CT codes
(``UNETRPPPhantom_truth.seg.nrrd``), a thumbnail for the Sample Data module (``UNETRPPPhantom.png``)
and ``SHA256SUMS``, and prints the digests to pin in ``UNETRPPSegmentLib/sample_data.py``.

The phantom is ``generate_phantom(1000)`` (seed 1000 is held out from the demo's training seeds 0-39,
``benchmarks/train_demo.sh``) with one change: 1.5 mm pixels instead of 0.7-1.0 mm, which keeps the CT
at 1.2 MB instead of 4.4 MB (its noise hardly compresses); the demo model works at 3 x 3 x 4 mm anyway.
It is left tightly framed, as in training and ``unetrpp demo``, rather than padded with noisy air
(which would triple the file), and kept in the generator's own storage orientation (LAS).

The CT and the thumbnail come out byte for byte the same on every run. The truth comes out voxel for
voxel and segment for segment the same, but not byte for byte: pynrrd writes the time into its header
comment, so after regenerating it the pinned digest must be updated.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the module folder: UNETRPPSegmentLib and the unetrpp core

from unetrpp.labels.seg_nrrd import write_seg_nrrd  # noqa: E402
from unetrpp.labels.terminology import Structure, structures_from_labels  # noqa: E402
from unetrpp.train.demo import DEMO_SEED  # noqa: E402
from unetrpp.train.phantoms import PHANTOM_LABELS, Phantom, PhantomOptions, generate_phantom  # noqa: E402
from UNETRPPSegmentLib.sample_data import SAMPLE_FILES, THUMBNAIL  # noqa: E402

PIXEL_MM = 1.5
THUMBNAIL_WIDTH = 260  # the template's advice: thumbnails of about 260 x 280 pixels
WINDOW_HU = (-160.0, 240.0)  # abdominal soft-tissue window (level 40, width 400)
OVERLAY_OPACITY = 0.45


def sample_phantom() -> Phantom:
    """The shipped phantom, as the generator makes it."""
    return generate_phantom(DEMO_SEED, PhantomOptions(spacing_xy_mm=(PIXEL_MM, PIXEL_MM)))


def sample_structures() -> tuple[Structure, ...]:
    """The truth's segments: the demo model's structures, as ``unetrpp demo`` writes its truth."""
    return structures_from_labels("btcv", PHANTOM_LABELS)


def thumbnail(phantom: Phantom, structures: tuple[Structure, ...]) -> Image.Image:
    """The axial slice with the most labelled voxels, in a soft-tissue window with the truth overlaid,
    shown as radiologists view it (patient's right on the left, anterior at the top)."""
    # LPS storage: columns run right to left of the patient and rows anterior to posterior, as displayed.
    image = sitk.GetArrayFromImage(sitk.DICOMOrient(phantom.image, "LPS")).astype(np.float64)
    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(phantom.label_map, "LPS"))
    index = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    low, high = WINDOW_HU
    grey = np.clip((image[index] - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for structure in structures:
        inside = labels[index] == structure.label_value
        colour = np.asarray(structure.color_rgb) / 255.0
        rgb[inside] = (1 - OVERLAY_OPACITY) * rgb[inside] + OVERLAY_OPACITY * colour
    picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
    height = round(picture.height * THUMBNAIL_WIDTH / picture.width)
    return picture.resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS)


def write_sample(folder: Path) -> dict[str, str]:
    """Write the sample files and ``SHA256SUMS`` into ``folder``; return {file name: SHA256}."""
    folder.mkdir(parents=True, exist_ok=True)
    phantom, structures = sample_phantom(), sample_structures()
    image_file, truth_file = SAMPLE_FILES
    sitk.WriteImage(phantom.image, str(folder / image_file.file_name), useCompression=True)
    write_seg_nrrd(phantom.label_map, structures, folder / truth_file.file_name, overwrite=True)
    thumbnail(phantom, structures).save(folder / THUMBNAIL, optimize=True)
    names = (image_file.file_name, truth_file.file_name, THUMBNAIL)
    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}
    lines = "".join(f"{digest}  {name}\n" for name, digest in digests.items())
    (folder / "SHA256SUMS").write_text(lines, encoding="utf-8", newline="\n")
    return digests


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else HERE
    for name, digest in write_sample(folder).items():
        print(f"{digest}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
