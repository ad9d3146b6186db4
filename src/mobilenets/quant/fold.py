"""Inference-time rewrites of a MobileNet: BatchNorm folded into the convolutions, and the
quantization-aware-training hooks (eager fake quantization for the trainer's ``--qat``, and
PyTorch's PT2E flow).

At inference BatchNorm is an affine map per channel, ``y = γ (x − μ) / √(σ² + ε) + β``, so it
can be folded into the preceding convolution (``W' = W·s``, ``b' = (b − μ)·s + β`` with
``s = γ / √(σ² + ε)``). The folded model computes the same function with 27 fewer layers;
every runtime then sees conv(+bias) → ReLU/ReLU6 (a clip), which they all fuse into one kernel.
The fold is computed in float64 and rounded once, so it agrees with the BN model to ~1e-6.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fuse", "fold_conv_bn", "is_fused"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` (same class, e.g. :class:`~mobilenets.models.Conv2dSame`) with ``bn`` folded in."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    fused = copy.deepcopy(conv)
    w = conv.weight.double()
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    fused.weight = nn.Parameter((w * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype), requires_grad=False)
    return fused


def _fold_in_place(module: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside a Sequential."""
    count = 0
    for child in module.children():
        count += _fold_in_place(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[first] = fold_conv_bn(conv, bn)
                module._modules[second] = nn.Identity()  # keeps module names (features.i.dw.bn) stable
                count += 1
    return count


def fuse(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` (eval mode, no grads) with every conv → BN pair folded.

    The input model is left untouched. Works on our :class:`~mobilenets.models.MobileNetV1`
    (all variants, ``tf_padding``) and on any model built from ``nn.Sequential(conv, bn, ...)``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse() needs a torch.nn.Module, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    n = _fold_in_place(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    fused.fused_batchnorms = n  # type: ignore[assignment]
    return fused


def is_fused(model: nn.Module) -> bool:
    """True when no BatchNorm is left to fold."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
