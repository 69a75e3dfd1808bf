"""An inference-only copy of a network that computes the same function with less work on CPU.

Two rewrites, each measured on the synapse network (``benchmarks/RESULTS.md``):

* **Fold eval-mode BatchNorm into the preceding convolution.** The residual blocks after every EPA
  block (``conv51``/``conv52``, MONAI ``UnetResBlock`` with ``norm_name="batch"``) run conv -> BN; in eval
  mode BN is a per-channel affine map, so it folds into the convolution's weight and a new bias and the
  BN pass over the feature map disappears.
* **Pointwise (1x1x1) convolutions as a matrix product.** PyTorch sends a batch-1 float32 1x1x1
  ``Conv3d`` on a small map (N*C*D*H <= 20480, e.g. ``conv8`` in the deep stages) or with one input
  channel (``encoder1.conv3``) to the unfold+GEMM ``slow_conv3d_forward`` instead of oneDNN. A 1x1x1
  convolution is ``W @ x`` over the flattened voxels; doing exactly that is one GEMM (or a broadcast
  multiply for a single input channel) whatever the size.

The copy is for inference only: its ``state_dict`` no longer matches official checkpoints (no BN
entries), so load weights first and optimize afterwards. Outputs equal the original's in float32 to
rounding (about 1e-5 relative; ``Testing/unetrpp/network/test_optimize.py`` checks 1e-4).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "optimize_for_inference",
    "fold_batch_norms",
    "PointwiseConv3d",
    "replace_pointwise_convs",
]

logger = logging.getLogger(__name__)

# A block holds conv{i} followed by norm{i} in its forward pass (MONAI UnetResBlock/UnetBasicBlock).
_CONV_NORM_PAIRS = (("conv1", "norm1"), ("conv2", "norm2"), ("conv3", "norm3"))


def optimize_for_inference(
    network: nn.Module,
    *,
    fold_batch_norm: bool = True,
    pointwise_as_matmul: bool = True,
) -> nn.Module:
    """Return an eval-mode copy of ``network`` with BatchNorm folded and 1x1x1 convolutions as GEMMs.

    Args:
        network: a UNETR++ (or any module built from MONAI conv blocks); left unchanged.
        fold_batch_norm: fold eval BatchNorm into the preceding convolution (default True).
        pointwise_as_matmul: replace 1x1x1 ``Conv3d`` layers by :class:`PointwiseConv3d` (default True).

    Returns:
        A deep copy in eval mode with ``requires_grad`` off, same inputs and outputs as ``network``
        in eval mode (float32 rounding aside). Attributes such as ``config`` and ``deep_supervision``
        are kept.
    """
    optimized = copy.deepcopy(network).eval()
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    if fold_batch_norm:
        logger.debug("folded %d BatchNorm layers", fold_batch_norms(optimized))
    if pointwise_as_matmul:
        logger.debug("replaced %d pointwise convolutions", replace_pointwise_convs(optimized))
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
    Call it on a network in eval mode only: in training mode BN uses batch statistics.

    Returns:
        The number of BatchNorm layers folded.
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


class PointwiseConv3d(nn.Module):
    """A 1x1x1 convolution computed as ``W @ x`` over the flattened voxels.

    Shapes: (B, C_in, Z, Y, X) -> (B, C_out, Z, Y, X). With one input channel it is a broadcast
    multiply (a GEMM with inner dimension 1 is slow in BLAS).
    """

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        out_channels, in_channels = conv.weight.shape[:2]
        self.weight = nn.Parameter(conv.weight.detach().reshape(out_channels, in_channels).clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, in_channels, *spatial = features.shape
        if in_channels == 1:
            out = features * self.weight.reshape(1, -1, 1, 1, 1)
            return out if self.bias is None else out + self.bias.reshape(1, -1, 1, 1, 1)
        out = torch.matmul(self.weight, features.reshape(batch, in_channels, -1))
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1, 1)
        return out.reshape(batch, -1, *spatial)


def _replace(network: nn.Module, predicate, factory) -> int:
    replaced = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if predicate(child):
                setattr(parent, name, factory(child))
                replaced += 1
    return replaced


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv3d
        and conv.kernel_size == (1, 1, 1)
        and conv.stride == (1, 1, 1)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and all(p == 0 for p in conv.padding)
    )


def replace_pointwise_convs(network: nn.Module) -> int:
    """Replace every plain 1x1x1 ``nn.Conv3d`` by :class:`PointwiseConv3d`, in place; returns the count."""
    return _replace(network, _is_pointwise, PointwiseConv3d)
