"""Synthetic CT-like abdomen phantoms with ground-truth label maps, for tests, demos and the `demo` model.

Each phantom is built in patient coordinates (DICOM/ITK LPS: +x towards the patient's left, +y
posterior, +z superior) so that left and right mean something: the liver sits on the patient's right,
the spleen on the left, the kidneys on both sides behind, the aorta in front of the spine slightly left
and the inferior vena cava in front of the spine on the right. Organs are deformed ellipsoids (a
tube along a curve for the pancreas) with distinct but overlapping Hounsfield units plus noise, inside a
body outline of subcutaneous fat, a muscle wall, a spine and unlabelled distractors (psoas muscles,
bowel loops). Label values follow the BTCV order used by the Synapse model (1 spleen, 2 right kidney,
3 left kidney, 4 gallbladder, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 11 pancreas).

The voxel grid is random within :class:`PhantomOptions` (spacing, storage orientation, origin), so a
phantom exercises the pipeline's geometry handling too. Everything derives from one integer seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from unetrpp.train.phantom_canvas import AIR_HU, Canvas, blob_mask, random_rotation, tube_mask

__all__ = ["PHANTOM_LABELS", "PhantomOptions", "Phantom", "generate_phantom"]

# (BTCV label value, structure name) of every labelled phantom structure.
PHANTOM_LABELS: tuple[tuple[int, str], ...] = (
    (1, "spleen"),
    (2, "right kidney"),
    (3, "left kidney"),
    (4, "gallbladder"),
    (6, "liver"),
    (7, "stomach"),
    (8, "aorta"),
    (9, "inferior vena cava"),
    (11, "pancreas"),
)

_SPLEEN, _RIGHT_KIDNEY, _LEFT_KIDNEY, _GALLBLADDER, _LIVER, _STOMACH, _AORTA, _IVC, _PANCREAS = (
    value for value, _ in PHANTOM_LABELS
)

# Storage orientations (sitk.DICOMOrient codes: the direction each index axis increases towards).
_ORIENTATIONS = ("LPS", "RAS", "LAS", "RPS", "LPI", "RAI", "RPI", "LAI")


@dataclass(frozen=True)
class PhantomOptions:
    """Random ranges a phantom is drawn from (uniform unless said otherwise).

    Attributes:
        spacing_xy_mm: in-plane spacing range (mm).
        spacing_z_mm: slice spacing range (mm).
        orientations: storage orientations to pick from (3-letter DICOM codes).
        noise_sd_hu: range of the standard deviation of the Gaussian image noise (HU).
        scale: body size factor (1.0 is an adult-sized abdomen; tests use smaller, coarser phantoms).
    """

    spacing_xy_mm: tuple[float, float] = (0.7, 1.0)
    spacing_z_mm: tuple[float, float] = (2.0, 5.0)
    orientations: tuple[str, ...] = _ORIENTATIONS
    noise_sd_hu: tuple[float, float] = (8.0, 20.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("spacing_xy_mm", "spacing_z_mm", "noise_sd_hu"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(
                    f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}"
                )
        if min(self.spacing_xy_mm[0], self.spacing_z_mm[0]) <= 0:
            raise ValueError("phantom spacing must be positive")
        if not self.orientations:
            raise ValueError("give at least one storage orientation")
        if not 0.2 <= self.scale <= 2.0:
            raise ValueError(f"scale must lie in [0.2, 2.0], got {self.scale}")


@dataclass(frozen=True)
class Phantom:
    """One generated case.

    Attributes:
        image: CT-like volume in HU (int16) on a random grid.
        label_map: ground truth (uint8, BTCV values of :data:`PHANTOM_LABELS`) on the same grid.
        seed: the seed it was generated from.
        orientation: the storage orientation code of its grid.
    """

    image: sitk.Image
    label_map: sitk.Image
    seed: int
    orientation: str


def _paint_body(canvas: Canvas, rng: np.random.Generator, half_x: float, half_y: float) -> np.ndarray:
    """Fat, muscle wall and visceral fat; returns the (z, y, x) mask of the abdominal cavity."""
    _, x, y, z = canvas.block(canvas.origin_xyz, canvas.origin_xyz + 1e9)
    angle = np.arctan2(y / half_y, x / half_x)
    outline = (
        1.0 + 0.04 * np.cos(2 * angle + rng.uniform(0, 6.3)) + 0.03 * np.cos(3 * angle + rng.uniform(0, 6.3))
    )
    # The back is flatter than the belly; the outline narrows slowly towards the pelvis.
    taper = 1.0 + 0.04 * z / 100.0
    radius = np.sqrt((x / half_x) ** 2 + (y / half_y) ** 2) / (outline * taper)
    mean_half = (half_x + half_y) / 2
    fat_mm, muscle_mm = rng.uniform(8, 25), rng.uniform(6, 12)
    body = radius < 1.0
    muscle = radius < 1.0 - fat_mm / mean_half
    cavity = radius < 1.0 - (fat_mm + muscle_mm) / mean_half
    full = (slice(None),) * 3
    canvas.paint(full, np.broadcast_to(body, canvas.shape_zyx), rng.uniform(-110, -90), None)
    canvas.paint(full, np.broadcast_to(muscle, canvas.shape_zyx), rng.uniform(40, 55), None)
    canvas.paint(full, np.broadcast_to(cavity, canvas.shape_zyx), rng.uniform(-100, -80), None)
    return np.broadcast_to(cavity, canvas.shape_zyx)


def _paint_spine(canvas: Canvas, rng: np.random.Generator, spine_y: float, radius_mm: float) -> None:
    """Vertebral bodies (cortical shell, cancellous core, discs) and the posterior elements."""
    found = canvas.block(
        np.array([-radius_mm - 30, spine_y - radius_mm - 2, -1e9]),
        np.array([radius_mm + 30, spine_y + radius_mm + 45, 1e9]),
    )
    index, x, y, z = found
    in_plane = np.sqrt(x**2 + (y - spine_y) ** 2)
    phase = rng.uniform(0, 30)
    disc = ((z - phase) % 30.0) < 5.0
    vertebra = np.broadcast_to(in_plane < radius_mm, disc.shape[:1] + in_plane.shape[1:])
    canvas.paint(index, vertebra & disc, rng.uniform(70, 90), 0)
    canvas.paint(index, vertebra & ~disc, rng.uniform(700, 1000), 0)
    canvas.paint(
        index, np.broadcast_to(in_plane < radius_mm - 3, vertebra.shape) & ~disc, rng.uniform(220, 350), 0
    )
    canal_y = spine_y + radius_mm + 8
    posterior = ((x / 13) ** 2 + ((y - canal_y - 6) / 14) ** 2) < 1
    canal = (x**2 + (y - canal_y) ** 2) < 7.5**2
    shape = vertebra.shape
    canvas.paint(index, np.broadcast_to(posterior & ~canal, shape) & ~disc, rng.uniform(450, 700), 0)
    canvas.paint(index, np.broadcast_to(canal, shape), rng.uniform(5, 20), 0)


def _grid(rng: np.random.Generator, options: PhantomOptions, half_x: float, half_y: float, half_z: float):
    spacing_xy = rng.uniform(*options.spacing_xy_mm)
    spacing_xyz = np.array([spacing_xy, spacing_xy, rng.uniform(*options.spacing_z_mm)])
    extent_xyz = np.array([2 * half_x + 30 * options.scale, 2 * half_y + 40 * options.scale, 2 * half_z])
    size_xyz = np.maximum(np.ceil(extent_xyz / spacing_xyz).astype(int), 8)
    # Centre the body in the field of view up to a small random shift (table position, centring).
    origin_xyz = -(size_xyz - 1) * spacing_xyz / 2 + rng.uniform(-8, 8, size=3) * np.array([1, 1, 0])
    return spacing_xyz, size_xyz, origin_xyz


def generate_phantom(seed: int, options: PhantomOptions = PhantomOptions()) -> Phantom:
    """Generate one abdomen phantom and its truth; the same seed always gives the same phantom.

    Args:
        seed: any non-negative integer.
        options: random ranges (spacing, orientations, noise, size).

    Returns:
        :class:`Phantom` with an int16 HU image and a uint8 label map on the same grid.
    """
    rng = np.random.default_rng(seed)
    s = options.scale
    half_x, half_y, half_z = rng.uniform(135, 165) * s, rng.uniform(95, 118) * s, rng.uniform(65, 85) * s
    spacing_xyz, size_xyz, origin_xyz = _grid(rng, options, half_x, half_y, half_z)
    canvas = Canvas(tuple(int(v) for v in size_xyz[::-1]), spacing_xyz, origin_xyz)
    cavity = _paint_body(canvas, rng, half_x, half_y)

    spine_radius = rng.uniform(15, 19) * s
    spine_y = 0.45 * half_y

    def organ(label, centre, semi, degrees, hu, wobble=0.12, core=None):
        rotation = random_rotation(rng, degrees)
        index, mask = blob_mask(
            canvas, rng, np.asarray(centre, float), np.asarray(semi, float) * s, rotation, wobble
        )
        if index is None:
            return
        mask &= cavity[index]
        canvas.paint(index, mask, hu, label)
        if core is not None:  # an inner region with another density (renal sinus, gastric content)
            inner_index, inner = blob_mask(
                canvas, rng, np.asarray(centre, float), np.asarray(semi, float) * s * core[0], rotation, 0.05
            )
            if inner_index is not None:
                canvas.paint(inner_index, inner & (canvas.labels[inner_index] == label), core[1], label)

    # Unlabelled distractors first: psoas muscles and bowel loops in the lower, anterior abdomen.
    for side in (-1, 1):
        organ(
            None,
            (side * (spine_radius + 20 * s), spine_y + 2, -0.3 * half_z),
            (15, 18, 0.9 * half_z / s),
            (4, 4, 10),
            rng.uniform(45, 60),
        )
    for _ in range(int(rng.integers(4, 8))):
        centre = (
            rng.uniform(-0.6, 0.6) * half_x,
            rng.uniform(-0.7, 0.0) * half_y,
            rng.uniform(-1.0, -0.1) * half_z,
        )
        gas = rng.random() < 0.4
        organ(
            None,
            centre,
            rng.uniform(10, 25, size=3),
            (40, 40, 90),
            rng.uniform(-800, -600) if gas else rng.uniform(20, 60),
        )

    # Labelled organs, most to least overwritable (a later organ wins where two overlap).
    liver_centre = (-0.42 * half_x, -0.05 * half_y, 0.35 * half_z)
    organ(
        _LIVER,
        liver_centre,
        (0.42 * half_x / s, 0.62 * half_y / s, 0.6 * half_z / s),
        (8, 8, 15),
        rng.uniform(95, 125),
        0.1,
    )
    organ(
        _STOMACH,
        (0.32 * half_x, -0.35 * half_y, 0.3 * half_z),
        rng.uniform((34, 26, 36), (46, 34, 50)),
        (15, 15, 25),
        rng.uniform(60, 80),
        0.12,
        core=(0.8, rng.uniform(5, 30)),
    )
    organ(
        _SPLEEN,
        (0.62 * half_x, 0.3 * half_y, 0.42 * half_z),
        rng.uniform((18, 38, 36), (24, 48, 48)),
        (10, 10, 35),
        rng.uniform(105, 135),
    )
    organ(
        _GALLBLADDER,
        (-0.3 * half_x, -0.45 * half_y, 0.02 * half_z),
        rng.uniform((11, 11, 22), (16, 16, 30)),
        (25, 25, 25),
        rng.uniform(0, 25),
        0.08,
    )
    aorta_x, aorta_y = rng.uniform(8, 16) * s, spine_y - spine_radius - 14 * s
    pancreas = (
        np.array(
            [
                (-0.2 * half_x, aorta_y - 26 * s, -0.1 * half_z),
                (0.0, aorta_y - 28 * s, 0.0),
                (0.25 * half_x, aorta_y - 18 * s, 0.08 * half_z),
                (0.48 * half_x, 0.12 * half_y, 0.18 * half_z),
            ]
        )
        + rng.uniform(-5, 5, size=(4, 3)) * s
    )
    radii = np.array([rng.uniform(12, 15), rng.uniform(9, 12), rng.uniform(8, 11), rng.uniform(7, 10)]) * s
    index, mask = tube_mask(canvas, pancreas, radii)
    if index is not None:
        canvas.paint(index, mask & cavity[index], rng.uniform(80, 110), _PANCREAS)
    kidney_hu = rng.uniform(150, 200)
    for label, side, z in ((_RIGHT_KIDNEY, -1, -0.18), (_LEFT_KIDNEY, 1, -0.05)):
        centre = (side * (spine_radius + 48 * s), spine_y - 8 * s, (z + rng.uniform(-0.08, 0.08)) * half_z)
        organ(
            label,
            centre,
            rng.uniform((20, 24, 40), (26, 30, 52)),
            (10, 10, 25),
            kidney_hu,
            0.08,
            core=(0.45, rng.uniform(20, 45)),
        )
    # The great vessels: straight tubes with a slight tilt, painted over everything but the spine.
    for label, x, radius, hu in (
        (_AORTA, aorta_x, rng.uniform(9, 12), rng.uniform(150, 220)),
        (_IVC, -rng.uniform(18, 26) * s, rng.uniform(9, 12), rng.uniform(100, 140)),
    ):
        y = aorta_y if label == _AORTA else spine_y - spine_radius - 12 * s
        ends = np.array(
            [(x, y, -half_z * 1.2), (x + rng.uniform(-5, 5), y + rng.uniform(-5, 5), half_z * 1.2)]
        )
        index, mask = tube_mask(canvas, ends, np.array([radius, radius]) * s)
        canvas.paint(index, mask & cavity[index], hu, label)
    _paint_spine(canvas, rng, spine_y, spine_radius)

    noise_sd = rng.uniform(*options.noise_sd_hu)
    hu = canvas.hu + rng.normal(0.0, noise_sd, size=canvas.shape_zyx).astype(np.float32)
    hu[canvas.hu <= AIR_HU] = AIR_HU  # air outside the body stays clean, as on a real scanner's FOV edge
    image = sitk.GetImageFromArray(np.clip(np.rint(hu), -1024, 3071).astype(np.int16))
    label_map = sitk.GetImageFromArray(canvas.labels)
    for item in (image, label_map):
        item.SetSpacing(tuple(float(v) for v in spacing_xyz))
        item.SetOrigin(tuple(float(v) for v in origin_xyz))
    orientation = str(rng.choice(options.orientations))
    return Phantom(
        sitk.DICOMOrient(image, orientation), sitk.DICOMOrient(label_map, orientation), seed, orientation
    )
