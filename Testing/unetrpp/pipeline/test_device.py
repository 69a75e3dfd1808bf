"""Device choice: auto falls back to the CPU, an explicit CUDA request never does."""

from __future__ import annotations

import pytest
import torch
from unetrpp.errors import UnetrppError
from unetrpp.pipeline.device import resolve_device


def test_cpu_and_auto_resolve_to_a_usable_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_request_without_cuda_names_the_problem(name):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so the request is valid")
    with pytest.raises(UnetrppError, match="CUDA was requested"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(UnetrppError, match="unknown device"):
        resolve_device(name)


@pytest.mark.gpu
def test_cuda_index_out_of_range_is_refused():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(UnetrppError, match="only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
