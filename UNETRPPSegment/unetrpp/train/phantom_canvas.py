"""Painting primitives for the phantoms: an LPS-aligned voxel canvas, deformed ellipsoids and tubes.

Coordinates are physical millimetres (LPS); masks are computed only inside each shape's bounding box,
so a phantom of several million voxels paints in about a second.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Canvas", "random_rotation", "blob_mask", "tube_mask", "AIR_HU"]

AIR_HU = -1000.0


class Canvas:
    """An LPS-aligned voxel grid being painted: HU array, label array, and physical coordinates."""

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_xyz: np.ndarray, origin_xyz: np.ndarray):
        self.shape_zyx = shape_zyx
        self.spacing_xyz = spacing_xyz
        self.origin_xyz = origin_xyz
        self.hu = np.full(shape_zyx, AIR_HU, dtype=np.float32)
        self.labels = np.zeros(shape_zyx, dtype=np.uint8)

    def block(self, low_xyz: np.ndarray, high_xyz: np.ndarray):
        """Index slices and physical coordinate arrays (z, y, x broadcastable) of a bounding box."""
        size_xyz = np.array(self.shape_zyx[::-1])
        start = np.clip(np.floor((low_xyz - self.origin_xyz) / self.spacing_xyz).astype(int), 0, size_xyz)
        stop = np.clip(np.ceil((high_xyz - self.origin_xyz) / self.spacing_xyz).astype(int) + 1, 0, size_xyz)
        if np.any(stop <= start):
            return None
        axes = [self.origin_xyz[a] + self.spacing_xyz[a] * np.arange(start[a], stop[a]) for a in range(3)]
        x = axes[0].astype(np.float32)[None, None, :]
        y = axes[1].astype(np.float32)[None, :, None]
        z = axes[2].astype(np.float32)[:, None, None]
        index = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
        return index, x, y, z

    def paint(self, index, mask: np.ndarray, hu: float | np.ndarray, label: int | None) -> None:
        hu_view = self.hu[index]
        if isinstance(hu, np.ndarray):
            hu_view[mask] = hu[mask]
        else:
            hu_view[mask] = hu
        if label is not None:
            self.labels[index][mask] = label


def random_rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> np.ndarray:
    """Random rotation matrix from small angles about x, y and z (degrees at most as given)."""
    ax, ay, az = (math.radians(rng.uniform(-m, m)) for m in max_degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def blob_mask(
    canvas: Canvas,
    rng: np.random.Generator,
    centre_xyz: np.ndarray,
    semi_axes_mm: np.ndarray,
    rotation: np.ndarray,
    wobble: float = 0.12,
):
    """Mask of a deformed ellipsoid: ``|u|^2 (1 + sum of low-frequency sines) < 1`` in its own frame."""
    reach = semi_axes_mm.max() * (1.0 + 2 * wobble)
    found = canvas.block(centre_xyz - reach, centre_xyz + reach)
    if found is None:
        return None, None
    index, x, y, z = found
    dx, dy, dz = x - centre_xyz[0], y - centre_xyz[1], z - centre_xyz[2]
    # u = R^T (p - c) / semi_axes
    u = [
        (rotation[0, k] * dx + rotation[1, k] * dy + rotation[2, k] * dz) / semi_axes_mm[k] for k in range(3)
    ]
    radius2 = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    factor = np.ones_like(radius2)
    for _ in range(3):
        direction = rng.normal(size=3)
        direction *= rng.uniform(1.5, 3.0) / np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * math.pi)
        factor = factor + wobble / 3 * 2 * np.sin(
            direction[0] * u[0] + direction[1] * u[1] + direction[2] * u[2] + phase
        )
    return index, radius2 * factor < 1.0


def tube_mask(canvas: Canvas, points_xyz: np.ndarray, radii_mm: np.ndarray):
    """Mask of the union of capsules along a polyline (radius interpolated along each segment)."""
    reach = radii_mm.max() + 1.0
    found = canvas.block(points_xyz.min(axis=0) - reach, points_xyz.max(axis=0) + reach)
    if found is None:
        return None, None
    index, x, y, z = found
    inside = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for start, stop, r0, r1 in zip(points_xyz[:-1], points_xyz[1:], radii_mm[:-1], radii_mm[1:]):
        segment = stop - start
        length2 = float(segment @ segment)
        t = (
            (x - start[0]) * segment[0] + (y - start[1]) * segment[1] + (z - start[2]) * segment[2]
        ) / length2
        t = np.clip(t, 0.0, 1.0)
        distance2 = (x - start[0] - t * segment[0]) ** 2 + (y - start[1] - t * segment[1]) ** 2
        distance2 = distance2 + (z - start[2] - t * segment[2]) ** 2
        inside |= distance2 < (r0 + t * (r1 - r0)) ** 2
    return index, inside
