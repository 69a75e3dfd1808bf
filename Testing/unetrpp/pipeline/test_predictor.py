"""``segment()`` end to end: geometry round trips onto the input grid, options, events, refusals.

The geometry tests replace the network by :class:`IntensityBandNetwork`, a real ``nn.Module`` that
labels each voxel by its intensity band. With it, a labelled cube in the input must come back on
exactly the same voxels, whatever the input's orientation, so any axis swap, flip, crop or tiling
mistake in the pipeline shows as a mismatch. The UNETR++ network itself is tested elsewhere; one
test here runs a tiny real UNETR++ through a resampling plan.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn
from unetrpp.errors import InputImageError, ModelNotFoundError, OutputExistsError, UnetrppError
from unetrpp.events import ProgressEvent, ResultEvent, StageEvent
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.models.cards import ChannelNormalization, ModelCard, Plans
from unetrpp.models.loader import LoadedModel
from unetrpp.pipeline.predictor import SegmentOptions, segment

BANDS = (0.0, 100.0, 200.0)  # intensity of background, label 1, label 2
LABELS = ((1, "spleen"), (2, "right kidney"))


class IntensityBandNetwork(nn.Module):
    """Stand-in network: class k scores highest where the input is nearest ``centres[k]``."""

    def __init__(self, centres: tuple[float, ...], patch_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_size=patch_size, in_channels=1, out_channels=len(centres))
        self.register_buffer("centres", torch.tensor(centres).view(1, -1, 1, 1, 1))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return -(((batch - self.centres) / 25.0) ** 2)


def _plans(target_spacing_zyx, patch=(8, 16, 16), num_classes=3, transpose=(0, 1, 2)) -> Plans:
    # CT scheme with mean 0, sd 1: the network sees the clipped Hounsfield values themselves.
    channel = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1000.0, upper_bound=1000.0)
    backward = tuple(int(i) for i in np.argsort(transpose))
    return Plans((channel,), target_spacing_zyx, patch, num_classes, transpose, backward)


def _card(plans: Plans, label_set="synapse", labels=LABELS) -> ModelCard:
    return ModelCard(
        name="bands",
        title="intensity bands",
        task="test",
        modality="CT",
        input_channels=("CT",),
        label_set=label_set,
        labels=labels,
        variant="synapse",
        patch_size_zyx=plans.patch_size_zyx,
        orientation="RAS",
        plans=plans,
    )


def _band_model(image: sitk.Image, transpose=(0, 1, 2), orientation="RAS") -> LoadedModel:
    """A stub model whose target spacing is the image's own after reorientation: no resampling."""
    oriented = image if orientation == "native" else sitk.DICOMOrient(image, orientation)
    spacing_zyx = tuple(reversed(oriented.GetSpacing()))
    plans = _plans(tuple(spacing_zyx[a] for a in transpose), transpose=transpose)
    return LoadedModel(IntensityBandNetwork(BANDS, plans.patch_size_zyx), _card(plans), plans)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


GEOMETRIES = {
    "axial-lps": (np.eye(3), (0.8, 0.8, 2.5)),
    "axial-ras": (np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 2.5)),
    "las": (np.diag([-1.0, 1.0, 1.0]), (1.0, 1.0, 1.0)),
    # i runs posterior, j inferior, k left: a sagittal acquisition
    "sagittal": (np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), (1.1, 0.9, 3.0)),
    "anisotropic": (np.eye(3), (0.7, 0.7, 5.0)),
    "oblique": (_rotation(2, 25.0) @ _rotation(0, 12.0), (0.9, 1.2, 2.0)),
}


def _phantom(direction: np.ndarray, spacing_xyz, size_xyz=(30, 26, 14)) -> tuple[sitk.Image, np.ndarray]:
    """A CT-like volume with two cubes at asymmetric places, and the label map they should give."""
    array = np.zeros(tuple(reversed(size_xyz)), dtype=np.int16)  # (k, j, i)
    array[2:7, 4:11, 3:10] = 100
    array[6:12, 13:22, 17:27] = 200
    array[9:11, 2:4, 24:28] = 100  # a small second part of label 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetDirection(tuple(direction.ravel()))
    image.SetOrigin((-12.5, 30.25, 101.0))
    expected = np.select([array == 100, array == 200], [1, 2], 0)
    return image, expected


def _assert_same_grid(label_map: sitk.Image, image: sitk.Image) -> None:
    assert label_map.GetSize() == image.GetSize()
    assert label_map.GetOrigin() == image.GetOrigin()
    assert label_map.GetSpacing() == image.GetSpacing()
    assert label_map.GetDirection() == image.GetDirection()


@pytest.mark.parametrize("orientation", ["RAS", "native"], ids=lambda o: o)
@pytest.mark.parametrize("name", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_labelled_cubes_land_on_the_same_voxels_for_every_input_orientation(name, orientation):
    direction, spacing = GEOMETRIES[name]
    image, expected = _phantom(direction, spacing)
    options = SegmentOptions(device="cpu", orientation=orientation)
    result = segment(image, _band_model(image, orientation=orientation), options=options)
    _assert_same_grid(result.label_map, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label_map), expected)


def test_a_native_card_feeds_the_stored_voxel_order_of_an_oblique_short_axis_stack(monkeypatch):
    """ACDC-like: a 10 mm oblique stack whose closest code is not RAS. Under a native card the network's
    input is the stored array (slices along z); under RAS the 10 mm axis moves (here to x)."""
    import importlib

    # the package exports the function under the module's name
    preprocess_module = importlib.import_module("unetrpp.pipeline.preprocess")
    direction = _rotation(1, 80.0) @ _rotation(0, 20.0)  # the slice axis k runs nearly left-right
    image, expected = _phantom(direction, (1.5, 1.5, 10.0), size_xyz=(30, 26, 6))
    seen = []
    original = preprocess_module.preprocess

    def recording(images, plans):
        seen.append(images[0])
        return original(images, plans)

    monkeypatch.setattr(preprocess_module, "preprocess", recording)
    for card_orientation, thick_axis in (("native", 0), ("RAS", 2)):
        band = _band_model(image, orientation=card_orientation)
        card = dataclasses.replace(band.card, orientation=card_orientation)
        model = LoadedModel(band.network, card, band.plans)
        seen.clear()
        result = segment(image, model, options=SegmentOptions(device="cpu"))
        _assert_same_grid(result.label_map, image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label_map), expected)
        fed = seen[0]
        assert int(np.argmax(tuple(reversed(fed.GetSpacing())))) == thick_axis  # array axis of the 10 mm
        if card_orientation == "native":
            np.testing.assert_array_equal(sitk.GetArrayFromImage(fed), sitk.GetArrayFromImage(image))
            assert fed.GetDirection() == image.GetDirection()


def test_transposed_plans_and_lps_model_orientation_also_round_trip():
    image, expected = _phantom(*GEOMETRIES["oblique"])
    model = _band_model(sitk.DICOMOrient(image, "LPS"), transpose=(2, 0, 1))
    options = SegmentOptions(device="cpu", orientation="lps")
    result = segment(image, model, options=options)
    _assert_same_grid(result.label_map, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label_map), expected)


def test_file_round_trip_writes_a_seg_nrrd_on_the_input_grid_with_volumes(tmp_path):
    image, expected = _phantom(*GEOMETRIES["sagittal"])
    source = tmp_path / "case.nrrd"
    sitk.WriteImage(image, str(source))
    events = []
    result = segment(
        source, _band_model(image), tmp_path / "case.seg.nrrd", SegmentOptions(device="cpu"), events.append
    )

    label_map, segments = read_seg_nrrd(tmp_path / "case.seg.nrrd")
    _assert_same_grid(label_map, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label_map), expected)
    assert [(s.label_value, s.name) for s in segments] == list(LABELS)
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    for volume in result.volumes:
        count = int((expected == volume.label_value).sum())
        assert volume.voxels == count
        assert volume.volume_ml == pytest.approx(count * voxel_ml)

    stages = [e.stage for e in events if isinstance(e, StageEvent)]
    assert stages == ["read", "preprocess", "inference", "resample", "write"]
    assert isinstance(events[-1], ResultEvent)
    assert events[-1].output == str(tmp_path / "case.seg.nrrd")
    assert [s["voxels"] for s in events[-1].structures] == [v.voxels for v in result.volumes]
    assert set(result.stage_seconds) == set(stages)


def test_structure_subset_and_largest_component():
    image, expected = _phantom(*GEOMETRIES["axial-ras"])
    options = SegmentOptions(device="cpu", structures=("Spleen",), keep_largest_component=True)
    result = segment(image, _band_model(image), options=options)
    assert [s.name for s in result.structures] == ["spleen"]
    array = sitk.GetArrayFromImage(result.label_map)
    main_cube = np.zeros_like(expected)
    main_cube[2:7, 4:11, 3:10] = 1  # the small second part of label 1 and all of label 2 are gone
    np.testing.assert_array_equal(array, main_cube)


def test_tiny_unetrpp_with_resampling_plans_returns_the_input_grid_and_reports_progress():
    from unetrpp.network import build_network

    torch.manual_seed(0)
    network = build_network(
        "synapse",
        patch_size=(16, 32, 32),
        feature_size=4,
        dims=(8, 16, 32, 64),
        out_channels=3,
        deep_supervision=False,
    )
    plans = _plans((3.0, 1.5, 1.5), patch=(16, 32, 32))
    model = LoadedModel(network.eval(), _card(plans), plans)
    image, _ = _phantom(*GEOMETRIES["oblique"])
    events = []
    result = segment(image, model, options=SegmentOptions(device="cpu"), on_event=events.append)
    _assert_same_grid(result.label_map, image)
    labels = sitk.GetArrayFromImage(result.label_map)
    counts = np.bincount(labels.ravel(), minlength=3)
    assert len(counts) == 3 and counts.min() > 0  # the random network labels all three classes somewhere
    assert [(v.label_value, v.voxels) for v in result.volumes] == [(1, counts[1]), (2, counts[2])]
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert progress[0].done == 0 and progress[-1].done == progress[-1].total >= 1
    assert all(a.done < b.done for a, b in zip(progress, progress[1:]))
    # The network sees the scan in the model's orientation whatever the storage order, so the same
    # scan stored flipped or with permuted axes gets the same label at every physical voxel. (The
    # intensity-band tests cannot see this: their stand-in network ignores orientation.)
    original_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    for code in ("RAS", "PIR"):
        stored = sitk.DICOMOrient(image, code)
        assert stored.GetDirection() != image.GetDirection()
        other = segment(stored, model, options=SegmentOptions(device="cpu")).label_map
        _assert_same_grid(other, stored)
        back = sitk.DICOMOrient(other, original_code)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels, err_msg=code)


def test_existing_output_is_refused_before_any_work(tmp_path):
    image, _ = _phantom(*GEOMETRIES["axial-lps"])
    output = tmp_path / "out.seg.nrrd"
    output.write_bytes(b"precious")
    events = []
    with pytest.raises(OutputExistsError, match="already exists"):
        segment(image, _band_model(image), output, SegmentOptions(device="cpu"), events.append)
    assert events == []
    assert output.read_bytes() == b"precious"
    segment(image, _band_model(image), output, SegmentOptions(device="cpu"), overwrite=True)
    assert read_seg_nrrd(output)[0].GetSize() == image.GetSize()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"structures": ("livre",)}, UnetrppError, "no structure 'livre'"),
        ({"device": "tpu"}, UnetrppError, "unknown device"),
        ({"output": "out.nii.gz"}, UnetrppError, "must end in .seg.nrrd"),
        ({"output": "missing/out.seg.nrrd"}, UnetrppError, "does not exist"),
        ({"output": "a_file/out.seg.nrrd"}, UnetrppError, "is a file, not a folder"),
    ],
    ids=["unknown-structure", "unknown-device", "output-suffix", "missing-folder", "folder-is-a-file"],
)
def test_bad_options_and_outputs_are_refused_before_reading_or_loading(tmp_path, kwargs, error, fragment):
    (tmp_path / "a_file").write_text("not a folder")
    image, _ = _phantom(*GEOMETRIES["axial-lps"])
    output = kwargs.pop("output", None)
    events = []
    with pytest.raises(error, match=fragment):
        segment(
            image,
            _band_model(image),
            None if output is None else tmp_path / output,
            SegmentOptions(**kwargs),
            events.append,
        )
    assert events == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_structures_given_as_one_comma_separated_string_are_split():
    assert SegmentOptions(structures="liver, spleen").structures == ("liver", "spleen")
    assert SegmentOptions(structures=["liver"]).structures == ("liver",)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"overlap": 1.0}, "overlap"),
        ({"orientation": "RAX"}, "orientation 'RAX'"),
        ({"precision": "fp8"}, "precision"),
        ({"batch_size": 0}, "batch size"),
    ],
    ids=["overlap", "orientation", "precision", "batch-size"],
)
def test_segment_options_validate_on_construction(kwargs, fragment):
    with pytest.raises(UnetrppError, match=fragment):
        SegmentOptions(**kwargs)


def test_paper_quality_runs_what_the_official_validation_ran():
    """nnU-Net v1 validation, as the paper's numbers: 8 mirrorings, step size 0.5, every tile, fp32."""
    from unetrpp.pipeline.segment_types import Quality
    from unetrpp.pipeline.sliding_window import Accumulation, Precision, SlidingWindowConfig

    paper = SegmentOptions(quality="paper")
    assert paper.quality is Quality.PAPER and paper.crop_to_body is False
    assert paper.sliding_window_config() == SlidingWindowConfig(
        overlap=0.5,
        use_mirroring=True,
        mirror_axes=(0, 1, 2),
        precision=Precision.FP32,
        accumulation=Accumulation.FLOAT32,
        skip_empty_tiles=False,
    )
    # Explicit values equal to the paper's are accepted; the default is the fast preset.
    assert SegmentOptions(quality="paper", use_tta=True, precision="fp32", overlap=0.5) == paper
    fast = SegmentOptions()
    assert fast.quality is Quality.FAST and not fast.use_tta and fast.crop_to_body
    assert fast.precision is Precision.AUTO and fast.accumulation is Accumulation.FLOAT16
    assert SegmentOptions(overlap=0.25, use_tta=True).overlap == 0.25  # fast: every option is free


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"overlap": 0.25}, "runs overlap=0.5, not 0.25"),
        ({"use_tta": False}, "runs use_tta=True, not False"),
        ({"precision": "bf16"}, "runs precision=fp32, not bf16"),
        ({"accumulation": "float16"}, "runs accumulation=float32"),
        ({"crop_to_body": True}, "runs crop_to_body=False"),
        ({"skip_empty_tiles": True}, "runs skip_empty_tiles=False"),
    ],
    ids=["overlap", "tta", "precision", "accumulation", "body-crop", "empty-tiles"],
)
def test_paper_quality_refuses_an_option_that_leaves_the_paper(kwargs, fragment):
    with pytest.raises(UnetrppError, match=fragment):
        SegmentOptions(quality="paper", **kwargs)


@pytest.mark.parametrize(
    ("trained_axes", "stage", "warned"),
    [
        ((0, 1, 2), "(fp32, 8 mirrorings)", False),
        ((1, 2), "(fp32, 4 mirrorings)", False),
        ((), "(fp32)", True),
    ],
    ids=["all-axes", "in-plane", "never-mirrored"],
)
def test_test_time_mirroring_uses_only_the_axes_the_model_was_trained_to_see_mirrored(
    trained_axes, stage, warned
):
    """A model trained without mirroring (the bundled demo) is not shown mirrored images: the paper
    preset then runs every tile once, with a warning; the labels are those of a run without mirroring."""
    from unetrpp.events import WarningEvent

    image, expected = _phantom(*GEOMETRIES["axial-lps"])
    band = _band_model(image)
    model = LoadedModel(
        band.network, dataclasses.replace(band.card, mirror_axes_zyx=trained_axes), band.plans
    )
    events = []
    result = segment(
        image,
        model,
        options=SegmentOptions(device="cpu", quality="paper", check_modality=False),
        on_event=events.append,
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label_map), expected)
    inference = [e.message for e in events if isinstance(e, StageEvent) and e.stage == "inference"]
    assert inference == [f"Sliding window on cpu {stage}"]
    warnings = [e.message for e in events if isinstance(e, WarningEvent)]
    assert warnings == (
        [
            "model 'bands' was trained without mirroring, so test-time mirroring is off: "
            "mirrored images would be ones it never saw"
        ]
        if warned
        else []
    )


def test_the_bundled_demo_model_records_that_it_was_trained_without_mirroring():
    from unetrpp.models.loader import load_model

    assert load_model("demo").card.mirror_axes_zyx == ()


def test_unknown_quality_is_named():
    with pytest.raises(UnetrppError, match="quality must be one of fast, paper, got 'best'"):
        SegmentOptions(quality="best")


def test_cuda_request_without_cuda_fails_before_loading_a_model(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    image, _ = _phantom(*GEOMETRIES["axial-lps"])
    with pytest.raises(UnetrppError, match="CUDA was requested"):
        segment(image, tmp_path / "no-such-model.unetrpp", options=SegmentOptions(device="cuda"))


def test_wrong_number_of_inputs_and_invalid_images_are_input_errors():
    image, _ = _phantom(*GEOMETRIES["axial-lps"])
    model = _band_model(image)
    with pytest.raises(InputImageError, match="needs 1 input"):
        segment([image, image], model, options=SegmentOptions(device="cpu"))
    nan_image = sitk.Cast(image, sitk.sitkFloat32)
    nan_image[3, 3, 3] = float("nan")
    with pytest.raises(InputImageError, match="NaN"):
        segment(nan_image, model, options=SegmentOptions(device="cpu"))


def test_registry_model_without_installed_weights_is_named_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError, match="unetrpp download synapse"):
        segment(tmp_path / "not-read.nii.gz", "synapse", options=SegmentOptions(device="cpu"))
    with pytest.raises(ModelNotFoundError, match="synapse"):
        segment(tmp_path / "not-read.nii.gz", "synapes", options=SegmentOptions(device="cpu"))


REAL_SCANS = {
    "ct-nifti-ras": "totalseg_example_ct/example_ct.nii.gz",
    "ct-dicom-series": "totalseg_example_ct/example_ct_dicom",
    "ct-dicom-3-slices": "dcmqi_ct3slice/dicom",
    "mr-abdomen-lps": "totalseg_example_ct/example_mr_sm.nii.gz",
    "mr-brain-las": "monai_brain_mr_las/anatomical.nii",
    "mr-prostate-oblique": "monai_prostate_mr_oblique/test_0000_t2_tse_tra_4.nii.gz",
    "mr-flair-brats": "brats2021_flair_edema/BraTS2021_01646_flair.nii.gz",
    "mr-dicom-sagittal-decubitus": "dcmqa_mr_decubitus_hfdr_sag",
}


@pytest.mark.parametrize("scan", list(REAL_SCANS), ids=list(REAL_SCANS))
def test_real_scans_come_back_on_their_own_grid_voxel_for_voxel(scan):
    from unetrpp.pipeline.io import read_image
    from vendored_data import data_path

    path = data_path("real_inputs", REAL_SCANS[scan])
    image = read_image(path)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    centres = (0.0, float(np.percentile(array, 60)) + 0.3, float(np.percentile(array, 95)) + 0.7)
    oriented = sitk.DICOMOrient(image, "RAS")
    channel = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1e7, upper_bound=1e7)
    plans = Plans((channel,), tuple(reversed(oriented.GetSpacing())), (16, 64, 64), 3)
    network = IntensityBandNetwork(centres, plans.patch_size_zyx)
    network.forward = lambda batch: -((batch - network.centres) ** 2)  # sharp bands: exact 0/1 scores
    model = LoadedModel(network, _card(plans), plans)
    # Overlap 0: each voxel is predicted once (geometry is what is tested here, and it is 8x faster).
    # fp32: bf16 would round the squared MR intensities of the stand-in network into ties.
    # No body crop: the bands must cover the air too.
    options = SegmentOptions(
        device="cpu", overlap=0.0, batch_size=8, accumulation="float32", precision="fp32", crop_to_body=False
    )
    result = segment(path, model, options=options)
    _assert_same_grid(result.label_map, image)
    expected = np.argmin(np.abs(array[None] - np.array(centres)[:, None, None, None]), axis=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.label_map), expected)


@pytest.mark.parametrize(
    ("scan", "fewer"),
    [
        ("dcmqi_ct3slice/dicom", True),
        ("totalseg_example_ct/example_ct.nii.gz", False),  # cropped to the body: no tile of air
        ("totalseg_example_ct/example_ct_dicom", True),
    ],
    ids=["ct-3-slices", "ct-abdomen-3mm", "ct-abdomen-dicom"],
)
def test_ct_body_crop_runs_fewer_tiles_keeps_the_body_and_labels_air_background(scan, fewer):
    """On a real CT: every body voxel (bowel gas included) keeps the uncropped run's label; air outside
    the patient is 0; 512 x 512 slices have tiles of air to skip."""
    from unetrpp.pipeline.body_crop import body_mask
    from unetrpp.pipeline.io import read_image
    from vendored_data import data_path

    image = read_image(data_path("real_inputs", scan))  # air around the patient
    oriented = sitk.DICOMOrient(image, "RAS")
    channel = ChannelNormalization("CT", mean=0.0, sd=1.0, lower_bound=-1024.0, upper_bound=3071.0)
    plans = Plans((channel,), tuple(reversed(oriented.GetSpacing())), (16, 64, 64), 3)
    network = IntensityBandNetwork((-1000.0, 0.0, 300.0), plans.patch_size_zyx)  # air, tissue, bone
    tiles: list[int] = []
    network.register_forward_hook(lambda module, args, output: tiles.append(args[0].shape[0]))
    model = LoadedModel(network, _card(plans), plans)
    runs = {}
    for crop in (False, True):
        options = SegmentOptions(device="cpu", overlap=0.0, precision="fp32", crop_to_body=crop, batch_size=8)
        tiles.clear()
        result = segment(image, model, options=options)
        _assert_same_grid(result.label_map, image)
        runs[crop] = (sitk.GetArrayFromImage(sitk.DICOMOrient(result.label_map, "RAS")), sum(tiles))
    (whole, whole_tiles), (cropped, cropped_tiles) = runs[False], runs[True]
    body = body_mask(oriented)
    assert body is not None and not body.all(), "the example CT has air around the body"
    np.testing.assert_array_equal(cropped[body], whole[body])  # a voxelwise network: the same labels
    air = sitk.GetArrayViewFromImage(oriented) <= -500
    assert not cropped[~body & air].any()  # air outside the patient: background, predicted or not
    # (the table is dense but not body: it keeps whatever a kept tile says, or background)
    assert cropped_tiles < whole_tiles if fewer else cropped_tiles == whole_tiles


def _synthetic_chest() -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """(image, lungs mask, nodule mask): a chest cut through its lungs at both ends, with a ground-glass
    nodule (-600 HU, below the -500 HU tissue threshold) in the middle of the right lung field."""
    depth, height, width = 8, 56, 80
    y = (np.arange(height) - height / 2)[:, None]
    x = (np.arange(width) - width / 2)[None, :]
    body = (y / 26.0) ** 2 + (x / 38.0) ** 2 <= 1.0
    lungs = ((y / 19.0) ** 2 + ((np.abs(x) - 16.0) / 14.0) ** 2) <= 1.0  # two fields at x = -16, +16
    slice_hu = np.where(body, 40.0, -1000.0)
    slice_hu[lungs] = -850.0
    array = np.repeat(slice_hu[None], depth, axis=0).astype(np.int16)
    nodule = np.zeros(array.shape, dtype=bool)
    nodule[3:5, 27:30, 22:26] = True  # centre of the lung at x = -16: columns 24 +- 2
    array[nodule] = -600
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image, np.repeat(lungs[None], depth, axis=0), nodule


def test_ct_body_crop_reads_the_lungs_of_a_synthetic_chest_like_a_run_without_skipping(monkeypatch):
    """The lung fields are air to a threshold, body to the patient: with skipping, every voxel inside the
    lungs (the nodule included) gets the label of the run without skipping, while the air around the
    chest is still skipped. A threshold-only mask (the old body) loses part of the nodule."""
    import importlib

    image, lungs, nodule = _synthetic_chest()
    plans = _plans(tuple(reversed(image.GetSpacing())))
    network = IntensityBandNetwork((-1000.0, -600.0, 40.0), plans.patch_size_zyx)  # air+lung, nodule, tissue
    tiles: list[int] = []
    network.register_forward_hook(lambda module, args, output: tiles.append(args[0].shape[0]))
    model = LoadedModel(network, _card(plans), plans)

    def run(crop: bool) -> tuple[np.ndarray, int]:
        tiles.clear()
        options = SegmentOptions(device="cpu", precision="fp32", crop_to_body=crop, skip_empty_tiles=False)
        result = segment(image, model, options=options)
        return sitk.GetArrayFromImage(result.label_map), sum(tiles)

    (whole, whole_tiles), (cropped, cropped_tiles) = run(False), run(True)
    assert whole[nodule].tolist() == [1] * int(nodule.sum())  # the band network sees the nodule
    np.testing.assert_array_equal(cropped[lungs], whole[lungs])
    assert cropped_tiles < whole_tiles  # the air around the chest is still skipped

    body_crop = importlib.import_module("unetrpp.pipeline.body_crop")
    monkeypatch.setattr(body_crop, "body_mask", body_crop.dense_mask)  # the densest voxels only
    threshold_only, _ = run(True)
    assert (threshold_only[nodule] == 0).any()  # tiles skipped: part of the nodule became background


def test_body_crop_is_for_ct_models_only():
    """The same image with "air" at one end: a CT model crops it off, a z-score (MR) model keeps it."""
    image, _ = _phantom(*GEOMETRIES["axial-lps"], size_xyz=(100, 26, 14))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[:, :, 40:] = -1000.0
    image = _like(array, image)
    model = _band_model(image)
    zscore = ChannelNormalization("nonCT", mean=0.0, sd=1.0)
    mr_model = LoadedModel(model.network, model.card, dataclasses.replace(model.plans, channels=(zscore,)))
    tiles: list[int] = []
    model.network.register_forward_hook(lambda module, args, output: tiles.append(args[0].shape[0]))
    counts = {}
    for name, loaded in (("ct", model), ("mr", mr_model)):
        for crop in (False, True):
            tiles.clear()
            options = SegmentOptions(
                device="cpu", precision="fp32", crop_to_body=crop, skip_empty_tiles=False
            )
            segment(image, loaded, options=options)
            counts[name, crop] = sum(tiles)
    assert counts["ct", True] < counts["ct", False]
    assert counts["mr", True] == counts["mr", False]


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def test_gantry_tilted_dicom_is_refused_in_one_line():
    from vendored_data import data_path

    path = data_path("real_inputs", "dcmqa_ct_gantry_tilt_ge")
    plans = _plans((3.0, 1.0, 1.0))
    model = LoadedModel(IntensityBandNetwork(BANDS, plans.patch_size_zyx), _card(plans), plans)
    with pytest.raises(InputImageError, match="tilt") as raised:
        segment(path, model, options=SegmentOptions(device="cpu"))
    assert "\n" not in str(raised.value)


class _OutOfGpuMemory(IntensityBandNetwork):
    """Raises what torch raises when a CUDA allocation fails (no GPU is needed to raise it)."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_running_out_of_gpu_memory_is_one_line_that_suggests_the_cpu(tmp_path):
    image, _ = _phantom(np.eye(3), (0.8, 0.8, 2.5))
    band = _band_model(image)
    model = LoadedModel(_OutOfGpuMemory(BANDS, band.plans.patch_size_zyx), band.card, band.plans)
    output = tmp_path / "out.seg.nrrd"
    with pytest.raises(UnetrppError) as raised:
        segment(image, model, output, SegmentOptions(device="cpu", precision="fp32", check_modality=False))
    message = str(raised.value)
    assert "\n" not in message and "ran out of memory" in message and "--device cpu" in message
    assert isinstance(raised.value.__cause__, torch.cuda.OutOfMemoryError)
    assert not output.exists()
