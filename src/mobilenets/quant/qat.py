"""Eager fake quantization for quantization-aware training (``train --qat``): weights rounded
per channel to int8 and activations to 8 bits in the forward pass, as the int8 exports round them,
with straight-through gradients. The module tree and state_dict do not change, so checkpoints,
EMA, DDP and compile work as for a float model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["QAT_RANGE_MOMENTUM", "enable_fake_quant", "fake_quantize_weight", "fake_quant_ranges", "load_fake_quant_ranges",
           "fake_quantize_activations"]


QAT_RANGE_MOMENTUM = 0.01  # EMA of each activation's batch maximum


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded to per-output-channel symmetric int8 (scale ``max|w| / 127``), with a
    straight-through gradient: what every int8 export here does to conv and FC weights.

    Folding BatchNorm multiplies each output channel by one number, and a per-channel symmetric
    grid scales with it, so quantizing before the fold rounds exactly as quantizing after it.
    """
    w = weight.float()
    scale = w.detach().abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-12) / 127
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127).to(weight.dtype)


_FAKE_QUANT_CLASSES: dict[tuple[type, type], type] = {}


class _FakeQuantConv:
    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(input, fake_quantize_weight(weight), bias)  # type: ignore[misc]


class _FakeQuantLinear:
    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(input, fake_quantize_weight(self.weight), self.bias)


class _FakeQuantAct:
    """ReLU/ReLU6 whose output is rounded to 8 bits over ``[0, running max]`` (uint8, zero 0)."""

    qat_max: torch.Tensor
    training: bool

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = super().forward(input)  # type: ignore[misc]
        if self.training:
            with torch.no_grad():  # no host sync: the first batch sets the range, later ones move it
                m = y.detach().amax().float()
                self.qat_max.copy_(torch.where(self.qat_max > 0, torch.lerp(self.qat_max, m, QAT_RANGE_MOMENTUM), m))
        scale = (self.qat_max / 255).clamp_min(1e-8).reshape(())
        zero = torch.zeros((), dtype=torch.int32, device=y.device)
        return torch.fake_quantize_per_tensor_affine(y.float(), scale, zero, 0, 255).to(y.dtype)


def _swap_class(module: nn.Module, mixin: type) -> None:
    cls = type(module)
    if issubclass(cls, mixin):
        return
    key = (mixin, cls)
    if key not in _FAKE_QUANT_CLASSES:
        _FAKE_QUANT_CLASSES[key] = type(f"FakeQuant{cls.__name__}", (mixin, cls), {"__module__": __name__})
    module.__class__ = _FAKE_QUANT_CLASSES[key]


def enable_fake_quant(model: nn.Module) -> nn.Module:
    """Quantization-aware training in place: conv/FC weights and every ReLU's output are
    rounded as an int8 export will round them, in the forward pass, with straight-through
    gradients (Jacob et al. 2018). Returns ``model``.

    The module tree, parameter names and ``state_dict`` do not change (activation ranges live
    in non-persistent ``qat_max`` buffers; see :func:`fake_quant_ranges`), so checkpoints,
    resumption, EMA, DDP and ``torch.compile`` work as without QAT, and the trained weights load
    as a plain float model, which ``mobilenets export --int8`` then quantizes.
    BatchNorm keeps training; per-channel weight rounding is unchanged by folding it.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            _swap_class(m, _FakeQuantConv)
        elif isinstance(m, nn.Linear):
            _swap_class(m, _FakeQuantLinear)
        elif isinstance(m, (nn.ReLU, nn.ReLU6)):
            if not hasattr(m, "qat_max"):
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
                m.register_buffer("qat_max", torch.zeros((), device=device), persistent=False)
            _swap_class(m, _FakeQuantAct)
    return model


def fake_quant_ranges(model: nn.Module) -> dict[str, torch.Tensor]:
    """The activation ranges :func:`enable_fake_quant` learned (to save beside a checkpoint)."""
    return {name: m.qat_max.detach().cpu().clone() for name, m in model.named_modules() if isinstance(m, _FakeQuantAct)}


def load_fake_quant_ranges(model: nn.Module, ranges: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, value in ranges.items():
        if name in modules and isinstance(modules[name], _FakeQuantAct):
            modules[name].qat_max.copy_(value)



def fake_quantize_activations(model: nn.Module, ranges: dict[str, tuple[float, int]]) -> list[Any]:
    """Round the outputs of the named modules to uint8 grids ``(scale, zero_point)``, as a quantized
    file computes them (e.g. ``pretrained_cfg.extra["activation_ranges"]`` of Google's TFLite SSD), so a
    float port can be compared with the integer original. Returns the hook handles (``.remove()``)."""
    modules = dict(model.named_modules())
    missing = sorted(set(ranges) - set(modules))
    if missing:
        raise ValueError(f"no module named {missing[0]} in the model (of {len(missing)} ranges given)")

    def hook_for(scale: float, zero: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            return (torch.clamp(torch.round(out / scale) + zero, 0, 255) - zero) * scale
        return hook

    return [modules[name].register_forward_hook(hook_for(s, z)) for name, (s, z) in ranges.items()]
