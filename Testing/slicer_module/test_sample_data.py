"""The demo's phantom in Slicer's Sample Data module: the shipped files are what ``make_sample.py`` makes
and what their pinned checksums say, the registration uses only keywords Slicer's SampleData accepts,
its ``file://`` URIs copy the files the way SampleData copies them, Slicer's readers load them, and the
bundled ``demo`` model segments the phantom well."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from unetrpp.labels.seg_nrrd import read_seg_nrrd
from unetrpp.train.phantoms import PHANTOM_LABELS
from UNETRPPSegmentLib import sample_data

# registerCustomSampleDataSource's parameters, copied from Slicer's Modules/Scripted/SampleData/
# SampleData.py at v5.10.0 (line 510) and v5.12.3 (line 553), where they are the same.
SLICER_REGISTER_PARAMETERS = [
    "category",
    "sampleName",
    "uris",
    "fileNames",
    "nodeNames",
    "customDownloader",
    "thumbnailFileName",
    "loadFileTypes",
    "loadFiles",
    "loadFileProperties",
    "checksums",
    "loadFileType",
]
# The per-file arguments SampleDataSource requires to be of equal length (SampleData.py, same tags).
PER_FILE = ("uris", "fileNames", "nodeNames", "loadFileTypes", "checksums")
# slicer.util.extractAlgoAndDigest's format for SHA256 (Base/Python/slicer/util.py, v5.12.3 line 3810).
CHECKSUM = re.compile(r"^SHA256:[0-9a-f]{64}$")
MAKE_SAMPLE = sample_data.SAMPLE_DIR / "make_sample.py"
# Measured once (1 thread, CPU): mean Dice 0.942, lowest structure 0.893.
MEAN_DICE_FLOOR = 0.92
STRUCTURE_DICE_FLOOR = 0.85


def _make_sample():
    spec = importlib.util.spec_from_file_location("make_sample", MAKE_SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RecordingLogic:
    """Stands in for SampleData.SampleDataLogic, which needs Slicer's Qt GUI; records each call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def registerCustomSampleDataSource(self, **keywords) -> None:  # noqa: N802 (Slicer's name)
        self.calls.append(keywords)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    _make_sample().write_sample(folder)
    return folder


def test_pinned_checksums_and_sha256sums_equal_the_files():
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (sample_data.SAMPLE_DIR / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    )
    for sample in sample_data.SAMPLE_FILES:
        path = sample_data.SAMPLE_DIR / sample.file_name
        assert sample_data.sha256(path) == _sha256(path) == sample.sha256 == listed[sample.file_name]
    thumbnail = sample_data.SAMPLE_DIR / sample_data.THUMBNAIL
    assert _sha256(thumbnail) == listed[sample_data.THUMBNAIL]
    assert set(listed) == {*(f.file_name for f in sample_data.SAMPLE_FILES), sample_data.THUMBNAIL}


def test_the_sample_is_small():
    sizes = [(sample_data.SAMPLE_DIR / f.file_name).stat().st_size for f in sample_data.SAMPLE_FILES]
    sizes.append((sample_data.SAMPLE_DIR / sample_data.THUMBNAIL).stat().st_size)
    assert sum(sizes) < 2 * 1024 * 1024, sizes


def test_the_files_are_the_generators_phantom_with_its_geometry():
    make_sample = _make_sample()
    phantom = make_sample.sample_phantom()
    image_file, truth_file = (sample_data.SAMPLE_DIR / f.file_name for f in sample_data.SAMPLE_FILES)
    image = sitk.ReadImage(str(image_file))
    assert image.GetSize() == (221, 172, 42)
    assert image.GetPixelID() == sitk.sitkInt16
    assert np.allclose(image.GetSpacing(), (1.5, 1.5, 3.5862770768601577))
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == "LAS"
    assert image.GetSize() == phantom.image.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):  # NRRD's text keeps them to an ulp
        assert np.allclose(getattr(image, getter)(), getattr(phantom.image, getter)(), atol=1e-9), getter
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(phantom.image))

    truth, segments = read_seg_nrrd(truth_file)
    assert truth.GetSize() == image.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(truth, getter)(), getattr(image, getter)(), atol=1e-9), getter
    np.testing.assert_array_equal(sitk.GetArrayFromImage(truth), sitk.GetArrayFromImage(phantom.label_map))
    assert [(s.label_value, s.name) for s in segments] == list(PHANTOM_LABELS)
    assert all(s.terminology for s in segments)


def test_make_sample_regenerates_the_shipped_files(regenerated):
    image_file, truth_file = sample_data.SAMPLE_FILES
    for name in (image_file.file_name, sample_data.THUMBNAIL):
        assert (regenerated / name).read_bytes() == (sample_data.SAMPLE_DIR / name).read_bytes(), name
    # The truth's pynrrd header comment carries the write time: compare voxels and segments.
    new_truth, new_segments = read_seg_nrrd(regenerated / truth_file.file_name)
    truth, segments = read_seg_nrrd(sample_data.SAMPLE_DIR / truth_file.file_name)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(new_truth), sitk.GetArrayFromImage(truth))
    assert new_segments == segments
    lines = (regenerated / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        image_file.file_name,
        truth_file.file_name,
        sample_data.THUMBNAIL,
    ]


def test_registration_uses_only_slicers_keywords_and_consistent_per_file_lists():
    logic = RecordingLogic()
    assert sample_data.register_sample_data(logic) is True
    (keywords,) = logic.calls
    assert set(keywords) <= set(SLICER_REGISTER_PARAMETERS)
    assert "loadFileType" not in keywords  # deprecated in favour of loadFileTypes
    assert keywords["category"] == "UNETR++"
    assert keywords["sampleName"] == sample_data.SAMPLE_NAME
    assert len({len(keywords[name]) for name in PER_FILE}) == 1
    assert keywords["loadFileTypes"] == ["VolumeFile", "SegmentationFile"]
    assert keywords["nodeNames"] == ["UNETRPPPhantom", "UNETRPPPhantom truth"]
    assert all(CHECKSUM.match(checksum) for checksum in keywords["checksums"])
    assert Path(keywords["thumbnailFileName"]).is_file()


def test_file_uris_copy_the_shipped_files_as_sample_data_copies_them(tmp_path):
    keywords = sample_data.source_arguments()
    files = zip(keywords["uris"], keywords["fileNames"], keywords["checksums"], strict=True)
    for uri, name, checksum in files:
        assert urllib.parse.urlparse(uri).scheme == "file"
        source = Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
        assert source.is_file() and source == sample_data.SAMPLE_DIR / name
        # SampleDataLogic.downloadFile: urlretrieve into the cache folder, then compare the digest.
        copied = tmp_path / name
        urllib.request.urlretrieve(uri, copied)
        assert f"SHA256:{_sha256(copied)}" == checksum


def test_slicer_loads_the_files_as_sample_data_loads_them(slicer_app, tmp_path):
    import slicer
    import vtk

    keywords = sample_data.source_arguments()
    loaded = {}
    for name, node_name, file_type in zip(
        keywords["fileNames"], keywords["nodeNames"], keywords["loadFileTypes"], strict=True
    ):
        shutil.copyfile(sample_data.SAMPLE_DIR / name, tmp_path / name)
        nodes = vtk.vtkCollection()
        properties = {"fileName": str(tmp_path / name), "name": node_name}
        assert slicer.app.coreIOManager().loadNodes(file_type, properties, nodes)
        loaded[file_type] = nodes.GetItemAsObject(0)
    volume, segmentation = loaded["VolumeFile"], loaded["SegmentationFile"]
    assert volume.IsA("vtkMRMLScalarVolumeNode") and volume.GetName() == "UNETRPPPhantom"
    assert volume.GetImageData().GetDimensions() == (221, 172, 42)
    assert segmentation.IsA("vtkMRMLSegmentationNode") and segmentation.GetName() == "UNETRPPPhantom truth"
    segments = segmentation.GetSegmentation()
    names = [segments.GetNthSegment(index).GetName() for index in range(segments.GetNumberOfSegments())]
    assert names == [name for _, name in PHANTOM_LABELS]


def test_registration_never_raises(tmp_path, caplog, monkeypatch):
    class FailingLogic:
        def registerCustomSampleDataSource(self, **keywords) -> None:  # noqa: N802
            raise ValueError("All fields of sample data source must have the same length")

    with caplog.at_level(logging.ERROR, logger=sample_data.__name__):
        assert sample_data.register_sample_data(FailingLogic()) is False
    assert "could not register" in caplog.text

    caplog.clear()
    logic = RecordingLogic()
    with caplog.at_level(logging.ERROR, logger=sample_data.__name__):
        assert sample_data.register_sample_data(logic, tmp_path) is False
    assert not logic.calls and "UNETRPPPhantom.nrrd" in caplog.text

    # Outside Slicer (here) there is no SampleData module to import: logged, not raised.
    monkeypatch.delitem(sys.modules, "SampleData", raising=False)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=sample_data.__name__):
        assert sample_data.register_sample_data() is False
    assert "SampleData" in caplog.text


def test_the_demo_model_segments_the_sample_phantom():
    import torch
    import unetrpp

    image_file, truth_file = (sample_data.SAMPLE_DIR / f.file_name for f in sample_data.SAMPLE_FILES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one thread is the fastest
    try:
        result = unetrpp.segment(image_file, "demo", None, unetrpp.SegmentOptions(device="cpu"))
    finally:
        torch.set_num_threads(threads)
    prediction = sitk.GetArrayFromImage(result.label_map)
    truth = sitk.GetArrayFromImage(read_seg_nrrd(truth_file)[0])
    assert prediction.shape == truth.shape
    dice = {}
    for value, name in PHANTOM_LABELS:
        predicted, true = prediction == value, truth == value
        dice[name] = 2.0 * np.sum(predicted & true) / (np.sum(predicted) + np.sum(true))
    assert np.mean(list(dice.values())) >= MEAN_DICE_FLOOR, dice
    assert min(dice.values()) >= STRUCTURE_DICE_FLOOR, dice
