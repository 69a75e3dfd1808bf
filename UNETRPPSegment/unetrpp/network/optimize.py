"""An inference-only copy of a network that computes the same function with less work on CPU.

Each rewrite was measured one at a time on the synapse network (``benchmarks/RESULTS.md``):

* **Fold eval-mode BatchNorm into the preceding convolution.** The residual blocks after every EPA
  block (``conv51``/``conv52``, MONAI ``UnetResBlock`` with ``norm_name="batch"``) run conv -> BN; in eval
  mode BN is a per-channel affine map, so it folds into the convolution's weight and a new bias and the
  BN pass over the feature map disappears. Exact up to float32 rounding.
* **Keep float32 convolutions on oneDNN.** For a batch-1 float32 input PyTorch picks oneDNN only when
  N*C*D*H of the input exceeds 20480; the 3x3x3 convolutions of the deep stages (64 channels at 16^3,
  128 at 8^3, 256 at 4^3) and the one-channel stem ``encoder1.conv1`` fall back to the unfold + GEMM
  ``slow_conv3d_forward``, which is 1.2-4x slower for them on this CPU. :class:`OneDNNConv3d` calls
  oneDNN directly for float32 CPU inputs and defers to the normal path otherwise (bf16 inputs and
  autocast already take oneDNN).
* **Contiguous attention heads.** Every EPA block gets ``contiguous_heads`` (see
  :class:`~unetrpp.network.epa.EfficientPairedAttention`): one copy of the head-split projections
  instead of a per-head copy of the E/F weights; the tile went from 0.69 to 0.55 s (bf16, 2 threads).
* **Pointwise (1x1x1) convolutions as matrix products.** oneDNN's 1x1x1 convolutions are slow on
  channels-first maps. :class:`GemmPointwiseConv3d` computes ``W @ x`` (0.53 -> 0.50 s per tile in bf16,
  1.21 -> 1.09 s in fp32); from one input channel (``encoder1.conv3``) it is a broadcast product,
  :class:`BroadcastPointwiseConv3d` (37 -> 11 ms).
* **Full-resolution blocks in channels-last memory.** UNETR++'s conv stem (``encoder1``), last decoder
  stage (``decoder2``) and head (``out1``) run on 64x128x128 maps with 16 channels, where oneDNN's
  convolutions are about 1.7x faster channels-last (16 -> 16 3x3x3: 48 -> 29 ms; the transposed
  convolution 46 -> 14 ms, bf16). Their instance norms become :class:`BatchStatsInstanceNorm3d`, since
  ``instance_norm`` on channels-last maps was 3x slower. 0.43 -> 0.36-0.40 s per tile (bf16; 1.11 -> 0.88 s
  in fp32); the other
  blocks stay channels-first (their attention reshapes would pay for every conversion).
* **bf16 weights** (``dtype=torch.bfloat16``, optional): on CPUs with AVX512-BF16/AMX, storing the weights
  in bf16 saves the per-call weight casts of bf16 autocast. The copy then takes float32 or bf16 input and
  returns bf16, so the caller casts once to what it keeps (bf16 -> float16 took 2 ms for a synapse tile's
  logits, bf16 -> float32 15 ms). Not exact: relative error about 1e-2 on logits, like bf16 autocast.

The copy is for inference only: its ``state_dict`` no longer matches official checkpoints (no BN
entries), so load weights first and optimize afterwards.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from unetrpp.network.epa import EfficientPairedAttention

__all__ = [
    "optimize_for_inference",
    "fold_batch_norms",
    "OneDNNConv3d",
    "BroadcastPointwiseConv3d",
    "GemmPointwiseConv3d",
    "BatchStatsInstanceNorm3d",
    "use_channels_last_full_resolution",
    "use_onednn_convolutions",
]

logger = logging.getLogger(__name__)

# A block holds conv{i} followed by norm{i} in its forward pass (MONAI UnetResBlock/UnetBasicBlock).
_CONV_NORM_PAIRS = (("conv1", "norm1"), ("conv2", "norm2"), ("conv3", "norm3"))


def optimize_for_inference(
    network: nn.Module,
    *,
    fold_batch_norm: bool = True,
    onednn_convolutions: bool = True,
    contiguous_heads: bool = True,
    pointwise_products: bool = True,
    channels_last: bool = True,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Return an eval-mode copy of ``network`` that computes the same outputs faster on CPU.

    Args:
        network: a UNETR++ (or any module built from MONAI conv blocks); left unchanged.
        fold_batch_norm: fold eval BatchNorm into the preceding convolution (default True).
        onednn_convolutions: run float32 3D convolutions through oneDNN even where PyTorch's size
            heuristic would not (default True); see :class:`OneDNNConv3d`.
        contiguous_heads: lay EPA's head-split projections out contiguously (default True).
        pointwise_products: compute 1x1x1 convolutions as matrix or broadcast products (default True).
        channels_last: run the full-resolution blocks in channels-last memory (default True); see
            :func:`use_channels_last_full_resolution`.
        dtype: ``torch.bfloat16`` to store parameters in bf16 (input cast to bf16, output returned as
            bf16); None (default) keeps float32 and float32-exact outputs.

    Returns:
        A deep copy in eval mode with ``requires_grad`` off. With ``dtype=None`` its outputs equal
        ``network``'s in eval mode to float32 rounding: 3e-7 relative without ``channels_last``, 1e-4
        with it (the channels-last batch-norm kernel sums a million voxels per channel in float32;
        28 of 2^20 argmaxes moved on a native synapse tile with random, near-tied weights).
        Attributes such as ``config`` and ``deep_supervision`` are kept.
    """
    optimized = copy.deepcopy(network).eval()
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    if fold_batch_norm:
        logger.debug("folded %d BatchNorm layers", fold_batch_norms(optimized))
    if onednn_convolutions:
        logger.debug("%d convolutions pinned to oneDNN", use_onednn_convolutions(optimized))
    for module in optimized.modules():
        if contiguous_heads and isinstance(module, EfficientPairedAttention):
            module.contiguous_heads = True
        elif pointwise_products and _is_pointwise(module):
            module.__class__ = BroadcastPointwiseConv3d if module.in_channels == 1 else GemmPointwiseConv3d
    if channels_last:
        logger.debug("%d full-resolution blocks channels-last", use_channels_last_full_resolution(optimized))
    if dtype is not None:
        _store_in(optimized, dtype)
    return optimized


def _as_conv3d(module: nn.Module | None) -> nn.Conv3d | None:
    """The Conv3d a block attribute stands for: itself, or the only child of a MONAI ``Convolution``."""
    if isinstance(module, nn.Conv3d):
        return module
    if isinstance(module, nn.Sequential) and len(module) == 1 and isinstance(module[0], nn.Conv3d):
        return module[0]
    return None


@torch.no_grad()
def _fold(conv: nn.Conv3d, norm: _BatchNorm) -> None:
    """conv then eval BN -> one conv: w' = w*s, b' = (b - mean)*s + beta, with s = gamma / sqrt(var + eps)."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.affine:
        scale = scale * norm.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - norm.running_mean.double()) * scale
    if norm.affine:
        bias = bias + norm.bias.double()
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.copy_((conv.weight.double() * scale.view(shape)).to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batch_norms(network: nn.Module) -> int:
    """Fold every eval-mode ``norm{i}`` BatchNorm into its block's ``conv{i}``, in place.

    Only blocks whose ``conv{i}`` is a plain convolution (no activation or norm inside) and whose
    ``norm{i}`` is a BatchNorm with running statistics are changed; the norm becomes ``nn.Identity``.

    Returns:
        The number of BatchNorm layers folded.

    Raises:
        ValueError: a BatchNorm to fold is in training mode (it would use batch statistics).
    """
    folded = 0
    for block in network.modules():
        for conv_name, norm_name in _CONV_NORM_PAIRS:
            conv = _as_conv3d(getattr(block, conv_name, None))
            norm = getattr(block, norm_name, None)
            if conv is None or not isinstance(norm, _BatchNorm) or norm.running_var is None:
                continue
            if norm.training:
                raise ValueError("fold_batch_norms needs a network in eval mode (call .eval() first)")
            _fold(conv, norm)
            setattr(block, norm_name, nn.Identity())
            folded += 1
    return folded


class OneDNNConv3d(nn.Conv3d):
    """A ``Conv3d`` that sends float32 CPU inputs to oneDNN whatever their size.

    Everything else (autocast, bf16 inputs, CUDA, non-zero padding modes) goes through
    ``nn.Conv3d.forward`` unchanged, so the module is a drop-in replacement with the same parameters.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if (
            features.device.type == "cpu"
            and features.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):
            layout = torch.channels_last_3d if _is_channels_last(features) else torch.contiguous_format
            return torch.ops.aten.mkldnn_convolution(
                features.contiguous(memory_format=layout),
                self.weight,
                self.bias,
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
            )
        return super().forward(features)


class BroadcastPointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``Conv3d`` from one input channel, computed as ``x * w + b`` (a broadcast product).

    Same arithmetic as the convolution (one product per output value, no sum), about 3x faster on CPU.
    Under bf16 autocast with float32 weights the product stays in float32 (more precise, not less).
    ``channels_last`` asks for a channels-last output (a one-channel input does not say which layout
    the block around it uses; adding maps of mixed layouts is 10x slower).
    """

    channels_last: bool = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = self.weight.view(1, -1, 1, 1, 1)
        if self.channels_last:
            shape = (features.shape[0], self.out_channels, *features.shape[2:])
            dtype = torch.promote_types(features.dtype, weight.dtype)
            layout = torch.channels_last_3d
            output = torch.empty(shape, dtype=dtype, device=features.device, memory_format=layout)
            torch.mul(features, weight, out=output)
        else:
            output = features * weight
        if self.bias is not None:
            output += self.bias.view(1, -1, 1, 1, 1)
        return output


class GemmPointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``Conv3d`` computed as one matrix product ``W @ x`` per sample (autocast applies to it
    as to the convolution). oneDNN's 1x1x1 convolution is slow on channels-first maps: the output
    block alone (16 -> 14 channels at 64x128x128) took 23 ms as a convolution, 2.6 ms as a product."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = features.shape
        weight = self.weight.reshape(self.out_channels, channels)
        if _is_channels_last(features):  # (B, D, H, W, C) in memory: x @ W^T, channels-last out
            rows = features.permute(0, 2, 3, 4, 1).reshape(-1, channels)
            if self.bias is None:
                output = torch.mm(rows, weight.t())
            else:  # the bias inside the product: a separate add over (N, 14) rows took 18 ms
                output = torch.addmm(self.bias, rows, weight.t())
            return output.view(batch, *spatial, self.out_channels).permute(0, 4, 1, 2, 3)
        output = torch.matmul(weight, features.reshape(batch, channels, -1))
        if self.bias is not None:
            output = output + self.bias.view(1, -1, 1).to(output.dtype)
        return output.view(batch, self.out_channels, *spatial)


class BatchStatsInstanceNorm3d(nn.InstanceNorm3d):
    """Instance norm of one sample computed as batch norm with batch statistics: the same formula
    (per-channel mean and biased variance over the sample), but batch norm has a channels-last CPU
    kernel (16 ms instead of 35 ms for 16 channels at 64x128x128 in bf16, 25 instead of 70 ms in
    float32). Its float32 sums are less exact (5e-4 absolute on normalised values, against 6e-7).
    Batches of several samples and running statistics go through ``nn.InstanceNorm3d`` unchanged."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[0] != 1 or self.track_running_stats:
            return super().forward(features)
        return F.batch_norm(features, None, None, self.weight, self.bias, training=True, eps=self.eps)


# UNETR++'s blocks at the input resolution: the conv stem, the last decoder stage and the head.
_FULL_RESOLUTION_BLOCKS = ("encoder1", "decoder2", "out1")


def use_channels_last_full_resolution(network: nn.Module) -> int:
    """Run the full-resolution blocks (``encoder1``, ``decoder2``, ``out1``) in channels-last memory, in
    place: their weights are converted, their inputs converted on the way in, their instance norms
    replaced by :class:`BatchStatsInstanceNorm3d`. The head's output (the logits) stays channels-last.

    Returns:
        The number of blocks changed (0 for a network without them).
    """
    changed = 0
    for name in _FULL_RESOLUTION_BLOCKS:
        block = getattr(network, name, None)
        if not isinstance(block, nn.Module):
            continue
        block.to(memory_format=torch.channels_last_3d)
        for module in block.modules():
            if type(module) is nn.InstanceNorm3d:
                module.__class__ = BatchStatsInstanceNorm3d
            elif isinstance(module, BroadcastPointwiseConv3d):
                module.channels_last = True
        block.register_forward_pre_hook(_channels_last_inputs)
        changed += 1
    return changed


def _channels_last_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last_3d) if torch.is_tensor(a) and a.dim() == 5 else a
        for a in args
    )


def _is_channels_last(features: torch.Tensor) -> bool:
    return (
        features.dim() == 5
        and features.is_contiguous(memory_format=torch.channels_last_3d)
        and not features.is_contiguous()
    )


def _is_pointwise(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv3d
        and module.groups == 1
        and module.kernel_size == (1, 1, 1)
        and module.stride == (1, 1, 1)
        and module.padding in ((0, 0, 0), "valid")
    )


def _is_onednn_candidate(module: nn.Module) -> bool:
    # 1x1x1 convolutions become matrix or broadcast products instead (see GemmPointwiseConv3d).
    return (
        type(module) is nn.Conv3d
        and module.kernel_size != (1, 1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def use_onednn_convolutions(network: nn.Module) -> int:
    """Turn every plain ``nn.Conv3d`` with a kernel larger than 1x1x1 into :class:`OneDNNConv3d`, in place.

    Returns:
        The number of convolutions changed.
    """
    changed = 0
    for module in network.modules():
        if _is_onednn_candidate(module):
            module.__class__ = OneDNNConv3d  # same attributes and parameters, new forward
            changed += 1
    return changed


def _store_in(network: nn.Module, dtype: torch.dtype) -> None:
    """Cast parameters and buffers to ``dtype``; floating-point inputs are cast on the way in."""
    network.to(dtype)

    def cast_input(module: nn.Module, args: tuple) -> tuple:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    network.register_forward_pre_hook(cast_input)
