"""Per-slice preprocessing on several threads: every slice once, errors raised, results bitwise those of
one thread (the in-plane resampling with repeated slices, the body mask's hole filling)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from unetrpp.models.cards import ChannelNormalization, Plans
from unetrpp.pipeline.body_crop import body_mask
from unetrpp.pipeline.preprocess import preprocess
from unetrpp.pipeline.slice_threads import for_each_slice


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test; the previous count comes back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 3])
def test_every_slice_is_done_once_on_the_pool_when_torch_has_threads(torch_threads, threads):
    torch_threads(threads)
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with lock:
            seen.append((index, threading.current_thread().name))

    for_each_slice(work, range(20))
    assert sorted(index for index, _ in seen) == list(range(20))
    names = {name for _, name in seen}
    if threads == 1:
        assert names == {threading.current_thread().name}
    else:
        assert all(name.startswith("unetrpp-slices") for name in names)


def test_an_error_in_one_slice_is_raised(torch_threads):
    torch_threads(2)

    def work(index: int) -> None:
        if index == 7:
            raise ValueError("slice 7 is bad")

    with pytest.raises(ValueError, match="slice 7 is bad"):
        for_each_slice(work, range(12))


def _ct(seed: int = 0) -> sitk.Image:
    """A noisy CT-like volume with a body (a box holding a lung of air) and air around it; z spacing
    4 mm against in-plane 0.8 mm, so preprocessing resamples each axial slice in-plane."""
    rng = np.random.default_rng(seed)
    array = rng.normal(-1000.0, 20.0, (9, 40, 36)).astype(np.float32)
    array[:, 6:34, 5:31] += 1040.0
    array[:, 12:20, 10:18] -= 900.0  # air enclosed in every axial slice
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 4.0))
    return image


def test_preprocessing_and_the_body_mask_are_bitwise_those_of_one_thread(torch_threads):
    ct = ChannelNormalization("CT", False, mean=50.0, sd=200.0, lower_bound=-1000.0, upper_bound=1000.0)
    # z 4.0 -> 2.5 mm repeats source slices (each resized once); in-plane 0.8 -> 0.7 mm
    plans = Plans(
        channels=(ct,),
        target_spacing_zyx=(2.5, 0.7, 0.7),
        patch_size_zyx=(8, 16, 16),
        num_classes=2,
        transpose_forward=(0, 1, 2),
        transpose_backward=(0, 1, 2),
    )
    image = _ct()
    results = {}
    for threads in (1, 2):
        torch_threads(threads)
        results[threads] = (preprocess([image], plans)[0], body_mask(image))
    (one_array, one_mask), (two_array, two_mask) = results[1], results[2]
    assert one_array.shape[1] == 14  # upsampled in z: some source slices picked twice
    np.testing.assert_array_equal(two_array, one_array)
    np.testing.assert_array_equal(two_mask, one_mask)
    assert one_mask[:, 15, 14].all()  # the enclosed air is body
