"""UNETR++ is the paper's network: official keys/shapes, the reference's numbers, other patch sizes."""

from __future__ import annotations

import pytest
import torch
from unetrpp.network import VARIANTS, build_network
from vendored_data import data_path, golden_sample, small_golden

OFFICIAL = ("unetrpp_official",)


def _official_entries(variant: str) -> list[tuple[str, tuple[int, ...], str]]:
    path = data_path("fixtures", *OFFICIAL, f"{variant}_state_dict.tsv")
    entries = []
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        entries.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return entries


@pytest.mark.parametrize("variant", ["synapse", "acdc", "lung", "tumor"], ids=str)
def test_state_dict_has_official_keys_shapes_dtypes_and_order(variant):
    expected = _official_entries(variant)
    with torch.device("meta"):  # full-size networks without allocating their weights
        network = build_network(variant)
    actual = [
        (k, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in network.state_dict().items()
    ]
    assert actual == expected


def test_synapse_shares_one_layer_as_e_and_f():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4)
    epa = network.unetr_pp_encoder.stages[0][0].epa_block
    assert epa.E is epa.F
    assert (
        epa.E.weight.data_ptr()
        == network.state_dict()["unetr_pp_encoder.stages.0.0.epa_block.F.weight"].data_ptr()
    )


def test_reproduces_reference_outputs_of_small_golden():
    golden = small_golden()
    config = golden["config"]
    network = build_network(
        "synapse",
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        patch_size=tuple(config["img_size"]),
        feature_size=config["feature_size"],
        dims=tuple(config["dims"]),
        depths=tuple(config["depths"]),
        num_heads=config["num_heads"],
        deep_supervision=config["do_ds"],
    )
    network.load_state_dict(golden["state_dict"], strict=True)
    network.eval()
    with torch.inference_mode():
        outputs = network(golden["input"])
    assert len(outputs) == 3
    full, *deep = outputs
    assert list(full.shape) == golden["full_resolution_shape"]
    # Testing/data keeps both deep-supervision outputs whole and the full-resolution output on a fixed
    # grid of 16 x 32 x 32 voxels (derive_small_golden.py); the whole input and state_dict are kept.
    pairs = [(golden_sample(full, golden), golden["outputs_full_resolution_sample"])]
    pairs += list(zip(deep, golden["outputs_deep_supervision"], strict=True))
    for actual, expected in pairs:
        assert actual.shape == expected.shape
        assert (actual - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    ("variant", "patch_size"),
    [("synapse", (32, 64, 96)), ("acdc", (8, 32, 64)), ("lung", (16, 32, 32)), ("tumor", (32, 64, 32))],
    ids=["synapse", "acdc", "lung", "tumor"],
)
def test_non_native_patch_size_trains_end_to_end(variant, patch_size):
    torch.manual_seed(0)
    network = build_network(variant, patch_size=patch_size, feature_size=4, out_channels=3)
    in_channels = VARIANTS[variant].in_channels
    image = torch.randn(2, in_channels, *patch_size)
    outputs = network(image)
    assert [tuple(o.shape) for o in outputs][0] == (2, 3, *patch_size)
    stem = VARIANTS[variant].stem_stride
    assert tuple(outputs[1].shape[2:]) == tuple(s // k for s, k in zip(patch_size, stem))
    assert tuple(outputs[2].shape[2:]) == tuple(s // k // 2 for s, k in zip(patch_size, stem))
    loss = sum(o.square().mean() for o in outputs)
    loss.backward()
    grads = [p.grad for p in network.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Gradients reach both ends of the network: the stem and the output head.
    assert network.unetr_pp_encoder.downsample_layers[0][0].conv.weight.grad.abs().sum() > 0
    assert network.out1.conv.conv.weight.grad.abs().sum() > 0


def test_eval_forward_returns_full_resolution_logits_without_deep_supervision():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4, deep_supervision=False).eval()
    assert not hasattr(network, "out2")
    with torch.inference_mode():
        logits = network(torch.randn(1, 1, 16, 32, 32))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 14, 16, 32, 32)


def test_deep_supervision_can_be_switched_off_after_building():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4).eval()
    network.deep_supervision = False
    with torch.inference_mode():
        assert network(torch.randn(1, 1, 16, 32, 32)).shape == (1, 14, 16, 32, 32)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"patch_size": (20, 64, 64)}, "axis 0 (20) is not divisible by 16"),
        ({"dims": (8, 16, 32, 64)}, "must be feature_size x (2, 4, 8, 16)"),
        ({"nonsense": 1}, "unknown network option"),
    ],
    ids=["patch-not-divisible", "dims-inconsistent", "unknown-option"],
)
def test_bad_options_are_named(overrides, fragment):
    with pytest.raises((ValueError, TypeError), match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build_network("synapse", **overrides)


def test_unknown_variant_suggests_closest():
    with pytest.raises(ValueError, match="did you mean 'synapse'"):
        build_network("synapes")


def test_wrong_input_size_is_refused_with_patch_size_in_message():
    network = build_network("synapse", patch_size=(16, 32, 32), feature_size=4).eval()
    with pytest.raises(ValueError, match=r"patch size \(16, 32, 32\)"):
        network(torch.randn(1, 1, 16, 32, 64))
