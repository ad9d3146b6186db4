"""Statistics-based corrections: bias correction of an int8 model's convolutions (the mean output
shift that weight rounding causes, removed on calibration data) and BatchNorm recalibration on new
data (so folded weights, e.g. TFLite's, fine-tune)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..layers import Conv2dSame

__all__ = ['correct_bias_for_int8', 'recalibrate_batchnorm']


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterator[torch.Tensor] | list[torch.Tensor]) -> None:
    """Re-express every BatchNorm in the statistics of new data without changing what the
    network computes: with μ, σ² the mean and variance a BN's input has on ``batches``,
    β += (μ − m)·γ/√(v+ε), γ ·= √(σ²+ε)/√(v+ε), then m, v = μ, σ². In training mode (batch
    statistics ≈ μ, σ²) the BN then computes what it computed in evaluation mode.

    Fine-tuning needs this for weights with BatchNorm folded into the convolutions (TFLite:
    identity BNs that carry the bias), whose function batch statistics would otherwise change
    completely; for other weights it removes the jump of a change of domain (another input
    size, the small-input stem)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    sums: dict[nn.Module, list[Any]] = {bn: [0, 0.0, 0.0] for bn in bns}

    def hook(bn: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        z = args[0].detach().double().transpose(0, 1).reshape(args[0].shape[1], -1)
        acc = sums[bn]
        acc[0] += z.shape[1]
        acc[1] = acc[1] + z.sum(1)
        acc[2] = acc[2] + (z * z).sum(1)

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for bn in bns:
        n, s1, s2 = sums[bn]
        if not n:
            continue
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0)
        old = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
        if bn.bias is not None:
            bn.bias.copy_(bn.bias.double() + (mean - bn.running_mean.double()) * gamma / old)
        if bn.weight is not None:
            bn.weight.copy_(gamma * torch.sqrt(var + bn.eps) / old)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)


WEIGHT_GRIDS = ("s8", "u8")


def _round_weight(w: torch.Tensor, grid: str) -> torch.Tensor:
    """Per-output-channel symmetric rounding as the quantizers do it: ``s8`` on 255 levels of
    ``max|w| / 127`` (int8 weights), ``u8`` on 256 levels of ``2·max|w| / 255`` (ONNX Runtime's
    symmetric uint8 weights: zero point 128)."""
    peak = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    if grid == "s8":
        scale = peak / 127
        return (w / scale).round().clamp(-127, 127) * scale
    scale = 2 * peak / 255
    return (w / scale).round().clamp(-128, 127) * scale


@torch.no_grad()
def correct_bias_for_int8(fused: nn.Module, calibration: np.ndarray, batch_size: int = 32, *,
                          weight_grid: str | Callable[[nn.Conv2d], str] = "s8",
                          skip: Callable[[nn.Conv2d], bool] | None = None) -> nn.Module:
    """A copy of a BN-folded model whose conv biases absorb the mean error that rounding the
    weights to the quantizer's per-channel grid (``weight_grid``, see :func:`_round_weight`) adds
    to each output channel on the calibration data ("bias correction", Nagel et al. 2019). The grid
    must be the one the file will hold: correcting for s8 rounding and then storing u8 weights
    leaves agreement where it was. Rounding errors in a depthwise filter of 9 weights do not
    average out; measured on the official 0.5-160 weights this raises int8 top-1 agreement with
    fp32 from 95% to 96%. ``skip``: convolutions the file keeps in fp32 (their weights are not
    rounded, so correcting them would add the error it removes elsewhere). ``weight_grid`` may be a
    function of the conv, for files that hold some convs' weights on another grid."""
    model = copy.deepcopy(fused).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None
             and not (skip is not None and skip(m))]
    grid_of = weight_grid if callable(weight_grid) else (lambda _conv: weight_grid)
    grids = {m: grid_of(m) for m in convs}
    for grid in set(grids.values()):
        if grid not in WEIGHT_GRIDS:
            raise ValueError(f"unknown weight grid {grid!r}; choose one of: {', '.join(WEIGHT_GRIDS)}")
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(module, Conv2dSame):  # Conv2dSame: apply its TF padding as forward does
            ph, pw = module.pad_same(x)
            x = torch.nn.functional.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        w = module.weight
        delta = module._conv_forward(x, _round_weight(w, grids[module]) - w, None)
        sums[module] = sums.get(module, 0) + delta.double().sum(dim=(0, 2, 3))
        counts[module] = counts.get(module, 0) + delta.shape[0] * delta.shape[2] * delta.shape[3]

    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        for i in range(0, calibration.shape[0], batch_size):
            model(torch.from_numpy(np.ascontiguousarray(calibration[i:i + batch_size])))
    finally:
        for h in handles:
            h.remove()
    for m in convs:  # all shifts measured on the fp32 model first, then applied
        if m in sums:
            m.bias -= (sums[m] / counts[m]).to(m.bias.dtype)
    return model
