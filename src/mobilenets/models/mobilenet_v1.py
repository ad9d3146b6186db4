"""MobileNet V1 (Howard et al., 2017) as a table and a builder that walks it.

The paper's Table 1 is :data:`MOBILENET_V1_CONV_DEFS` below, one entry per row group:
a standard 3×3 convolution, then thirteen depthwise separable convolutions (a 3×3
depthwise conv that filters each channel, then a 1×1 pointwise conv that mixes them),
each conv followed by BatchNorm and ReLU. :func:`mobilenet_v1` turns a
:class:`~mobilenets.config.MobileNetConfig` into an ``nn.Module``; the variants of the
paper's ablations (Table 4's full-conv MobileNet, Table 5's shallow MobileNet) are
rewrites of the same table, not separate classes.

Module names follow TF-slim's layer numbering: ``features.0`` is ``Conv2d_0``,
``features.i.dw`` / ``features.i.pw`` are ``Conv2d_i_depthwise`` / ``Conv2d_i_pointwise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import MobileNetConfig
from ..layers import Conv2dSame, ConvBNAct, DepthwiseSeparable

__all__ = [
    "Conv",
    "DepthSepConv",
    "MOBILENET_V1_CONV_DEFS",
    "SHALLOW_REMOVED_LAYERS",
    "FEATURE_LAYERS",
    "CIFAR_STEM_ROWS",
    "conv_defs_for",
    "Conv2dSame",
    "ConvBNAct",
    "DepthwiseSeparable",
    "MobileNetV1",
    "mobilenet_v1",
]


@dataclass(frozen=True)
class Conv:
    """A standard convolution row of Table 1: ``kernel×kernel``, ``stride``, ``channels`` filters."""

    kernel: int
    stride: int
    channels: int


@dataclass(frozen=True)
class DepthSepConv:
    """A depthwise separable row pair of Table 1: 3×3 depthwise (stride) then 1×1 to ``channels``."""

    kernel: int
    stride: int
    channels: int


# The paper's Table 1 (the body; average pool, FC and softmax follow). The paper prints the
# last depthwise layer as stride 2; its input is already 7×7 and TF-slim uses stride 1, so
# stride 2 there is a typo.
MOBILENET_V1_CONV_DEFS: tuple[Conv | DepthSepConv, ...] = (
    Conv(kernel=3, stride=2, channels=32),  # Conv2d_0     224 -> 112
    DepthSepConv(kernel=3, stride=1, channels=64),  # Conv2d_1
    DepthSepConv(kernel=3, stride=2, channels=128),  # Conv2d_2     -> 56
    DepthSepConv(kernel=3, stride=1, channels=128),  # Conv2d_3
    DepthSepConv(kernel=3, stride=2, channels=256),  # Conv2d_4     -> 28
    DepthSepConv(kernel=3, stride=1, channels=256),  # Conv2d_5
    DepthSepConv(kernel=3, stride=2, channels=512),  # Conv2d_6     -> 14
    DepthSepConv(kernel=3, stride=1, channels=512),  # Conv2d_7  \
    DepthSepConv(kernel=3, stride=1, channels=512),  # Conv2d_8   |
    DepthSepConv(kernel=3, stride=1, channels=512),  # Conv2d_9   | the "5×" rows
    DepthSepConv(kernel=3, stride=1, channels=512),  # Conv2d_10  |
    DepthSepConv(kernel=3, stride=1, channels=512),  # Conv2d_11 /
    DepthSepConv(kernel=3, stride=2, channels=1024),  # Conv2d_12   -> 7
    DepthSepConv(kernel=3, stride=1, channels=1024),  # Conv2d_13 (printed "s2" in the paper)
)

# Table 5's "Shallow MobileNet" removes the five 14×14×512 separable layers.
SHALLOW_REMOVED_LAYERS = (7, 8, 9, 10, 11)

# Rows that keep stride 1 with ``cifar_stem=True`` (small inputs): the stem and Conv2d_2.
CIFAR_STEM_ROWS = (0, 2)

# Table 1 rows whose outputs are the feature maps at nominal output strides 8, 16 and 32.
FEATURE_LAYERS = {8: 5, 16: 11, 32: 13}


def conv_defs_for(variant: str) -> list[tuple[int, Conv | DepthSepConv]]:
    """Table 1 rewritten for a variant, as ``(table_row_index, layer_def)`` pairs."""
    rows = list(enumerate(MOBILENET_V1_CONV_DEFS))
    if variant == "separable":
        return rows
    if variant == "conv":
        return [(i, Conv(d.kernel, d.stride, d.channels)) for i, d in rows]
    if variant == "shallow":
        return [(i, d) for i, d in rows if i not in SHALLOW_REMOVED_LAYERS]
    raise ValueError(f"unknown variant {variant!r}; choose one of: separable, conv, shallow")


class MobileNetV1(nn.Module):
    """A MobileNet V1 built from a :class:`MobileNetConfig`.

    ``forward`` maps images ``(N, C, H, W)`` (any H, W ≥ 32) to logits ``(N, num_classes)``,
    or to pooled ``1024·α``-d embeddings when ``num_classes == 0``, or, with
    ``features_only=True``, to the list of feature maps at output strides 8, 16, 32.
    """

    def __init__(self, config: MobileNetConfig, *, features_only: bool = False) -> None:
        super().__init__()
        self.config = config
        self.features_only = features_only
        c = config
        common = dict(activation=c.activation, tf_padding=c.tf_padding, bn_eps=c.bn_eps)

        layers: list[nn.Module] = []
        self.table_rows: list[int] = []  # Table 1 row index of each entry of self.features
        self.feature_info: list[dict[str, Any]] = []
        cin, current_stride, rate = c.in_chans, 1, 1
        for row, d in conv_defs_for(c.variant):
            cout = c.depth(d.channels)
            if c.cifar_stem and row in CIFAR_STEM_ROWS:
                d = type(d)(d.kernel, 1, d.channels)
            if current_stride >= c.output_stride and d.stride > 1:
                stride, dilation, rate = 1, rate, rate * d.stride  # dilate instead of striding
            else:
                stride, dilation = d.stride, rate
                current_stride *= d.stride
            if isinstance(d, Conv):
                layers.append(ConvBNAct(cin, cout, d.kernel, stride, dilation, **common))
            else:
                layers.append(DepthwiseSeparable(cin, cout, d.kernel, stride, dilation, **common))
            self.table_rows.append(row)
            for level, feature_row in FEATURE_LAYERS.items():
                if row == feature_row:
                    self.feature_info.append(dict(index=len(layers) - 1, row=row, level=level,
                                                  stride=current_stride, channels=cout))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.classifier: nn.Module = (
            nn.Linear(cin, c.num_classes) if c.num_classes > 0 else nn.Identity()
        )
        self.reset_parameters()

    @property
    def resolution(self) -> int:
        """Nominal input size ρ (pixels) this model was configured for."""
        return self.config.resolution

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: the final feature map, ``(N, 1024·α, H/32, W/32)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool, dropout, FC."""
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at output strides 8, 16 and 32 (see ``feature_info``), for dense tasks."""
        wanted = {info["index"] for info in self.feature_info}
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out.append(x)
        return out

    def check_input(self, x: torch.Tensor) -> None:
        """A one-line ``ValueError`` for input this network cannot take (checked on shapes only;
        skipped while tracing, where the trace records the shapes anyway)."""
        if torch.jit.is_tracing():
            return
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"a {x.dim()}-D tensor" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MobileNetV1 takes a batch of images (N, {self.config.in_chans}, H, W), got {got}")
        if not x.is_floating_point():
            raise ValueError(f"the model takes float images (normalized as its weights expect, e.g. by "
                             f"mobilenets.Classifier(model).preprocess), got a {str(x.dtype).removeprefix('torch.')} "
                             "tensor; convert it with x.float() and normalize it")
        if x.shape[1] != self.config.in_chans:
            raise ValueError(f"the model takes {self.config.in_chans}-channel images, got {x.shape[1]} channels "
                             f"(shape {tuple(x.shape)}); convert grayscale to RGB, or build it with in_chans="
                             f"{x.shape[1]}")
        if self.training and x.shape[0] == 1:
            h, w = int(x.shape[2]), int(x.shape[3])
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m.stride[0] > 1:
                    h, w = (h + 1) // 2, (w + 1) // 2
            if h * w == 1:
                raise ValueError(f"in training mode BatchNorm needs more than one value per channel, but a batch of "
                                 f"1 image of {x.shape[2]}×{x.shape[3]} px ends in a 1×1 map; train on batches of 2 "
                                 "or more (or larger images)")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check_input(x)
        if self.features_only:
            return self.feature_maps(x)
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"config={self.config}"


def mobilenet_v1(
    width_multiplier: float = 1.0,
    num_classes: int = 1000,
    *,
    resolution: int = 224,
    variant: str = "separable",
    min_depth: int = 8,
    dropout: float = 0.001,
    tf_padding: bool = False,
    in_chans: int = 3,
    output_stride: int = 32,
    activation: str = "relu",
    bn_eps: float = 1e-5,
    cifar_stem: bool = False,
    features_only: bool = False,
    config: MobileNetConfig | None = None,
) -> MobileNetV1:
    """Build a MobileNet V1.

    Args:
        width_multiplier: α, thins every layer to ``α × channels`` (cost falls ~α²).
        num_classes: classifier outputs (0: no classifier, the model returns embeddings).
        resolution: ρ as the nominal input size in pixels (cost falls ~ρ²); recorded on
            the model, which accepts any input of 32 px or more.
        variant: ``"separable"`` (MobileNet), ``"conv"`` (Table 4) or ``"shallow"`` (Table 5).
        min_depth: smallest channel count any layer may have.
        dropout: dropout probability before the classifier.
        tf_padding: TensorFlow "SAME" padding, for TF-trained weights.
        in_chans: input channels.
        output_stride: 32, or 16 / 8 to dilate instead of striding at the end.
        activation: ``"relu"`` or ``"relu6"``.
        bn_eps: BatchNorm epsilon (TensorFlow's models use 1e-3).
        cifar_stem: stride 1 in the stem and Conv2d_2 for small (32×32) inputs: 4×4 final map.
        features_only: return the feature maps at strides 8, 16, 32 instead of logits.
        config: a ready :class:`MobileNetConfig`; when given, the other arguments are ignored.

    Raises:
        ValueError: for an option out of range, with a one-line message.
    """
    if config is None:
        config = MobileNetConfig(
            width_multiplier=width_multiplier, resolution=resolution, num_classes=num_classes,
            variant=variant, activation=activation, tf_padding=tf_padding, min_depth=min_depth,
            dropout=dropout, in_chans=in_chans, output_stride=output_stride, bn_eps=bn_eps,
            cifar_stem=cifar_stem,
        )
    return MobileNetV1(config, features_only=features_only)
