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
from typing import Any

import torch
from torch import nn

__all__ = ["fuse", "fold_conv_bn", "is_fused", "prepare_qat", "convert_qat", "enable_fake_quant",
           "fake_quantize_weight", "fake_quant_ranges", "load_fake_quant_ranges"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` (same class, e.g. :class:`~mobilenets.model.Conv2dSame`) with ``bn`` folded in."""
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

    The input model is left untouched. Works on our :class:`~mobilenets.model.MobileNetV1`
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


# ----------------------------------------------------------------------------- eager QAT (train --qat)

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


_FAKE_QUANT_CLASSES: dict[tuple[type, type], type] = {}


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


# ----------------------------------------------------------------------------- PT2E QAT hooks

def _x86_quantizer(is_qat: bool) -> Any:
    try:
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    except ImportError:
        raise ValueError("quantization-aware training needs torchao (PyTorch's PT2E quantization): "
                         "pip install torchao") from None
    # Per-channel weights: per-tensor scales collapse the depthwise layers, whose channels
    # differ in range by orders of magnitude.
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=is_qat))


def prepare_qat(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Insert fake-quantization (int8, per-channel weights) for quantization-aware training.

    Uses PyTorch's PT2E flow (``torchao``): the model is captured with ``torch.export`` and
    observers/fake-quant are inserted where :func:`mobilenets.export` will quantize, so the
    network learns to live with int8 rounding. Train the returned module as usual (BN is still
    trained; it is folded at :func:`convert_qat`), then call :func:`convert_qat`.
    The returned ``GraphModule`` has the input shape of ``example_input`` baked in except
    for the batch dimension.
    """
    quantizer = _x86_quantizer(is_qat=True)  # first: a one-line error when torchao is missing
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    if example_input is None:
        config = getattr(model, "config", None)
        r = getattr(config, "resolution", 224)
        c = getattr(config, "in_chans", 3)
        example_input = torch.randn(2, c, r, r)
    batch = torch.export.Dim("batch", min=1, max=4096)
    was_training = model.training
    model.train()
    graph = torch.export.export(model, (example_input,), dynamic_shapes=({0: batch},)).module()
    model.train(was_training)
    prepared = prepare_qat_pt2e(graph, quantizer)
    prepared.qat_config = getattr(model, "config", None)  # type: ignore[assignment]
    return prepared


def convert_qat(prepared: nn.Module) -> nn.Module:
    """The int8 inference model from a QAT-trained :func:`prepare_qat` module (eval mode)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)  # folding: 10× slower, same file after export
    move_exported_model_to_eval(converted)
    allow_exported_model_train_eval(converted)  # so .eval() (export() calls it) is not an error
    if getattr(prepared, "qat_config", None) is not None:
        converted.config = prepared.qat_config  # type: ignore[assignment]  # export() reads ρ from it
    return converted
