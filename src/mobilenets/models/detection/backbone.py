"""MobileNet V1 as a detection backbone: the classifier's body, cut where the TF Object Detection
API cuts it, plus SSD's extra layers.

``ssd_mobilenet_v1`` reads two maps from the body, ``Conv2d_11_pointwise`` (stride 16) and
``Conv2d_13_pointwise`` (stride 32), then adds four extra layers, each a 1×1 conv to half its
depth and a 3×3 stride-2 conv to its depth (512, 256, 256, 128 at α = 1, scaled by α with
TF-slim's min-depth rule, at least 16 for the 1×1), each conv with BatchNorm and ReLU6.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ...config import MobileNetConfig
from ...layers import ConvBNAct
from ..mobilenet_v1 import MobileNetV1

__all__ = ["SSD_EXTRA_DEPTHS", "MobileNetV1SSDBackbone", "freeze_batchnorm"]

SSD_EXTRA_DEPTHS = (512, 256, 256, 128)  # at α = 1 (TF OD API ``layer_depth`` after the two body maps)
_BODY_MAPS = {11: "Conv2d_11_pointwise", 13: "Conv2d_13_pointwise"}  # features index → TF-slim name
_EXTRA_MIN_DEPTH = 16  # the TF OD API's min_depth for the extra layers


class MobileNetV1SSDBackbone(nn.Module):
    """Body of a :class:`MobileNetV1` (classifier dropped) + the SSD extra layers.

    ``forward(x)`` returns an ``OrderedDict`` of the six maps torchvision's :class:`SSD` expects,
    named like the TF OD API's feature maps; ``out_channels`` lists their depths."""

    def __init__(self, body: MobileNetV1, extra_depths: tuple[int, ...] = SSD_EXTRA_DEPTHS) -> None:
        super().__init__()
        config: MobileNetConfig = body.config
        if config.output_stride != 32 or config.cifar_stem or config.variant != "separable":
            raise ValueError("the SSD backbone needs a plain separable MobileNet V1 body (output_stride 32, no "
                             "small-input stem)")
        self.config = config
        self.features = body.features  # Conv2d_0 … Conv2d_13_pointwise, the same modules (weights shared)
        common = {"activation": "relu6", "tf_padding": config.tf_padding, "bn_eps": config.bn_eps}
        cin = config.depth(1024)
        extras = []
        for depth in extra_depths:
            d = max(int(depth * config.width_multiplier), config.min_depth)
            half = max(int(depth / 2 * config.width_multiplier), _EXTRA_MIN_DEPTH)
            extras.append(nn.Sequential(OrderedDict([("reduce", ConvBNAct(cin, half, 1, **common)),
                                                     ("expand", ConvBNAct(half, d, 3, stride=2, **common))])))
            cin = d
        self.extras = nn.ModuleList(extras)
        self.out_channels = [config.depth(512), config.depth(1024)] + [m.expand.conv.out_channels for m in extras]
        self.frozen_bn = False
        self.frozen_extras_bn = False

    @property
    def feature_names(self) -> list[str]:
        return list(_BODY_MAPS.values()) + [f"extra_{i}" for i in range(len(self.extras))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _BODY_MAPS:
                out[_BODY_MAPS[i]] = x
        for i, extra in enumerate(self.extras):
            if _bf16_grad_hazard(x):
                with torch.autocast("cpu", enabled=False):
                    x = extra(x.float())
            else:
                x = extra(x)
            out[f"extra_{i}"] = x
        return out

    def train(self, mode: bool = True) -> MobileNetV1SSDBackbone:
        super().train(mode)
        for part, frozen in ((self.features, self.frozen_bn), (self.extras, self.frozen_extras_bn)):
            if frozen:  # folded weights (TFLite) carry their statistics in identity BNs: keep them
                for m in part.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
        return self


def _bf16_grad_hazard(x: torch.Tensor) -> bool:
    """True where an extra layer must not run under CPU bf16 autocast: PyTorch 2.14's CPU bf16 weight
    gradient of a dense 3×3 stride-2 conv on a 1×1 map is NaN in 20–60% of calls on a CPU with
    AVX512_BF16, and mostly wrong when finite (measured on AMD Zen 4; other shapes, stride 1 and
    depthwise match fp32). Such a map (the last extras at small inputs) costs a few hundred
    Mult-Adds, so it runs in fp32 on every CPU: the guard does not depend on which one has the bug."""
    return (x.shape[-1] == 1 and x.shape[-2] == 1 and x.device.type == "cpu" and torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu"))


def freeze_batchnorm(backbone: MobileNetV1SSDBackbone, *, extras: bool = False) -> None:
    """Keep the body's (and with ``extras`` the extra layers') BatchNorm layers in eval mode with
    fixed affine parameters while training."""
    backbone.frozen_bn = True
    backbone.frozen_extras_bn = backbone.frozen_extras_bn or extras
    parts = [backbone.features] + ([backbone.extras] if extras else [])
    for part in parts:
        for m in part.modules():
            if isinstance(m, nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)
    backbone.train(backbone.training)
