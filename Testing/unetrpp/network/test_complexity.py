"""Parameter and multiply-add counts of the network."""

from __future__ import annotations

import math

import torch
from unetrpp.network import build_network
from unetrpp.network.complexity import measure_complexity
from unetrpp.network.epa import EfficientPairedAttention
from vendored_data import data_path


def _official_parameter_count(variant: str) -> int:
    """Distinct trainable values listed in the reference's state_dict (buffers and the synapse
    variant's second name for the shared E/F layer excluded)."""
    total = 0
    path = data_path("fixtures", "unetrpp_official", f"{variant}_state_dict.tsv")
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


def _multiply_adds_by_hand(network: torch.nn.Module, patch_size: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass, from the layer shapes the pass meets (a second count, not
    FlopCounterMode): a convolution costs (output values) x (input channels per group) x (kernel
    volume), a transposed one (input values) x (output channels per group) x (kernel volume), a linear
    layer (output values) x (input features); an EPA block adds its four attention products, which are
    not layers: channel q k^T and attn v, h * d * d * N each, and spatial q^T k_P and attn v_P^T,
    h * N * P * d each, i.e. 2 * N * C * (d + P) in all (epa.py)."""
    total = 0

    def convolution(module, inputs, output):
        nonlocal total
        total += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    def transposed(module, inputs, output):
        nonlocal total
        total += inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)

    def linear(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    def attention(module, inputs, output):
        nonlocal total
        batch, tokens, channels = inputs[0].shape
        projected = module.EF.shape[1] if hasattr(module, "EF") else module.E.out_features
        total += 2 * batch * tokens * channels * (channels // module.num_heads + projected)

    hooks = []
    for module in network.modules():
        if isinstance(module, torch.nn.ConvTranspose3d):
            hooks.append(module.register_forward_hook(transposed))
        elif isinstance(module, torch.nn.Conv3d):
            hooks.append(module.register_forward_hook(convolution))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(linear))
        elif isinstance(module, EfficientPairedAttention):
            hooks.append(module.register_forward_hook(attention))
    try:
        with torch.inference_mode():
            network.eval()(torch.zeros(1, 1, *patch_size))
    finally:
        for hook in hooks:
            hook.remove()
        network.train()
    return total


def test_multiply_adds_scale_with_patch_volume_and_count_parameters():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False)
    small = measure_complexity(network, 1, (16, 32, 32))
    assert small.parameters == sum(p.numel() for p in network.parameters())
    # The 3x3x3 convolution of the full-resolution conv stem alone: 27 * in * out MACs per voxel.
    stem_macs = 27 * 1 * 4 * 16 * 32 * 32
    assert small.multiply_adds > stem_macs
    assert network.training  # the measurement restores the mode it found
    # The whole count, layer by layer (the benchmark's GMAC figures rest on it).
    assert small.multiply_adds == _multiply_adds_by_hand(network, (16, 32, 32))
    # Every layer, the attention included (E/F are sized to N, so EPA is linear in N), costs the same
    # per voxel at every patch size: eight times the voxels, eight times the multiply-adds.
    large_network = build_network("synapse", patch_size=(32, 64, 64), feature_size=4, deep_supervision=False)
    large = measure_complexity(large_network, 1, (32, 64, 64))
    assert large.multiply_adds == _multiply_adds_by_hand(large_network, (32, 64, 64))
    assert large.multiply_adds == 8 * small.multiply_adds
