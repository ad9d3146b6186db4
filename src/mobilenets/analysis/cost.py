"""Exact cost accounting by running the real module.

The paper measures a network by its Mult-Adds (multiply-accumulates of the convolution
and fully connected layers; BatchNorm, ReLU and pooling are not counted) and its
parameters. :func:`cost` attaches forward hooks to every leaf module, runs one forward
pass at the given resolution and reads each layer's output shape, so the count is right
for any α, ρ, variant, or a model a user has modified: there is no formula per config.

Parameters are reported two ways: ``params``, every trainable parameter of the model
(BatchNorm γ and β and biases included, what ``sum(p.numel())`` gives), and
``paper_params``, the weights of the conv and FC layers only, which is how the paper
counts (its 1.32 M for 0.50 MobileNet-160 and the shares of Table 2 exclude BN and biases).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ..config import MobileNetConfig
from ..models import MobileNetV1, create_model

__all__ = ["LayerCost", "CostReport", "cost", "layer_type", "PAPER_LAYER_TYPES"]

# Our layer types -> the names the paper's Table 2 uses.
PAPER_LAYER_TYPES = {
    "conv 1x1": "Conv 1 × 1",
    "conv dw 3x3": "Conv DW 3 × 3",
    "conv 3x3": "Conv 3 × 3",
    "fc": "Fully Connected",
}


@dataclass
class LayerCost:
    """The cost of one call of one leaf module."""

    name: str
    type: str
    output_shape: list[int]
    mult_adds: int
    params: int
    weights: int  # conv/FC weight elements only: the paper's way of counting parameters


@dataclass
class CostReport:
    """Per-layer and total Mult-Adds and parameters of one model at one input size."""

    input_shape: list[int]
    layers: list[LayerCost]
    params: int  # all trainable parameters of the model
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mult_adds(self) -> int:
        return sum(layer.mult_adds for layer in self.layers)

    @property
    def paper_params(self) -> int:
        """Conv and FC weights: parameters as the paper counts them (no BN, no biases)."""
        return sum(layer.weights for layer in self.layers)

    def by_type(self) -> dict[str, dict[str, int]]:
        """Mult-Adds and paper-convention parameters summed per layer type (Table 2)."""
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            if layer.mult_adds == 0 and layer.weights == 0:
                continue
            entry = out.setdefault(layer.type, {"mult_adds": 0, "params": 0})
            entry["mult_adds"] += layer.mult_adds
            entry["params"] += layer.weights
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.meta,
            "input_shape": self.input_shape,
            "mult_adds": self.mult_adds,
            "params": self.params,
            "paper_params": self.paper_params,
            "layers": [asdict(layer) for layer in self.layers],
        }

    def format_table(self, *, include_bn: bool = True) -> str:
        """A human-readable per-layer table with totals."""
        rows = [l for l in self.layers if include_bn or l.type != "batchnorm"]
        name_w = max([len("layer")] + [len(l.name) for l in rows])
        type_w = max([len("type")] + [len(l.type) for l in rows])
        shape_w = max([len("output shape")] + [len(_shape(l.output_shape)) for l in rows])
        head = (f"{'layer':<{name_w}}  {'type':<{type_w}}  {'output shape':>{shape_w}}  "
                f"{'Mult-Adds':>13}  {'params':>10}")
        lines = [head, "-" * len(head)]
        for l in rows:
            lines.append(f"{l.name:<{name_w}}  {l.type:<{type_w}}  {_shape(l.output_shape):>{shape_w}}  "
                         f"{l.mult_adds:>13,}  {l.params:>10,}")
        lines.append("-" * len(head))
        lines.append(f"total Mult-Adds: {self.mult_adds:,} ({self.mult_adds / 1e6:.1f} M)")
        lines.append(f"total params:    {self.params:,} ({self.params / 1e6:.2f} M; "
                     f"conv+FC weights, as the paper counts: {self.paper_params / 1e6:.2f} M)")
        return "\n".join(lines)


def _shape(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape)


def layer_type(module: nn.Module) -> str:
    """A short, paper-style name for what a leaf module computes."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        k = f"{kh}x{kw}"
        if module.groups == module.in_channels and module.groups > 1:
            return f"conv dw {k}"
        if module.groups > 1:
            return f"conv {k} g{module.groups}"
        return f"conv {k}"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    return type(module).__name__.lower()


def _layer_mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    # Every sample of the call counts: the input is one image, but a detector's box head runs
    # once per proposal (a batch of crops).
    per_sample = output.numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        return per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def _own_params(module: nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    weights = 0
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        weights = module.weight.numel()
    return params, weights


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def cost(
    model: nn.Module | MobileNetConfig | str,
    resolution: int | tuple[int, int] | None = None,
    *,
    in_chans: int | None = None,
) -> CostReport:
    """Count Mult-Adds and parameters of ``model`` by one real forward pass.

    Args:
        model: an ``nn.Module`` (any model, not only ours; a detector counts what its
            ``cost_forward`` runs: the body, extra layers and predictors), a :class:`MobileNetConfig`, or a
            registered model name (``"mobilenet_v1_050_160"``). Configs and names are built on
            PyTorch's ``meta`` device, so counting even a large model takes milliseconds.
        resolution: input size (pixels, or ``(height, width)``); defaults to the model's
            nominal resolution ρ, else 224.
        in_chans: input channels; defaults to the model's, else 3.

    Returns:
        A :class:`CostReport`: per-layer costs, ``mult_adds``, ``params``, ``paper_params``.
    """
    if isinstance(model, str):
        with torch.device("meta"):
            model = create_model(model)
    elif isinstance(model, MobileNetConfig):
        with torch.device("meta"):
            model = MobileNetV1(model)
    config = getattr(model, "config", None)
    if resolution is None:
        resolution = getattr(model, "resolution", None) or (config.resolution if isinstance(config, MobileNetConfig)
                                                             else 224)
    if in_chans is None:
        in_chans = config.in_chans if isinstance(config, MobileNetConfig) else _guess_in_chans(model)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if min(h, w) < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")

    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    layers: list[LayerCost] = []
    names = {m: n for n, m in model.named_modules()}
    calls: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        name = names.get(module, type(module).__name__)
        calls[name] = calls.get(name, 0) + 1
        if calls[name] > 1:  # a module applied twice costs twice, its params count once
            name_k, (params, weights) = f"{name}#{calls[name]}", (0, 0)
        else:
            name_k, (params, weights) = name, _own_params(module)
        layers.append(LayerCost(
            name=name_k, type=layer_type(module), output_shape=list(output.shape[1:]),
            mult_adds=_layer_mult_adds(module, output), params=params, weights=weights,
        ))

    handles = []
    for module in model.modules():
        is_leaf = next(module.children(), None) is None
        has_own = any(True for _ in module.parameters(recurse=False))
        if is_leaf and (has_own or isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))):
            handles.append(module.register_forward_hook(hook))
    try:
        x = torch.zeros(1, in_chans, h, w, device=device, dtype=dtype)
        run = getattr(model, "cost_forward", None) or model  # detectors: body + predictors, not NMS
        with _eval_mode(model), torch.no_grad():
            run(x)
    finally:
        for handle in handles:
            handle.remove()

    total_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meta: dict[str, Any] = {}
    if isinstance(config, MobileNetConfig):
        meta = {"width": config.width_multiplier, "resolution": h if h == w else [h, w],
                "variant": config.variant, "num_classes": getattr(model, "num_classes", config.num_classes)}
    return CostReport(input_shape=[1, in_chans, h, w], layers=layers, params=total_params, meta=meta)


def _guess_in_chans(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    return 3
