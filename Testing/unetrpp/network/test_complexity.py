"""Parameter and multiply-add counts of the network."""

from __future__ import annotations

import math

import torch
from shared_contracts import shared_path
from unetrpp.network import build_network
from unetrpp.network.complexity import measure_complexity


def _official_parameter_count(variant: str) -> int:
    """Distinct trainable values listed in the reference's state_dict (buffers and the synapse
    variant's second name for the shared E/F layer excluded)."""
    total = 0
    path = shared_path("fixtures", "unetrpp_official", f"{variant}_state_dict.tsv")
    for line in path.read_text().splitlines():
        key, shape, _ = line.split("\t")
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")) or ".epa_block.F." in key:
            continue
        total += math.prod(int(s) for s in shape.split(",")) if shape else 1
    return total


def test_synapse_parameter_count_equals_reference_state_dict():
    with torch.device("meta"):
        network = build_network("synapse")
    assert sum(p.numel() for p in network.parameters()) == _official_parameter_count("synapse")


def test_multiply_adds_scale_with_patch_volume_and_count_parameters():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False)
    small = measure_complexity(network, 1, (16, 32, 32))
    assert small.parameters == sum(p.numel() for p in network.parameters())
    # The 3x3x3 convolution of the full-resolution conv stem alone: 27 * in * out MACs per voxel.
    stem_macs = 27 * 1 * 4 * 16 * 32 * 32
    assert small.multiply_adds > stem_macs
    assert network.training  # the measurement restores the mode it found
