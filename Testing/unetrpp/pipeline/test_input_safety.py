"""Nothing silently wrong on the way in (issue 14, review findings F-05 to F-09, F-15, F-16, F-22, F-23,
F-26): every input or model that would have given a wrong or empty result with exit status 0, or a
traceback, is refused in one line or announced with a warning event, before inference where it can be.

The damaged NIfTI headers are real files: SimpleITK writes a good one, and single header fields are
then overwritten at their offsets of the NIfTI-1 standard (pixdim at byte 76, srow_x at 280).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_models import TINY_PATCH_ZYX, ct_plans, tiny_synapse_model
from torch import nn
from unetrpp.errors import CheckpointError, InputImageError, UnetrppError
from unetrpp.events import ProgressEvent, WarningEvent
from unetrpp.models.cards import Plans
from unetrpp.models.loader import LoadedModel
from unetrpp.pipeline.io import read_image
from unetrpp.pipeline.itk_warnings import itk_warnings_captured
from unetrpp.pipeline.modality import modality_warning
from unetrpp.pipeline.predictor import SegmentOptions, segment
from unetrpp.pipeline.sliding_window import _warn_if_many_tiles

DICOM_CT = Path(__file__).resolve().parents[2] / "data/real_inputs/totalseg_example_ct/example_ct_dicom"
SPACING_XYZ = (3.0, 3.0, 4.0)


def _ct_phantom(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), dtype=np.int16, offset=0) -> sitk.Image:
    """A body (40 HU) with an organ (100 HU) in air (-1000 HU), optionally stored + ``offset``."""
    z, y, x = np.mgrid[:12, :24, :28]
    body = ((x - 14) / 12) ** 2 + ((y - 12) / 10) ** 2 < 1
    organ = ((x - 10) / 4) ** 2 + ((y - 12) / 4) ** 2 + ((z - 6) / 4) ** 2 < 1
    array = np.where(body, 40, -1000) + np.where(organ, 60, 0) + offset
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((10.0, 20.0, 30.0))
    image.SetDirection(direction)
    return image


def _plans(mean=40.0, sd=80.0) -> Plans:
    return ct_plans((4.0, 3.0, 3.0), mean=mean, sd=sd)


def _tiny_model(plans: Plans | None = None) -> LoadedModel:
    return tiny_synapse_model(plans or _plans())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from unetrpp.models.checkpoint import save_model

    model = _tiny_model()
    return save_model(tmp_path_factory.mktemp("model") / "tiny.unetrpp", model.network, model.card)


def _nifti(tmp_path: Path, name: str, patches: dict[int, tuple[str, float]]) -> Path:
    """The phantom as a NIfTI-1 file with the header fields at the given byte offsets overwritten."""
    good = tmp_path / "good.nii"
    sitk.WriteImage(_ct_phantom(), str(good))
    raw = bytearray(good.read_bytes())
    for offset, (kind, value) in patches.items():
        struct.pack_into("<" + kind, raw, offset, value)
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    return path


# --- F-05: inconsistent NIfTI headers ------------------------------------------------------------


@pytest.mark.parametrize(
    "axis, value",
    [(1, 0.0), (3, float("nan")), (3, -4.0)],
    ids=["pixdim1-zero", "pixdim3-nan", "pixdim3-neg"],
)
def test_a_nifti_voxel_size_that_itk_would_replace_is_refused_in_one_line(tmp_path, axis, value):
    path = _nifti(tmp_path, "bad.nii", {76 + 4 * axis: ("f", value)})
    itk_reads = sitk.ReadImage(str(path))
    good = _ct_phantom()
    assert (itk_reads.GetSpacing(), itk_reads.GetDirection()) != (good.GetSpacing(), good.GetDirection())
    with pytest.raises(InputImageError) as raised:
        read_image(path)
    message = str(raised.value)
    assert "\n" not in message and f"pixdim[{axis}]" in message and "fix the header" in message


def test_a_sform_that_disagrees_with_the_qform_is_read_with_a_warning_naming_the_one_used(tmp_path):
    # srow_x[3] (the sform's x offset, RAS) 12 mm off the qform's -10: a rigid shift, which ITK takes.
    path = _nifti(tmp_path, "shifted.nii", {280 + 12: ("f", 2.0)})
    events = []
    image = read_image(path, on_event=events.append)
    assert image.GetOrigin()[0] == pytest.approx(-2.0)  # RAS x 2 is LPS x -2: ITK used the sform
    (warning,) = [e.message for e in events if isinstance(e, WarningEvent)]
    assert "qform and sform disagree (by up to 12 mm)" in warning and "the sform's geometry" in warning


def test_a_geometry_itk_mixes_from_qform_and_sform_is_refused(tmp_path):
    path = _nifti(tmp_path, "mixed.nii", {280: ("f", 5.0)})  # the sform's x scale 5 mm, the qform's 3
    with pytest.raises(InputImageError, match="matches neither"):
        read_image(path)


def test_itk_warnings_while_reading_are_captured_as_lines_and_kept_off_stderr(tmp_path, capfd):
    path = _nifti(tmp_path, "bad.nii", {76 + 4: ("f", 0.0)})
    capfd.readouterr()
    with itk_warnings_captured() as captured:
        sitk.ReadImage(str(path))
    assert captured == [f"ITK NiftiImageIO: {path} has unexpected scales in sform"]
    assert "WARNING" not in capfd.readouterr().err


# --- F-08: NaN and infinite voxels in NIfTI ------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nan_and_infinite_nifti_voxels_are_refused_although_itk_reads_them_as_zero(tmp_path, suffix):
    array = sitk.GetArrayFromImage(_ct_phantom()).astype(np.float32)
    array[3, 4, 5], array[6, 7, 8] = np.nan, -np.inf
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # ITK hides them
    with pytest.raises(InputImageError, match="has 2 NaN or infinite voxels"):
        read_image(path)


# --- F-09: nearly orthonormal direction cosines --------------------------------------------------


@pytest.mark.parametrize("skew", [2e-4, 9e-4])
def test_nearly_orthonormal_directions_run_to_the_end_on_the_exact_input_grid(skew):
    model = _tiny_model()
    options = SegmentOptions(device="cpu", precision="fp32", check_modality=False)
    exact = segment(_ct_phantom(), model, options=options).label_map
    skewed = _ct_phantom(direction=(1.0, skew, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    result = segment(skewed, model, options=options).label_map
    assert result.GetDirection() == skewed.GetDirection() and result.GetOrigin() == skewed.GetOrigin()
    # the network saw the same voxels at the same spacing, so the labels are the same voxel for voxel
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(exact))


def test_a_bad_orientation_option_fails_before_the_input_is_read(tmp_path):
    with pytest.raises(UnetrppError, match="orientation 'XYZ'"):
        segment(tmp_path / "missing.nii", _tiny_model(), options=SegmentOptions(orientation="XYZ"))


# --- F-07: NaN weights, NaN or zero normalisation ------------------------------------------------


def _nan_weights() -> LoadedModel:
    model = _tiny_model()
    with torch.no_grad():
        next(model.network.parameters()).view(-1)[0] = float("nan")
    return model


@pytest.mark.parametrize(
    "make, fragment",
    [
        (_nan_weights, "NaN or infinite weights in 1 tensor"),
        (lambda: _tiny_model(_plans(mean=float("nan"))), "CT normalisation of input 1 is unusable (mean nan"),
        (lambda: _tiny_model(_plans(sd=0.0)), "CT normalisation of input 1 is unusable (mean 40, sd 0"),
    ],
    ids=["nan-weights", "nan-mean", "zero-sd"],
)
def test_a_model_that_can_only_give_nonsense_is_refused_before_inference(make, fragment):
    events = []
    with pytest.raises(CheckpointError) as raised:
        segment(_ct_phantom(), make(), options=SegmentOptions(device="cpu"), on_event=events.append)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert not [e for e in events if isinstance(e, ProgressEvent)]  # no tile ran


def test_weights_found_finite_once_are_not_rescanned_but_a_later_nan_is_still_caught(monkeypatch):
    """A cohort scans its model once (the scan is remembered per network and tensor version); weights
    changed in place afterwards are scanned again and refused."""
    model, options = _tiny_model(), SegmentOptions(device="cpu")
    scans = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda tensor: scans.append(1) or real_isfinite(tensor))
    segment(_ct_phantom(), model, options=options)
    first = len(scans)
    segment(_ct_phantom(), model, options=options)
    assert first > 0 and len(scans) == first  # the second case did not scan again
    with torch.no_grad():
        next(model.network.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite weights in 1 tensor"):
        segment(_ct_phantom(), model, options=options)


# --- F-06, F-23: not CT in Hounsfield units, label maps, empty results ---------------------------


def test_ct_stored_without_its_rescale_to_hu_is_warned_about():
    unscaled = _ct_phantom(dtype=np.uint16, offset=1024)
    warning = modality_warning([unscaled], _tiny_model().card)
    assert warning is not None and "has no air" in warning and "values 24 to 1124" in warning


def test_a_label_map_given_as_the_image_is_warned_about():
    labels = sitk.ReadImage(str(DICOM_CT.parents[1] / "dcmqi_ct3slice/liver_seg.nrrd"))
    warning = modality_warning([labels], _tiny_model().card)
    assert warning is not None and "looks like a label map, not a scan: only 2 distinct values" in warning


def test_a_slicer_segmentation_given_as_the_input_is_refused(tmp_path):
    path = tmp_path / "result.seg.nrrd"
    sitk.WriteImage(_ct_phantom(), str(path))
    with pytest.raises(InputImageError, match="is a Slicer segmentation"):
        read_image(path)


class _AlwaysBackground(nn.Module):
    """A real network that scores background highest everywhere (what a broken model does)."""

    def __init__(self, patch_size, classes=14) -> None:
        super().__init__()
        self.config = type("Config", (), {"patch_size": patch_size, "in_channels": 1})()
        scores = torch.zeros(1, classes, 1, 1, 1)
        scores[:, 0] = 9.0
        self.register_buffer("scores", scores)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(batch.shape[0], -1, *batch.shape[2:])


def test_an_empty_result_of_a_ct_model_on_a_scan_with_a_body_gets_a_warning():
    tiny = _tiny_model()
    model = LoadedModel(_AlwaysBackground(TINY_PATCH_ZYX), tiny.card, tiny.plans)
    events = []
    result = segment(_ct_phantom(), model, options=SegmentOptions(device="cpu"), on_event=events.append)
    assert all(v.voxels == 0 for v in result.volumes)
    body_share = 100 * np.mean(sitk.GetArrayFromImage(_ct_phantom()) > -500)
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert f"no structure was found, although {body_share:.0f}% of the input is body" in " ".join(warnings)


# --- F-26: absurd tiling -------------------------------------------------------------------------


def _starts(size: int, patch: int, overlap: float) -> int:
    """Tiles along one axis, in closed form: ceil((size - patch) / step) + 1, step = int(patch * (1 - o))."""
    step = max(int(patch * (1 - overlap)), 1)
    return -(-(size - patch) // step) + 1


def test_an_overlap_that_multiplies_the_tiles_is_warned_about_with_the_count():
    shape, patch = (112, 512, 512), (64, 128, 128)
    counts = {o: int(np.prod([_starts(s, p, o) for s, p in zip(shape, patch)])) for o in (0.5, 0.75, 0.9)}
    events = []
    for overlap in (0.5, 0.75, 0.9):
        _warn_if_many_tiles(shape, patch, overlap, events.append)
    (warning,) = events  # 0.5 and 0.75 (8x) are usual choices; 0.9 is not
    assert f"overlap 0.9 tiles the volume with {counts[0.9]} tiles" in warning.message
    assert f"the {counts[0.5]} of overlap 0.5" in warning.message and "lower --overlap" in warning.message


# --- F-22: DICOM ---------------------------------------------------------------------------------


def test_the_largest_of_two_unequal_dicom_series_is_read_with_a_warning_naming_both(tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(DICOM_CT, folder)  # 20 slices
    small = DICOM_CT.parents[1] / "dcmqi_ct3slice/dicom"  # another real series, 3 slices
    for path in small.iterdir():
        shutil.copy(path, folder / f"small_{path.name}")
    (small_uid,) = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(small))
    events = []
    image = read_image(folder, on_event=events.append)
    assert image.GetSize()[2] == len(list(DICOM_CT.iterdir()))
    (warning,) = [e.message for e in events if isinstance(e, WarningEvent)]
    assert "holds 2 DICOM series; read the largest" in warning and "(20 slices)" in warning
    assert f"{small_uid} (3 slices)" in warning and "--series UID" in warning


# --- F-15, F-16: memory limits and other tracebacks, through the real CLI --------------------------


def _cli(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "unetrpp", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_running_out_of_memory_is_one_line_naming_the_memory_and_the_options(model_file, tmp_path):
    # 4 x 4 x 4 times the phantom's voxels at the model's spacing: hundreds of MB of float32 arrays,
    # under an address-space limit 250 MB above what the imports took.
    big = sitk.Expand(_ct_phantom(), (4, 4, 4))
    big.SetSpacing(SPACING_XYZ)
    image = tmp_path / "big.nrrd"
    sitk.WriteImage(big, str(image))
    child = textwrap.dedent(
        f"""
        import resource, sys
        import torch, unetrpp.pipeline.predictor, unetrpp.network, unetrpp.models.loader
        from unetrpp.cli import main
        pages = int(open("/proc/self/statm").read().split()[0])
        limit = pages * resource.getpagesize() + 250 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        sys.exit(main(["segment", {str(image)!r}, {str(tmp_path / "o.seg.nrrd")!r}, "--model",
                       {str(model_file)!r}, "--device", "cpu", "--progress", "json", "--no-body-crop",
                       "--accumulation", "float32"]))
        """
    )
    completed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    (line,) = [line for line in completed.stderr.splitlines() if line.startswith("unetrpp: error:")]
    assert "out of memory during" in line and "under a memory limit of" in line and "--batch-size 1" in line
    error = json.loads(completed.stdout.splitlines()[-1])
    assert error["event"] == "error" and error["message"] == line.removeprefix("unetrpp: error: ")
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_a_negative_demo_seed_and_a_dataset_json_that_is_a_list_are_one_line_errors(tmp_path):
    seed = _cli("demo", "--output", str(tmp_path / "demo"), "--seed", "-5")
    assert seed.returncode == 2 and "--seed: must be at least 0, got -5" in seed.stderr
    assert "Traceback" not in seed.stderr
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/dataset.json").write_text("[]")
    train = _cli("train", str(tmp_path / "ds"), str(tmp_path / "m.unetrpp"), "--progress", "json")
    assert train.returncode == 2 and "Traceback" not in train.stderr
    message = json.loads(train.stdout)["message"]
    assert message.endswith("holds a JSON list, not an object with 'channel_names' and 'labels'")


def test_a_json_reader_that_goes_away_does_not_cost_the_output(model_file, tmp_path):
    image, output = tmp_path / "ct.nrrd", tmp_path / "ct.seg.nrrd"
    sitk.WriteImage(_ct_phantom(), str(image))
    command = [sys.executable, "-m", "unetrpp", "segment", str(image), str(output)]
    command += ["--model", str(model_file), "--device", "cpu", "--progress", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # like `| head -1`: one line read, then the pipe is closed
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    assert json.loads(first)["event"] == "stage"
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    assert output.is_file() and sitk.ReadImage(str(output)).GetSize() == _ct_phantom().GetSize()
