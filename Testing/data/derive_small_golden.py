"""Derive ``small_golden_weights.pt`` and ``small_golden_io.pt`` from the reference's ``small_golden.pt``.

The reference file (18 MB, kept outside the repository in the project's ``shared/fixtures/unetrpp_official``)
holds a config, a state_dict, one input and the three eval-mode outputs of the reference network. The
full-resolution output alone is 8 MB, more than the comparison needs, so this script writes two files
into ``fixtures/unetrpp_official`` (two, so that each stays far below the repository's 10 MB per file):

* ``small_golden_weights.pt``: ``config`` and ``state_dict`` exactly as stored (the state_dict's strided
  views and its shared E/F tensor keep their storages, so they cost no more than in the original). It is
  a checkpoint-like dict with a ``state_dict`` key, so the model loader can read it as an official file.
* ``small_golden_io.pt``: ``input`` exactly as stored; both deep-supervision outputs whole
  (``outputs_deep_supervision``, reference order);
* of the full-resolution output (1, 2, 64, 128, 128), the voxels on a fixed grid of slice indices:
  ``SAMPLES_PER_AXIS`` evenly spread indices along each spatial axis, first and last included, every
  class channel (``outputs_full_resolution_sample``; its indices in ``sample_index``, the full shape in
  ``full_resolution_shape``).

Values are copied, never recomputed. The sampled tensor is a fresh contiguous copy: saving a view would
store the whole 8 MB storage behind it.

Run from anywhere: ``python3 Testing/data/derive_small_golden.py [--source PATH] [--output-dir DIR]``.
Rerun with the same torch version, it writes the same bytes (``SHA256SUMS`` beside this script).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCE = DATA_DIR.parents[2] / "shared" / "fixtures" / "unetrpp_official" / "small_golden.pt"
DEFAULT_OUTPUT_DIR = DATA_DIR / "fixtures" / "unetrpp_official"
WEIGHTS_NAME = "small_golden_weights.pt"
IO_NAME = "small_golden_io.pt"
SOURCE_SHA256 = "e34a4b2644aeaba98bc5606a9505eb10873a6f6089a6e496d7b23ee0d8bbdb00"
SAMPLES_PER_AXIS = (16, 32, 32)  # z, y, x of the full-resolution output


def sample_index(shape_zyx: tuple[int, ...]) -> list[list[int]]:
    """Evenly spread indices along each spatial axis, both ends included."""
    index = []
    for size, count in zip(shape_zyx, SAMPLES_PER_AXIS):
        picks = torch.linspace(0, size - 1, count).round().long().tolist()
        if len(set(picks)) != len(picks):
            raise ValueError(f"{count} distinct samples do not fit an axis of {size}")
        index.append(picks)
    return index


def take_sample(full: torch.Tensor, index: list[list[int]]) -> torch.Tensor:
    """``full[:, :, z][:, :, :, y][..., x]`` for the index lists of the three spatial axes."""
    for axis, picks in enumerate(index, start=2):
        full = full.index_select(axis, torch.tensor(picks, dtype=torch.long))
    return full.contiguous().clone()


def derive(source: Path, output_dir: Path) -> None:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: SHA256 {digest}, expected {SOURCE_SHA256} (not the reference file)")
    golden = torch.load(source, map_location="cpu", weights_only=True)
    full, *deep = golden["outputs"]
    index = sample_index(tuple(full.shape[2:]))
    origin = {"file": "small_golden.pt", "sha256": SOURCE_SHA256}
    weights = {"config": golden["config"], "state_dict": golden["state_dict"], "derived_from": origin}
    io = {
        "input": golden["input"],
        "outputs_deep_supervision": deep,
        "outputs_full_resolution_sample": take_sample(full, index),
        "sample_index": index,
        "full_resolution_shape": list(full.shape),
        "derived_from": origin,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, content in ((WEIGHTS_NAME, weights), (IO_NAME, io)):
        path = output_dir / name  # torch.save names the archive after the file: keep these names
        torch.save(content, path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    args = parser.parse_args()
    derive(args.source, args.output_dir)


if __name__ == "__main__":
    main()
