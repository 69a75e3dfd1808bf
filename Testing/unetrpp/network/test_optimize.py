"""optimize_for_inference: a copy that computes what the eval-mode original computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from unetrpp.network import build_network
from unetrpp.network.epa import EfficientPairedAttention
from unetrpp.network.optimize import (
    BatchStatsInstanceNorm3d,
    BroadcastPointwiseConv3d,
    GemmPointwiseConv3d,
    OneDNNConv3d,
    fold_batch_norms,
    optimize_for_inference,
)

TINY = {
    "patch_size": (16, 32, 32),
    "feature_size": 4,
    "out_channels": 3,
    "deep_supervision": False,
}


def _randomise_batch_norm_statistics(network: nn.Module, generator: torch.Generator) -> None:
    """Fresh BatchNorm is the identity in eval mode (mean 0, var 1, gamma 1, beta 0): give it real work."""
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm3d):
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(channels, generator=generator) * 2 + 0.2)
                module.weight.copy_(1 + 0.3 * torch.randn(channels, generator=generator))
                module.bias.copy_(0.3 * torch.randn(channels, generator=generator))


def _build(variant: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    network = build_network(variant, **overrides)
    _randomise_batch_norm_statistics(network, torch.Generator().manual_seed(1))
    # Layer scale starts at 1e-6, which would hide the attention path from the comparison.
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(0.5)
    return network.eval()


def _max_relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((expected - actual).abs().max() / expected.abs().max())


@pytest.mark.parametrize("variant", ["synapse", "acdc", "tumor"], ids=["shared-EF", "conv52", "four-inputs"])
def test_optimized_tiny_network_equals_original_in_eval_mode(variant):
    stem_z = {"synapse": 16, "acdc": 8, "tumor": 32}[variant]
    network = _build(variant, **{**TINY, "patch_size": (stem_z, 32, 32)})
    optimized = optimize_for_inference(network)
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(2, network.config.in_channels, stem_z, 32, 32, generator=generator)
    with torch.inference_mode():
        expected, actual = network(image), optimized(image)
        single = optimized(image[:1])  # batch 1: the batch-statistics instance norms
    assert actual.shape == expected.shape
    assert _max_relative_error(expected, actual) < 1e-4
    assert _max_relative_error(expected[:1], single) < 1e-4
    assert single.is_contiguous(memory_format=torch.channels_last_3d)  # the head ran channels-last
    assert not any(isinstance(m, nn.BatchNorm3d) for m in optimized.modules())
    assert any(isinstance(m, OneDNNConv3d) for m in optimized.modules())


def test_original_network_is_left_untouched_and_copy_keeps_config():
    network = _build("synapse", **TINY)
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimized = optimize_for_inference(network)
    assert network.training and not optimized.training
    assert optimized.config == network.config
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm3d) for m in network.modules()) > 0


def test_fold_counts_every_residual_block_norm_and_refuses_training_mode():
    network = _build("acdc", **{**TINY, "patch_size": (8, 32, 32)})
    # acdc: conv51 + conv52 per EPA block, two BN each; 4 encoder stages x 3 + 3 decoder stages x 3 blocks.
    expected = 2 * 2 * (4 * 3 + 3 * 3)
    network.train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(network)
    network.eval()
    assert fold_batch_norms(network) == expected
    assert fold_batch_norms(network) == 0  # nothing left to fold


def test_onednn_conv_equals_conv3d_in_float32_and_defers_under_autocast():
    generator = torch.Generator().manual_seed(3)
    for in_channels, size in ((1, 12), (16, 6)):  # both sizes fall off oneDNN by PyTorch's own rule
        conv = nn.Conv3d(in_channels, 8, 3, padding=1)
        pinned = nn.Conv3d(in_channels, 8, 3, padding=1)
        pinned.load_state_dict(conv.state_dict())
        pinned.__class__ = OneDNNConv3d
        features = torch.randn(1, in_channels, size, size, size, generator=generator)
        with torch.inference_mode():
            assert torch.allclose(pinned(features), conv(features), atol=1e-5)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert pinned(features).dtype == torch.bfloat16


def test_attention_heads_are_contiguous_in_the_copy_only():
    """The layout fix: E/F get a contiguous (B, h, d, N) input, so no per-head copy of their weight."""
    network = _build("synapse", **TINY)
    optimized = optimize_for_inference(network)
    seen: dict[str, list[bool]] = {"built": [], "optimized": []}
    for key, model in (("built", network), ("optimized", optimized)):
        for module in model.modules():
            if isinstance(module, EfficientPairedAttention):
                module.E.register_forward_pre_hook(
                    lambda _m, args, key=key: seen[key].append(args[0].is_contiguous())
                )
    image = torch.randn(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        network(image), optimized(image)
    assert seen["optimized"] and all(seen["optimized"])
    assert seen["built"] and not all(seen["built"])  # the reference layout, kept as built


@pytest.mark.parametrize(
    ("in_channels", "kind", "bias"),
    [
        (1, BroadcastPointwiseConv3d, False),
        (1, BroadcastPointwiseConv3d, True),
        (5, GemmPointwiseConv3d, True),
    ],
    ids=["one-channel", "one-channel-bias", "gemm"],
)
def test_pointwise_convs_are_products_with_the_convolutions_results(in_channels, kind, bias):
    conv = nn.Conv3d(in_channels, 6, 1, bias=bias)
    product = nn.Conv3d(in_channels, 6, 1, bias=bias)
    product.load_state_dict(conv.state_dict())
    product.__class__ = kind
    features = torch.randn(2, in_channels, 5, 6, 7, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        torch.testing.assert_close(product(features), conv(features), rtol=1e-5, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(
                product(features).float(), conv(features).float(), rtol=2e-2, atol=2e-2
            )


def test_batch_statistics_instance_norm_equals_instance_norm_in_both_layouts():
    features = torch.randn(1, 6, 5, 7, 9, generator=torch.Generator().manual_seed(8)) * 3 + 1
    for affine in (False, True):
        norm = nn.InstanceNorm3d(6, affine=affine)
        if affine:
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-1, 1)
        batch_stats = nn.InstanceNorm3d(6, affine=affine)
        batch_stats.load_state_dict(norm.state_dict())
        batch_stats.__class__ = BatchStatsInstanceNorm3d
        with torch.inference_mode():
            expected = norm(features)
            for layout in (torch.contiguous_format, torch.channels_last_3d):
                torch.testing.assert_close(batch_stats(features.contiguous(memory_format=layout)), expected)
            two = torch.cat([features, features * 2])
            torch.testing.assert_close(batch_stats(two), norm(two))


def test_gemm_pointwise_conv_keeps_channels_last_maps_channels_last():
    conv = nn.Conv3d(5, 3, 1)
    product = nn.Conv3d(5, 3, 1)
    product.load_state_dict(conv.state_dict())
    product.__class__ = GemmPointwiseConv3d
    features = torch.randn(2, 5, 4, 6, 8, generator=torch.Generator().manual_seed(9))
    channels_last = features.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        output = product(channels_last)
        torch.testing.assert_close(output, conv(features), rtol=1e-5, atol=1e-6)
    assert output.is_contiguous(memory_format=torch.channels_last_3d)


def test_every_pointwise_conv_of_the_copy_is_a_product():
    optimized = optimize_for_inference(_build("synapse", **TINY))
    assert isinstance(optimized.encoder1.conv3.conv, BroadcastPointwiseConv3d)
    assert isinstance(optimized.out1.conv.conv, GemmPointwiseConv3d)
    pointwise = [m for m in optimized.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (1, 1, 1)]
    assert pointwise and all(
        isinstance(m, (BroadcastPointwiseConv3d, GemmPointwiseConv3d)) for m in pointwise
    )


def test_bf16_copy_takes_float32_returns_bf16_and_stays_close():
    network = _build("synapse", **TINY)
    optimized = optimize_for_inference(network, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in optimized.parameters())
    image = torch.randn(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = network(image)
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                actual = optimized(image)
            assert actual.dtype == torch.bfloat16
            assert _max_relative_error(expected, actual.float()) < 5e-2


@pytest.mark.slow
def test_optimized_synapse_network_equals_original_on_one_native_tile():
    network = _build("synapse", deep_supervision=False)
    optimized = optimize_for_inference(network)
    tile = torch.randn(1, 1, 64, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected, actual = network(tile), optimized(tile)
    # The channels-last batch-norm statistics sum 2^20 voxels per channel in float32: ~1e-4 relative.
    assert _max_relative_error(expected, actual) < 5e-4
    agreement = (expected.argmax(1) == actual.argmax(1)).float().mean().item()
    assert agreement > 0.9999  # random weights have near ties
