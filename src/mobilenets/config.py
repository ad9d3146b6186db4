"""The one small object that says which MobileNet you mean.

A :class:`MobileNetConfig` travels from the CLI through the model builder, the cost
counter, weight loading, export, benchmarking and model selection, so an option is
validated once, here, with one message, instead of being re-parsed in each place.

The two knobs of the paper, in a newcomer's terms:

* ``width_multiplier`` (α, "alpha"): thins every layer. Each layer keeps ``α × channels``
  filters, so compute and parameters fall roughly as α². α = 1.0 is the baseline
  MobileNet; 0.75, 0.5 and 0.25 are the published thinner models.
* ``resolution`` (ρ, "rho", given here as the input size in pixels): the image size the
  model is meant to see. Compute falls roughly as ρ², parameters do not change.
  224 is the baseline; 192, 160 and 128 are the published smaller inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._utils import MIN_RESOLUTION, check_choice, check_int, check_resolution, check_width, is_int, model_label

__all__ = ["MobileNetConfig", "VARIANTS", "ACTIVATIONS", "OUTPUT_STRIDES", "MIN_RESOLUTION"]

VARIANTS = ("separable", "conv", "shallow")
ACTIVATIONS = ("relu", "relu6")
OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class MobileNetConfig:
    """Everything that defines one member of the MobileNet V1 family.

    Attributes:
        width_multiplier: α > 0; channels become ``max(int(c * α), min_depth)``.
        resolution: nominal input size ρ in pixels (≥ 32). The network accepts any
            input of at least 32 px; this is the size costs and exports assume.
        num_classes: classifier outputs; 0 builds the body only (1024·α-d embeddings).
        variant: ``"separable"`` (the paper's MobileNet), ``"conv"`` (every depthwise
            separable block replaced by a full 3×3 conv, Table 4) or ``"shallow"``
            (the five 14×14×512 blocks removed, Table 5).
        activation: ``"relu"`` (the paper) or ``"relu6"`` (Google's released weights).
        tf_padding: TensorFlow "SAME" padding (asymmetric at stride 2), needed for
            weights trained in TensorFlow to give the same outputs.
        min_depth: no layer gets fewer channels than this (TF-slim's rule).
        dropout: dropout before the classifier (TF-slim's default keeps 99.9%).
        in_chans: input channels.
        output_stride: 32 (classification), or 16 / 8 for dense prediction: the last
            strides become dilations, as in TF-slim.
        bn_eps: BatchNorm epsilon (PyTorch's 1e-5; TensorFlow-trained weights use 1e-3).
        cifar_stem: for small (e.g. 32×32 CIFAR) inputs: stride 1 in the stem conv and in
            Conv2d_2's depthwise conv, so the total stride is 8 and a 32-px image ends in a
            4×4 map instead of 1×1. Weight shapes are unchanged; Mult-Adds grow 16×.
    """

    width_multiplier: float = 1.0
    resolution: int = 224
    num_classes: int = 1000
    variant: str = "separable"
    activation: str = "relu"
    tf_padding: bool = False
    min_depth: int = 8
    dropout: float = 0.001
    in_chans: int = 3
    output_stride: int = 32
    bn_eps: float = 1e-5
    cifar_stem: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for any out-of-range field."""
        check_width(self.width_multiplier)
        check_resolution(self.resolution)
        check_choice(self.variant, VARIANTS, "variant")
        check_choice(self.activation, ACTIVATIONS, "activation")
        n = self.num_classes
        if not is_int(n) or n < 0:
            raise ValueError(f"num_classes must be an integer ≥ 0 (0 = no classifier), got {n!r}")
        check_int("min_depth", self.min_depth)
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        check_int("in_chans", self.in_chans)
        if not (isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0):
            raise ValueError(f"bn_eps must be a number > 0, got {self.bn_eps!r}")
        if self.cifar_stem and self.output_stride != 32:
            raise ValueError("the small-input stem (cifar_stem) needs output_stride 32: it removes strides itself")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                f"got {self.output_stride!r}"
            )

    def replace(self, **changes: Any) -> "MobileNetConfig":
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(unknown))}; allowed: "
                + ", ".join(f.name for f in dataclasses.fields(self))
            )
        return dataclasses.replace(self, **changes)

    def depth(self, channels: int) -> int:
        """TF-slim's channel rule: ``max(int(channels * α), min_depth)``."""
        return max(int(channels * self.width_multiplier), self.min_depth)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MobileNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def label(self) -> str:
        """The paper's way of naming a model, e.g. ``0.75 MobileNet-160``."""
        return model_label(self.width_multiplier, self.resolution, self.variant)
