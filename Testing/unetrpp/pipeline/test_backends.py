"""``--backend``: OpenVINO on the CPU gives torch's labels, converts once and keeps the result in a
cache that is checked before each use (a damaged entry is rebuilt, other weights get their own); auto is
torch on CUDA and for small networks; a missing OpenVINO is one line naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_models import ct_plans, tiny_synapse_model
from unetrpp.errors import UnetrppError
from unetrpp.pipeline.backends import MIN_OPENVINO_PARAMETERS, Backend, resolve_backend
from unetrpp.pipeline.predictor import segment
from unetrpp.pipeline.segment_types import SegmentOptions

pytest.importorskip("openvino")


def _synthetic_ct() -> sitk.Image:
    """A body (40 HU) with an organ (100 HU) in air: four tiles of the tiny network."""
    z, y, x = np.mgrid[:14, :40, :48]
    body = ((x - 24) / 20) ** 2 + ((y - 20) / 16) ** 2 < 1
    organ = ((x - 16) / 7) ** 2 + ((y - 18) / 6) ** 2 + ((z - 7) / 4) ** 2 < 1
    image = sitk.GetImageFromArray((np.where(body, 40, -1000) + np.where(organ, 60, 0)).astype(np.int16))
    image.SetSpacing((1.2, 1.3, 2.5))
    return image


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETRPP_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "openvino-cache"


def _labels(model, backend: str, precision: str = "fp32") -> np.ndarray:
    options = SegmentOptions(device="cpu", backend=backend, precision=precision)
    return sitk.GetArrayFromImage(segment(_synthetic_ct(), model, options=options).label_map)


def _entry(cache):
    (folder,) = cache.iterdir()
    return folder


def test_openvino_fp32_gives_torchs_labels_and_converts_once(cache):
    model = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5)))
    reference = _labels(model, "torch")
    np.testing.assert_array_equal(_labels(model, "openvino"), reference)
    weights = _entry(cache) / "model.bin"
    converted = weights.stat().st_mtime_ns
    from unetrpp.pipeline import backends

    backends._compiled.clear()  # as a new process would: only the files on disk remain
    np.testing.assert_array_equal(_labels(model, "openvino"), reference)
    assert weights.stat().st_mtime_ns == converted  # read from the cache, not converted again


def test_a_damaged_cache_entry_is_rebuilt_and_other_weights_get_their_own(cache):
    from unetrpp.pipeline import backends

    model = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5)))
    reference = _labels(model, "openvino")
    folder = _entry(cache)
    weights = folder / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated copy
    backends._compiled.clear()
    np.testing.assert_array_equal(_labels(model, "openvino"), reference)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    import hashlib

    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["files"]["model.bin"]

    other = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5)))
    with torch.no_grad():
        next(other.network.parameters()).add_(0.5)
    _labels(other, "openvino")
    assert len(list(cache.iterdir())) == 2  # a second entry, the first one not reused for it


def test_auto_is_torch_on_cuda_and_for_small_networks_and_openvino_for_large_ones():
    tiny = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5))).network
    assert sum(p.numel() for p in tiny.parameters()) < MIN_OPENVINO_PARAMETERS
    large = torch.nn.Linear(4000, 2600)  # 10.4 M parameters
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, tiny) is Backend.TORCH
    assert resolve_backend("auto", cpu, large) is Backend.OPENVINO
    assert resolve_backend("auto", cuda, large) is Backend.TORCH
    with pytest.raises(UnetrppError, match="runs on the CPU only"):
        resolve_backend("openvino", cuda, large)
    with pytest.raises(UnetrppError, match="runs on the CPU only"):
        SegmentOptions(device="cuda", backend="openvino")
    with pytest.raises(UnetrppError, match="unknown backend 'onnx'"):
        SegmentOptions(backend="onnx")


def test_without_openvino_the_openvino_backend_is_one_line_naming_the_extra(tmp_path):
    code = (
        "import sys; sys.modules['openvino'] = None; from unetrpp.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    command = [
        sys.executable,
        "-c",
        code,
        "segment",
        str(tmp_path / "in.nii.gz"),
        str(tmp_path / "o.seg.nrrd"),
    ]
    completed = subprocess.run(
        [*command, "--model", "demo", "--backend", "openvino"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        "unetrpp: error: the OpenVINO backend needs OpenVINO, which is not installed: pip install "
        '"unetrpp[openvino]" (or use --backend torch)'
    )


def test_the_conversion_runs_in_a_child_process_and_leaves_only_the_entry(cache, monkeypatch):
    """Converting synapse takes about 1.5 GB for 10-20 s: in a child, it is not added to inference's peak."""
    import openvino
    from unetrpp.network import openvino_runtime

    def converting_here(*args, **kwargs):
        raise AssertionError("the network was converted in the inference process")

    monkeypatch.setattr(openvino, "convert_model", converting_here)
    network = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5))).network.eval()
    key = openvino_runtime.CacheKey(
        openvino_runtime.weights_sha256(network),
        openvino.get_version(),
        "f32",
        (1, 1, *network.config.patch_size),
        "f32",
    )
    xml = openvino_runtime.converted_model_path(network, key)
    assert sorted(p.name for p in xml.parent.iterdir()) == ["manifest.json", "model.bin", "model.xml"]
    assert [p.name for p in cache.iterdir()] == [xml.parent.name]  # no staging folder, no network file left


def test_a_failed_conversion_is_one_line_and_leaves_no_entry(cache):
    from unetrpp.network import openvino_runtime

    network = torch.nn.Conv3d(3, 2, 3)  # the key's input has 1 channel: tracing fails in the child
    key = openvino_runtime.CacheKey("0" * 64, "any", "f32", (1, 1, 8, 8, 8), "f32")
    with pytest.raises(
        UnetrppError, match="^OpenVINO could not convert the network: .+; use --backend torch$"
    ):
        openvino_runtime.converted_model_path(network, key)
    assert list(cache.iterdir()) == []


def test_bf16_entries_store_fp16_weights_and_f32_entries_fp32(cache):
    """OpenVINO keeps the IR's weights resident: fp16 storage halves them for bf16 inference, while f32
    inference keeps fp32 weights so as to give torch's labels (the test above)."""
    from unetrpp.network import openvino_runtime

    network = tiny_synapse_model(ct_plans((3.0, 1.5, 1.5))).network.eval()
    weights = {}
    for precision in ("bf16", "f32"):
        openvino_runtime.compile_network(network, precision)
        (folder,) = [path for path in cache.iterdir() if f"-{precision}-" in path.name]
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["key"]["weights_storage"] == openvino_runtime.ir_weights_storage(precision)
        weights[precision] = (folder / "model.bin").stat().st_size
    assert openvino_runtime.ir_weights_storage("bf16") == "f16"
    assert weights["bf16"] < 0.6 * weights["f32"]
