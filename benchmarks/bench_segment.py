"""Time and compare UNETR++ CT segmentation: the reference way against this project's pipeline.

One run, one synthetic CT-like volume (512x512x150 voxels at 0.76x0.76x3 mm: a body outline with air
around it, soft tissue, organs, bone and lung), the synapse network with random but seeded weights,
and four configurations, each in a fresh subprocess so that peak memory is its own:

* ``reference``: the reference way: nnU-Net v1 preprocessing written with skimage (for this CT: every
  slice resized in-plane to (3.0, 0.758, 0.758) mm with cubic splines; CT clip + z-score), MONAI
  ``sliding_window_inference`` in float32 (overlap 0.5, Gaussian weights) on the network as built,
  softmax of the whole volume, every class resampled back (linear), argmax, NIfTI written;
* ``default``: ``unetrpp.segment`` with its default options (on a CPU with bf16 instructions: bf16);
* ``fp32``: the defaults with ``precision="fp32"``: what a CPU without bf16 instructions gets;
* ``fast``: the defaults with ``overlap=0.25`` (MONAI's default overlap): about half the tiles.

``--case filled`` times a body-filled 512x512x64 CT instead, stored on the network's grid (3 x 0.758 x
0.758 mm, so that nothing is resampled), where skipping air saves next to nothing: ``default`` against
``lean``, the least a reference can do (read, CT clip and z-score, MONAI's sliding window in float32
on the network as built, argmax), so the ratio is the network's and the pipeline's own.

Reported per configuration: wall seconds per stage (read, preprocess, inference, resample back,
write), process CPU seconds, peak resident memory, tiles run through the network and the network's
achieved GFLOP/s against fp32 and bf16 2048^2 matrix-product peaks measured in the same run.

Random weights say nothing about agreement: their class scores are nearly tied, so any change of
arithmetic flips argmaxes, and they label the air around the body with arbitrary classes. Agreement is
therefore measured with trained weights: the bundled ``demo`` UNETR++ (trained on synthetic abdomen
phantoms) on its five held-out phantoms, each placed in a 480 mm field of air like a scanner's, run the
reference way and with each configuration; voxel agreement and per-structure Dice against the reference
and Dice against the phantoms' truth. (The random-weight agreement is still listed, for the record.)

A table is printed and written into ``benchmarks/RESULTS.md`` (between the generated-section markers;
text outside them is kept)::

    python benchmarks/bench_segment.py            # full size: several minutes on 2 cores
    python benchmarks/bench_segment.py --quick    # small volume and network: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIPELINE_OPTIONS = {  # configuration -> SegmentOptions keywords on top of device="cpu"
    "default": {},
    "fp32": {"precision": "fp32"},
    "fast": {"overlap": 0.25},
}
CONFIGS = ("reference", "lean", *PIPELINE_OPTIONS)
TRAINED_SEEDS = (1000, 1001, 1002, 1003, 1004)  # the demo model's held-out phantoms (train_demo.sh)
TRAINED_FIELD_MM = 480.0  # in-plane field of view the tightly framed phantoms are padded to
STAGES = ("read", "preprocess", "inference", "resample", "write")
SEED = 20240601
GENERATED_START = "<!-- bench_segment.py: generated section start -->"
GENERATED_END = "<!-- bench_segment.py: generated section end -->"


@dataclass(frozen=True)
class BenchSize:
    """Volume and network of a run. ``patch_size``/``feature_size`` None: the synapse defaults."""

    name: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    patch_size: tuple[int, int, int] | None = None
    feature_size: int | None = None
    matmul_size: int = 2048
    body_fills_field: bool = False  # the body reaches the field's edges (only its corners are air)

    def network_overrides(self) -> dict:
        overrides: dict = {"deep_supervision": False}
        if self.patch_size is not None:
            overrides["patch_size"] = self.patch_size
        if self.feature_size is not None:
            overrides["feature_size"] = self.feature_size
        return overrides


FULL = BenchSize("full", (150, 512, 512), (3.0, 0.76, 0.76))
QUICK = BenchSize("quick", (12, 64, 80), (3.0, 0.76, 0.76), (16, 64, 64), 4, 256)
CASE_CONFIGS = {  # --case -> (configurations run by default, the baseline that speed-ups are against)
    "ct": (("reference", *PIPELINE_OPTIONS), "reference"),
    "filled": (("lean", "default"), "lean"),
}


def bench_size(case: str, quick: bool) -> BenchSize:
    """The volume and network of ``--case`` (``--quick``: the small ones). The filled case is stored on
    the synapse plans' grid, so that neither the pipeline nor the lean reference resamples."""
    if case != "filled":
        return QUICK if quick else FULL
    import dataclasses

    from unetrpp.models.registry import find_card

    spacing = find_card("synapse").plans.target_spacing_zyx
    base, name, shape = (QUICK, "quick-filled", (16, 64, 80)) if quick else (FULL, "filled", (64, 512, 512))
    return dataclasses.replace(base, name=name, shape_zyx=shape, spacing_zyx=spacing, body_fills_field=True)


# --------------------------------------------------------------------------------------------------
# Synthetic CT


def make_ct_volume(size: BenchSize, seed: int = SEED) -> np.ndarray:
    """(Z, Y, X) int16 Hounsfield units: air (-1000 HU plus noise) around an elliptical body with fat,
    muscle, liver, spleen, kidneys, aorta, spine and, in the upper slices, lungs (with
    ``size.body_fills_field``, a round body wider than the field: air only in its corners)."""
    rng = np.random.default_rng(seed)
    depth, height, width = size.shape_zyx
    y = (np.arange(height) - height / 2)[:, None] / (height / 2)
    x = (np.arange(width) - width / 2)[None, :] / (width / 2)
    volume = np.empty(size.shape_zyx, dtype=np.int16)

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    for z in range(depth):
        t = z / max(depth - 1, 1)  # 0 at the feet end, 1 at the head end
        body_ry, body_rx = 0.55 + 0.05 * np.sin(3 * t), 0.80 + 0.05 * np.cos(2 * t)
        if size.body_fills_field:
            body_ry = body_rx = 1.2  # air beyond 1.2 half-widths from the centre: 5% of the field
        slice_hu = np.full((height, width), -1000.0)
        body = ellipse(0.05, 0.0, body_ry, body_rx)
        slice_hu[body] = -100.0  # subcutaneous fat
        slice_hu[ellipse(0.05, 0.0, body_ry - 0.08, body_rx - 0.08)] = 40.0  # muscle / soft tissue
        if t > 0.7:  # lungs in the upper slices
            slice_hu[ellipse(0.0, -0.35, 0.35, 0.25)] = -850.0
            slice_hu[ellipse(0.0, 0.35, 0.35, 0.25)] = -850.0
        if 0.35 < t < 0.85:
            slice_hu[ellipse(-0.05, -0.35, 0.30 * (1 - abs(t - 0.6)), 0.30)] = 60.0  # liver (image left)
            slice_hu[ellipse(0.05, 0.45, 0.15, 0.12)] = 50.0  # spleen
        if 0.2 < t < 0.55:
            slice_hu[ellipse(0.30, -0.25, 0.12, 0.08)] = 150.0  # kidneys (contrast)
            slice_hu[ellipse(0.30, 0.25, 0.12, 0.08)] = 150.0
        slice_hu[ellipse(0.15, 0.05, 0.06, 0.05)] = 200.0  # aorta
        slice_hu[ellipse(0.40, 0.0, 0.10, 0.08)] = 700.0  # vertebral body
        # Image noise: 15 HU in the body, 10 HU in the air around it (air stays mostly below the CT
        # normalisation's lower clip, -958 HU, but not every voxel of a tile does).
        slice_hu += rng.normal(0.0, 1.0, size=(height, width)) * np.where(body, 15.0, 10.0)
        volume[z] = np.clip(np.round(slice_hu), -1024, 3071).astype(np.int16)
    return volume


def write_ct_image(path: Path, size: BenchSize) -> np.ndarray:
    """Write the synthetic CT as an uncompressed NRRD in LAS orientation; return its dense voxels."""
    import SimpleITK as sitk

    volume = make_ct_volume(size)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(tuple(reversed(size.spacing_zyx)))
    image.SetOrigin((200.0, 180.0, -300.0))
    # LAS storage (i towards the left, j towards anterior): the synapse card's orientation, so that both
    # pipelines hand the network the same array (the reference ignores orientation, as nnU-Net v1).
    image.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=False)
    return volume > -500


# --------------------------------------------------------------------------------------------------
# Worker: one configuration in its own process


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _build_network(size: BenchSize):
    import torch
    from unetrpp.network import build_network

    torch.manual_seed(SEED)
    return build_network("synapse", **size.network_overrides()).eval()


def _nnunet_resample(
    volume: np.ndarray, new_shape: tuple[int, ...], order: int, axis: int | None
) -> np.ndarray:
    """nnU-Net v1's ``resample_data_or_seg`` for one channel, written with skimage: with a separate
    (low-resolution) axis every slice across it is resized in-plane and the axis itself is sampled by
    nearest neighbour; otherwise the volume is resized in 3D (float64 inside)."""
    from skimage.transform import resize
    from unetrpp.pipeline.preprocess import nearest_indices

    def resized(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return resize(array.astype(np.float64), shape, order=order, mode="edge", anti_aliasing=False)

    if axis is None:
        return resized(volume, new_shape).astype(np.float32)
    moved = np.moveaxis(volume, axis, 0)
    in_plane = tuple(n for a, n in enumerate(new_shape) if a != axis)
    slices = np.stack([resized(plane, in_plane).astype(np.float32) for plane in moved])
    return np.moveaxis(slices[nearest_indices(moved.shape[0], new_shape[axis])], 0, axis)


def _normalize_ct(data: np.ndarray, plans) -> np.ndarray:
    """nnU-Net's CT normalisation: clip to the plans' percentiles, then z-score."""
    normalization = plans.channels[0]
    np.clip(data, normalization.lower_bound, normalization.upper_bound, out=data)
    return (data - normalization.mean) / normalization.sd


def _monai_logits(network, data: np.ndarray):
    """MONAI's sliding window in the network's dtype (float32), overlap 0.5, Gaussian weights (sigma
    1/8, nnU-Net's); (classes, Z, Y, X) logits. Call under ``torch.inference_mode``."""
    import torch
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        torch.from_numpy(data)[None, None],
        roi_size=network.config.patch_size,
        sw_batch_size=1,
        predictor=network,
        overlap=0.5,
        mode="gaussian",
        sigma_scale=0.125,
    )[0]


def _run_reference(network, plans, image_path: Path, out_dir: Path) -> tuple[dict, np.ndarray]:
    """The reference way; returns (wall seconds per stage, label map (Z, Y, X) uint8)."""
    import SimpleITK as sitk
    import torch
    from unetrpp.pipeline.preprocess import separate_axis

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    image = sitk.ReadImage(str(image_path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    seconds["read"] = time.perf_counter() - start

    start = time.perf_counter()
    spacing_zyx = np.array(tuple(reversed(image.GetSpacing())))
    target = np.array(plans.target_spacing_zyx)
    new_shape = tuple(int(n) for n in np.round(spacing_zyx / target * array.shape))
    axis = separate_axis(spacing_zyx, target)
    data = _normalize_ct(_nnunet_resample(array, new_shape, order=3, axis=axis), plans)
    seconds["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    with torch.inference_mode():
        logits = _monai_logits(network, data)
        probabilities = torch.softmax(logits, dim=0).numpy()
        del logits
    seconds["inference"] = time.perf_counter() - start

    start = time.perf_counter()
    restored = np.empty((len(probabilities), *array.shape), dtype=np.float32)
    for channel, scores in enumerate(probabilities):
        restored[channel] = _nnunet_resample(scores, array.shape, order=1, axis=axis)
    del probabilities
    label_map = np.argmax(restored, axis=0).astype(np.uint8)
    del restored
    seconds["resample"] = time.perf_counter() - start

    start = time.perf_counter()
    label_image = sitk.GetImageFromArray(label_map)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(out_dir / "reference_labels.nii.gz"), useCompression=True)
    seconds["write"] = time.perf_counter() - start
    return seconds, label_map


def _run_lean(network, plans, image_path: Path) -> tuple[dict, np.ndarray]:
    """The least a reference can do on an image already on the network's grid: read, CT clip and
    z-score, MONAI's sliding window in float32 on the network as built, argmax (nothing written)."""
    import SimpleITK as sitk
    import torch

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path))).astype(np.float32)
    seconds["read"] = time.perf_counter() - start

    start = time.perf_counter()
    data = _normalize_ct(data, plans)
    seconds["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    with torch.inference_mode():
        label_map = torch.argmax(_monai_logits(network, data), dim=0).to(torch.uint8).numpy()
    seconds["inference"] = time.perf_counter() - start
    return seconds, label_map


def _run_pipeline(
    config: str, network, card, plans, image_path: Path, out_dir: Path
) -> tuple[dict, np.ndarray]:
    """``unetrpp.segment`` with the configuration's options; returns (wall seconds per stage, label map)."""
    import SimpleITK as sitk
    from unetrpp.models.loader import LoadedModel
    from unetrpp.pipeline.predictor import SegmentOptions, segment

    options = SegmentOptions(device="cpu", **PIPELINE_OPTIONS[config])
    model = LoadedModel(network=network, card=card, plans=plans)
    output = out_dir / f"{config}_labels.seg.nrrd"
    if output.exists():
        output.unlink()
    result = segment(str(image_path), model, output, options)
    return dict(result.stage_seconds), sitk.GetArrayFromImage(result.label_map).astype(np.uint8)


def run_worker(config: str, size: BenchSize, work_dir: Path) -> dict:
    """Run one configuration in this process; write ``CONFIG.json`` and ``CONFIG_labels.npy``."""
    import dataclasses

    import psutil
    import torch
    from unetrpp.models.registry import find_card
    from unetrpp.network.openvino_runtime import OpenVINONetwork
    from unetrpp.network.unetr_pp import UNETRPP

    card = find_card("synapse")
    plans = dataclasses.replace(card.plans, patch_size_zyx=size.patch_size or card.plans.patch_size_zyx)
    card = dataclasses.replace(card, plans=plans, patch_size_zyx=plans.patch_size_zyx)
    network = _build_network(size)
    tiles = [0]

    def count_tiles(module, args) -> None:
        # the whole network, whichever engine runs it: torch (the network, its inference copy) or OpenVINO.
        # Tiles run under inference mode (the pipeline's sliding window, the reference's MONAI call); the
        # OpenVINO conversion's calls run under no_grad, and tracing alone would not exclude all of them.
        if isinstance(module, (UNETRPP, OpenVINONetwork)) and torch.is_inference_mode_enabled():
            tiles[0] += int(args[0].shape[0])

    torch.nn.modules.module.register_module_forward_pre_hook(count_tiles)
    baseline_rss = psutil.Process().memory_info().rss
    load_before = os.getloadavg()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    if config == "reference":
        seconds, label_map = _run_reference(network, plans, work_dir / "ct.nrrd", work_dir)
    elif config == "lean":
        seconds, label_map = _run_lean(network, plans, work_dir / "ct.nrrd")
    else:
        seconds, label_map = _run_pipeline(config, network, card, plans, work_dir / "ct.nrrd", work_dir)
    total = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    np.save(work_dir / f"{config}_labels.npy", label_map)
    result = {
        "config": config,
        "size": size.name,
        "stage_seconds": {k: float(seconds.get(k, 0.0)) for k in STAGES},
        "total_seconds": total,
        "cpu_seconds": cpu,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": baseline_rss,
        "tiles_run": tiles[0],
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    (work_dir / f"{config}.json").write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------------------------------
# Main process: machine, peaks, complexity, workers, comparison, report


def matmul_peaks(size: int, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of a size^2 matrix product in float32 and bfloat16."""
    import torch

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2 * size**3 / best / 1e9
    return peaks


def network_complexity(size: BenchSize, variants: bool) -> dict:
    """Parameters and multiply-adds (FLOPs / 2, FlopCounterMode, on the meta device: no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from unetrpp.network import VARIANTS, build_network

    def count(variant: str, **overrides) -> dict:
        with torch.device("meta"):
            network = build_network(variant, **overrides).eval()
            config = network.config
            with FlopCounterMode(display=False) as counter:
                network(torch.zeros(1, config.in_channels, *config.patch_size))
        return {
            "parameters": sum(p.numel() for p in network.parameters()),
            "multiply_adds": counter.get_total_flops() // 2,
            "patch_size": list(config.patch_size),
        }

    result = {"bench_network": count("synapse", **size.network_overrides())}
    if variants:
        result["variants"] = {name: count(name) for name in VARIANTS}
    return result


def machine_description() -> dict:
    import torch

    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0]
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "bf16_instructions": [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def compare(reference: np.ndarray, other: np.ndarray, body: np.ndarray, num_classes: int) -> dict:
    """Voxel agreement (whole volume and inside the body) and Dice per label present in either."""
    from unetrpp.evaluate.metrics import dice_per_label

    same = reference == other
    scores = dice_per_label(other, reference, range(1, num_classes))
    dice = {label: value for label, value in scores if not np.isnan(value)}  # NaN: in neither map
    return {
        "agreement": float(same.mean()),
        "agreement_in_body": float(same[body].mean()),
        "dice": dice,
        "reference_voxels": {int(k): int(v) for k, v in zip(*np.unique(reference, return_counts=True))},
    }


def write_phantom_ct(
    seed: int, orientation: str, path: Path, field_mm: float = TRAINED_FIELD_MM
) -> np.ndarray:
    """Write a held-out phantom of the demo model, stored in ``orientation`` and padded with noisy air
    to a ``field_mm`` square field; return its truth label map (z, y, x) on the same grid."""
    import SimpleITK as sitk
    from unetrpp.train.phantom_canvas import AIR_HU
    from unetrpp.train.phantoms import generate_phantom

    phantom = generate_phantom(seed)
    image = sitk.DICOMOrient(phantom.image, orientation)
    truth = sitk.DICOMOrient(phantom.label_map, orientation)
    pad = [max(0, round((field_mm / image.GetSpacing()[a] - image.GetSize()[a]) / 2)) for a in (0, 1)]
    pad.append(0)
    padded = sitk.ConstantPad(image, pad, pad, AIR_HU)
    array = sitk.GetArrayFromImage(padded).astype(np.float32)
    added = np.ones(array.shape, dtype=bool)
    added[:, pad[1] : pad[1] + image.GetSize()[1], pad[0] : pad[0] + image.GetSize()[0]] = False
    array[added] += np.random.default_rng(seed).normal(0.0, 10.0, int(added.sum()))  # scanner air noise
    written = sitk.GetImageFromArray(np.round(array).astype(np.int16))
    written.CopyInformation(padded)
    sitk.WriteImage(written, str(path), useCompression=False)
    return sitk.GetArrayFromImage(sitk.ConstantPad(truth, pad, pad, 0))


def trained_agreement(seeds: tuple[int, ...], work_dir: Path) -> dict:
    """Every configuration against the reference way with the trained ``demo`` model, per phantom.

    Returns per configuration: voxel agreement and per-structure Dice against the reference (the worst
    phantom of each), and the mean Dice against the truth; and the same truth Dice for the reference.
    """
    from unetrpp.evaluate.metrics import dice_per_label
    from unetrpp.models.loader import load_model
    from unetrpp.train.phantoms import PHANTOM_LABELS

    model = load_model("demo")
    values = [value for value, _ in PHANTOM_LABELS]
    names = dict(PHANTOM_LABELS)
    configs = CASE_CONFIGS["ct"][0]  # the lean reference does not resample: not for phantoms
    results: dict = {config: {"agreement": [], "dice": {}, "truth_dice": []} for config in configs}
    for seed in seeds:
        case_dir = work_dir / f"phantom_{seed}"
        case_dir.mkdir(parents=True, exist_ok=True)
        image_path = case_dir / "ct.nrrd"
        truth = write_phantom_ct(seed, model.card.orientation, image_path)
        _, reference = _run_reference(model.network, model.plans, image_path, case_dir)
        for config in configs:
            if config == "reference":
                labels = reference
            else:
                network, card, plans = model.network, model.card, model.plans
                _, labels = _run_pipeline(config, network, card, plans, image_path, case_dir)
                results[config]["agreement"].append(float((labels == reference).mean()))
                for value, dice in dice_per_label(labels, reference, values):
                    if not np.isnan(dice):
                        results[config]["dice"].setdefault(names[value], []).append(dice)
            truth_dice = [d for _, d in dice_per_label(labels, truth, values) if not np.isnan(d)]
            results[config]["truth_dice"].append(float(np.mean(truth_dice)))
    summary = {}
    for config, result in results.items():
        summary[config] = {
            "truth_dice_mean": float(np.mean(result["truth_dice"])),
            "min_agreement": min(result["agreement"]) if result["agreement"] else None,
            "mean_agreement": float(np.mean(result["agreement"])) if result["agreement"] else None,
            "min_dice": {name: min(d) for name, d in result["dice"].items()},
        }
    return {"seeds": list(seeds), "field_mm": TRAINED_FIELD_MM, "configs": summary}


def _worker_command(config: str, args: argparse.Namespace, work_dir: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--work-dir", str(work_dir)]
    command += ["--case", args.case]
    if args.quick:
        command.append("--quick")
    return command


def _format_report(report: dict) -> str:
    machine, peaks, runs = report["machine"], report["matmul_gflops"], report["runs"]
    baseline = CASE_CONFIGS[report.get("case", "ct")][1]
    lines = [
        f"Run {report['started_utc']} UTC, size `{report['size']}`: volume {report['volume']}, "
        f"{report['tiles_note']}.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
        f"(bf16 instructions: {', '.join(machine['bf16_instructions']) or 'none'}), "
        f"{machine['memory_gb']} GB RAM, "
        f"torch {machine['torch']} ({machine['torch_threads']} threads), Python {machine['python']}. "
        f"Load average at start {report['load_average_start']:.1f} (other jobs on the machine slow "
        "every configuration); compare configurations by their ratios within this run.",
        "",
        f"Matrix-product peak ({report['matmul_size']}^2): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s.",
        "",
        "| configuration | " + " | ".join(STAGES) + f" | total s | speed-up vs {baseline} | CPU s "
        "| CPU-time speed-up "
        "| peak RSS GB "
        "| tiles run | network GFLOP/s | % of fp32 / bf16 peak |",
        "|---|" + "---:|" * (len(STAGES) + 8),
    ]
    reference_total = runs.get(baseline, {}).get("total_seconds")
    reference_cpu = runs.get(baseline, {}).get("cpu_seconds")
    macs = report["complexity"]["bench_network"]["multiply_adds"]
    for config in CONFIGS:
        run = runs.get(config)
        if run is None:
            continue
        gflops = 2 * macs * run["tiles_run"] / max(run["stage_seconds"]["inference"], 1e-9) / 1e9
        speedup = f"{reference_total / run['total_seconds']:.2f}x" if reference_total else "-"
        cpu_speedup = f"{reference_cpu / run['cpu_seconds']:.2f}x" if reference_cpu else "-"
        lines.append(
            f"| {config} ({run['threads']} thread{'s' if run['threads'] > 1 else ''}) | "
            + " | ".join(f"{run['stage_seconds'][s]:.1f}" for s in STAGES)
            + f" | {run['total_seconds']:.1f} | {speedup} | {run['cpu_seconds']:.0f} | {cpu_speedup} "
            f"| {run['peak_rss_bytes'] / 1e9:.2f} | {run['tiles_run']} | {gflops:.0f} "
            f"| {100 * gflops / peaks['fp32']:.0f}% / {100 * gflops / peaks['bf16']:.0f}% |"
        )
    trained = report.get("trained")
    if trained:
        configs, seeds = trained["configs"], trained["seeds"]
        lines += [
            "",
            f"Agreement with trained weights: the `demo` model on {len(seeds)} held-out phantom(s) "
            f"(seeds {', '.join(map(str, seeds))}) in a {trained['field_mm']:.0f} mm field, each run the "
            "reference way and with each configuration. Worst phantom of each column; Dice against the "
            f"truth is the mean over phantoms (reference: {configs['reference']['truth_dice_mean']:.3f}).",
            "",
            "| configuration | voxel agreement (worst / mean) | min structure Dice vs reference "
            "| structures with Dice < 0.99 | mean Dice vs truth |",
            "|---|---:|---:|---|---:|",
        ]
        for config, entry in configs.items():
            if entry["min_agreement"] is None:
                continue
            dice = entry["min_dice"]
            worst = min(dice, key=dice.get)
            low = ", ".join(f"{k}: {v:.3f}" for k, v in dice.items() if v < 0.99) or "none"
            lines.append(
                f"| {config} | {100 * entry['min_agreement']:.3f}% / {100 * entry['mean_agreement']:.3f}% "
                f"| {dice[worst]:.4f} ({worst}) | {low} | {entry['truth_dice_mean']:.3f} |"
            )
    if report["agreement"]:
        lines += [
            "",
            "Random weights, for the record (labels 1-13; Dice over labels present in either map): random "
            "class scores are nearly tied, so these measure arithmetic noise and the air the body mask "
            "skips, not segmentation agreement:",
            "",
            "| configuration | voxel agreement | agreement in body | min Dice (label) "
            "| labels with Dice < 0.99 |",
            "|---|---:|---:|---:|---|",
        ]
        for config, agreement in report["agreement"].items():
            dice = agreement["dice"]
            worst = min(dice, key=dice.get) if dice else None
            low = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(dice.items()) if v < 0.99) or "none"
            worst_text = f"{dice[worst]:.4f} ({worst})" if worst is not None else "-"
            lines.append(
                f"| {config} | {100 * agreement['agreement']:.3f}% "
                f"| {100 * agreement['agreement_in_body']:.3f}% "
                f"| {worst_text} | {low} |"
            )
    complexity = report["complexity"]
    bench = complexity["bench_network"]
    lines += [
        "",
        f"Benchmark network: {bench['parameters']:,} parameters, {bench['multiply_adds'] / 1e9:.2f} G "
        f"multiply-adds per {'x'.join(map(str, bench['patch_size']))} tile (deep supervision off).",
    ]
    if "variants" in complexity:
        lines += [
            "",
            "| variant | patch (z, y, x) | parameters | G multiply-adds per patch |",
            "|---|---|---:|---:|",
        ]
        for name, entry in complexity["variants"].items():
            lines.append(
                f"| {name} | {'x'.join(map(str, entry['patch_size']))} | {entry['parameters']:,} "
                f"| {entry['multiply_adds'] / 1e9:.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_results(path: Path, generated: str, start: str = GENERATED_START, end: str = GENERATED_END) -> None:
    """Replace the generated section between ``start`` and ``end`` of ``path`` (keeping everything around
    it; appended when there is none yet), atomically."""
    block = f"{start}\n{generated}{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _section_markers(case: str) -> tuple[str, str]:
    """Each case has a generated section of its own in RESULTS.md."""
    if case == "ct":
        return GENERATED_START, GENERATED_END
    return (
        GENERATED_START.replace("bench_segment.py", f"bench_segment.py --case {case}"),
        GENERATED_END.replace("bench_segment.py", f"bench_segment.py --case {case}"),
    )


def _results_path(args: argparse.Namespace, out_dir: Path) -> Path:
    if args.results:
        return Path(args.results)
    return out_dir / "RESULTS.md" if args.quick else Path(__file__).with_name("RESULTS.md")


def rewrite_report(args: argparse.Namespace) -> int:
    """Format ``OUT_DIR/results.json`` of an earlier run again (after a change to the report layout)."""
    out_dir = Path(args.out_dir)
    report = json.loads((out_dir / "results.json").read_text())
    for agreement in report["agreement"].values():
        agreement["dice"] = {int(k): v for k, v in agreement["dice"].items()}
    generated = _format_report(report)
    print(generated)
    write_results(_results_path(args, out_dir), generated, *_section_markers(report.get("case", "ct")))
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    size = bench_size(args.case, args.quick)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="unetrpp-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "size": size.name,
        "case": args.case,
        "volume": f"{'x'.join(map(str, reversed(size.shape_zyx)))} voxels (x, y, z) at "
        f"{' x '.join(str(s) for s in reversed(size.spacing_zyx))} mm",
        "load_average_start": os.getloadavg()[0],
        "machine": machine_description(),
        "matmul_size": size.matmul_size,
    }
    report["matmul_gflops"] = matmul_peaks(size.matmul_size)
    report["complexity"] = network_complexity(size, variants=not args.quick)
    body = write_ct_image(out_dir / "ct.nrrd", size)
    configs = args.configs.split(",") if args.configs else CASE_CONFIGS[args.case][0]
    configs = [c.strip() for c in configs if c.strip()]
    environment = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    for config in configs:
        if config not in CONFIGS:
            print(f"unknown configuration {config!r}; use {', '.join(CONFIGS)}", file=sys.stderr)
            return 2
        completed = subprocess.run(_worker_command(config, args, out_dir), env=environment, check=False)
        if completed.returncode:
            print(f"configuration {config} failed with status {completed.returncode}", file=sys.stderr)
            return 1
    runs = {}
    for config in CONFIGS:
        path = out_dir / f"{config}.json"
        if path.exists():
            runs[config] = json.loads(path.read_text())
    report["runs"] = runs
    report["tiles_note"] = "tiles run = forward passes x batch size (constant tiles predicted once)"
    report["agreement"] = {}
    baseline = CASE_CONFIGS[args.case][1]
    if baseline in runs:
        reference = np.load(out_dir / f"{baseline}_labels.npy")
        num_classes = 14
        for config in PIPELINE_OPTIONS:
            if config in runs:
                other = np.load(out_dir / f"{config}_labels.npy")
                report["agreement"][config] = compare(reference, other, body, num_classes)
    if not args.no_trained and args.case == "ct":  # the pipeline's agreement is the same for both cases
        seeds = TRAINED_SEEDS[:1] if args.quick else TRAINED_SEEDS
        report["trained"] = trained_agreement(seeds, out_dir / "trained")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    generated = _format_report(report)
    print(generated)
    results_path = _results_path(args, out_dir)
    write_results(results_path, generated, *_section_markers(args.case))
    print(f"results: {results_path} and {out_dir / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volume and network (smoke run)")
    parser.add_argument(
        "--case",
        choices=tuple(CASE_CONFIGS),
        default="ct",
        help="ct: 512x512x150 with a scanner's air (default); filled: body-filled 512x512x64 against lean",
    )
    parser.add_argument(
        "--configs",
        help=f"comma-separated configurations (of {', '.join(CONFIGS)}; default: the case's own: "
        + "; ".join(f"{case}: {','.join(configs)}" for case, (configs, _) in CASE_CONFIGS.items())
        + ")",
    )
    parser.add_argument(
        "--out-dir", help="folder for the volume, label maps and results.json (default: a temp dir)"
    )
    parser.add_argument(
        "--results", help="Markdown file to write (default: benchmarks/RESULTS.md; --quick: OUT_DIR)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--no-trained", action="store_true", help="skip the agreement run with the trained demo model"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="reformat OUT_DIR/results.json of an earlier run; run nothing",
    )
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, bench_size(args.case, args.quick), Path(args.work_dir))
        return 0
    if args.report_only:
        if not args.out_dir:
            parser.error("--report-only needs --out-dir")
        return rewrite_report(args)
    return run_benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
