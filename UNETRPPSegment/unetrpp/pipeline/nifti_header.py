"""Check a NIfTI file's own header and voxels for what ITK's reader would repair or hide without a word.

ITK's NIfTI reader keeps going where the header is inconsistent, and each repair changes the geometry,
so the mask lands elsewhere and the run still exits 0:

* a voxel size (``pixdim[1..3]``) of 0 or NaN becomes 1 mm, a negative one flips that axis;
* when the qform and the sform disagree it takes one of them, or a mix of both;
* NaN and infinite voxels of a float image become 0, so the NaN check after reading never sees them;
* a file cut short gets its missing voxels filled with zeros.

So the header is read here, byte by byte (NIfTI-1 and NIfTI-2, either byte order), before ITK reads the
file: a truncated file, a non-positive voxel size and non-finite voxels are refused in one line. After
ITK has read it, :func:`qform_sform_warning` compares ITK's geometry with both transforms: when they
disagree it says which one was used, and refuses when ITK's matches neither.
"""

from __future__ import annotations

import gzip
import itertools
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from unetrpp.errors import InputImageError

__all__ = ["NiftiHeader", "read_nifti_header", "check_nifti_file", "qform_sform_warning"]

_NIFTI2_HEADER_BYTES = 540
_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype code -> numpy type (without byte order)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_CHUNK_BYTES = 1 << 24
# Two geometries are the same when no corner of the image moves by more than this share of a voxel.
_SAME_GEOMETRY_VOXELS = 0.1


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1 or NIfTI-2 header that decide the voxel grid and the data's size."""

    endian: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: int
    qform_code: int
    sform_code: int
    quatern_bcd: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srow: tuple[tuple[float, ...], ...]

    @property
    def spatial_axes(self) -> int:
        return min(int(self.dims[0]), 3)

    @property
    def data_bytes(self) -> int:
        voxels = int(np.prod([max(int(d), 1) for d in self.dims[1 : self.dims[0] + 1]], dtype=np.int64))
        return voxels * self.bitpix // 8

    def qform_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 matrix, origin) of the qform in RAS (the NIfTI standard's method 2)."""
        b, c, d = self.quatern_bcd
        a = float(np.sqrt(max(1.0 - (b * b + c * c + d * d), 0.0)))
        rotation = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        scales = np.array([self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac])
        return rotation * scales, np.array(self.qoffset, dtype=float)

    def sform_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 matrix, origin) of the sform in RAS (method 3)."""
        rows = np.array(self.srow, dtype=float)
        return rows[:, :3], rows[:, 3]


def read_nifti_header(header: bytes) -> NiftiHeader | None:
    """Parse the first 540 bytes of a file as a NIfTI-1 or NIfTI-2 header; None if it is neither."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            fields = dict(
                datatype=struct.unpack(endian + "h", header[70:72])[0],
                bitpix=struct.unpack(endian + "h", header[72:74])[0],
                dims=struct.unpack(endian + "8h", header[40:56]),
                pixdim=struct.unpack(endian + "8f", header[76:108]),
                vox_offset=int(struct.unpack(endian + "f", header[108:112])[0]),
                qform_code=struct.unpack(endian + "h", header[252:254])[0],
                sform_code=struct.unpack(endian + "h", header[254:256])[0],
                quatern_bcd=struct.unpack(endian + "3f", header[256:268]),
                qoffset=struct.unpack(endian + "3f", header[268:280]),
                srow=tuple(struct.unpack_from(endian + "4f", header, 280 + 16 * r) for r in range(3)),
            )
        elif len(header) >= _NIFTI2_HEADER_BYTES and struct.unpack(endian + "i", header[:4])[0] == 540:
            fields = dict(
                datatype=struct.unpack(endian + "h", header[12:14])[0],
                bitpix=struct.unpack(endian + "h", header[14:16])[0],
                dims=struct.unpack(endian + "8q", header[16:80]),
                pixdim=struct.unpack(endian + "8d", header[104:168]),
                vox_offset=struct.unpack(endian + "q", header[168:176])[0],
                qform_code=struct.unpack(endian + "i", header[344:348])[0],
                sform_code=struct.unpack(endian + "i", header[348:352])[0],
                quatern_bcd=struct.unpack(endian + "3d", header[352:376]),
                qoffset=struct.unpack(endian + "3d", header[376:400]),
                srow=tuple(struct.unpack_from(endian + "4d", header, 400 + 32 * r) for r in range(3)),
            )
        else:
            continue
        if not 1 <= fields["dims"][0] <= 7 or fields["bitpix"] <= 0:
            return None
        fields["vox_offset"] = max(int(fields["vox_offset"]), 0)
        return NiftiHeader(endian=endian, **fields)
    return None


def check_nifti_file(path: Path) -> NiftiHeader | None:
    """Refuse a NIfTI file that is truncated, has a non-positive or NaN voxel size, or non-finite voxels.

    Returns:
        Its header, or None when the file has no NIfTI header this module knows (SimpleITK judges it).
    """
    try:
        with _open_maybe_gzip(path) as stream:
            raw = stream.read(_NIFTI2_HEADER_BYTES)
            header = read_nifti_header(raw)
            if header is None:
                return None
            _check_voxel_size(path, header)
            available, bad = _scan_data(stream, raw, header)
    except (OSError, EOFError, zlib.error) as error:
        raise InputImageError(f"cannot read {path}: the compressed data is damaged or cut short") from error
    expected = header.vox_offset + header.data_bytes
    if available < expected:
        raise InputImageError(
            f"cannot read {path}: the file is truncated ({available} of {expected} bytes); copy it again"
        )
    if bad:
        raise InputImageError(f"{path} has {bad} NaN or infinite voxels; replace them before segmenting")
    return header


def qform_sform_warning(path: Path, header: NiftiHeader, image: sitk.Image) -> str | None:
    """When the header's qform and sform disagree: one line naming the one ITK used, else None.

    Raises:
        InputImageError: they disagree and ITK's geometry matches neither (it mixed the two).
    """
    if header.qform_code <= 0 or header.sform_code <= 0 or image.GetDimension() < 3:
        return None
    size = image.GetSize()[:3]
    qform, sform = header.qform_affine(), header.sform_affine()
    tolerance = _SAME_GEOMETRY_VOXELS * min(header.pixdim[1:4])
    apart = _corner_distance(size, qform, sform)
    if apart <= tolerance:
        return None
    spacing = np.array(image.GetSpacing()[:3])
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)[:3, :3]
    read = (_RAS_TO_LPS @ direction @ np.diag(spacing), _RAS_TO_LPS @ np.array(image.GetOrigin()[:3]))
    forms = (("qform", qform), ("sform", sform))
    used = [name for name, form in forms if _corner_distance(size, form, read) <= tolerance]
    if not used:
        raise InputImageError(
            f"{path}: the NIfTI qform and sform disagree (by up to {apart:.3g} mm) and ITK reads a geometry "
            "that matches neither; fix the header (set qform_code or sform_code of the wrong one to 0)"
        )
    origin = ", ".join(f"{v:.4g}" for v in image.GetOrigin()[:3])
    return (
        f"{path}: the NIfTI qform and sform disagree (by up to {apart:.3g} mm); read with the {used[0]}'s "
        f"geometry (spacing {', '.join(f'{v:.4g}' for v in spacing)} mm, LPS origin {origin} mm): check "
        "that the mask lands where it should"
    )


def _check_voxel_size(path: Path, header: NiftiHeader) -> None:
    for axis in range(1, header.spatial_axes + 1):
        size = header.pixdim[axis]
        if not np.isfinite(size) or size <= 0:
            raise InputImageError(
                f"{path} has voxel size pixdim[{axis}] = {size:g} in its NIfTI header, where a positive "
                "number is needed (ITK would silently use 1 mm or flip the axis); fix the header"
            )


def _scan_data(stream: BinaryIO, raw: bytes, header: NiftiHeader) -> tuple[int, int]:
    """(bytes in the file, non-finite float voxels in its data), reading it once in chunks."""
    available = len(raw)
    kind = _FLOAT_TYPES.get(header.datatype)
    dtype = np.dtype(header.endian + kind) if kind else None
    pending = raw[header.vox_offset :] if len(raw) > header.vox_offset else b""
    skip = max(header.vox_offset - len(raw), 0)
    bad = 0
    while chunk := stream.read(_CHUNK_BYTES):
        available += len(chunk)
        if skip:
            taken = min(skip, len(chunk))
            chunk, skip = chunk[taken:], skip - taken
        pending += chunk
        if dtype is not None:
            usable = len(pending) - len(pending) % dtype.itemsize
            values = np.frombuffer(pending[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            pending = pending[usable:]
        else:
            pending = b""
    return available, bad


Affine = tuple[np.ndarray, np.ndarray]  # (3x3 matrix, origin)


def _corner_distance(size: tuple[int, ...], first: Affine, second: Affine) -> float:
    """The largest distance (mm) between where two affines put the image's 8 corner voxels."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in size[:3]])), dtype=float)
    a = corners @ first[0].T + first[1]
    b = corners @ second[0].T + second[1]
    return float(np.linalg.norm(a - b, axis=1).max())


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")  # type: ignore[return-value]
