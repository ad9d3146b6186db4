"""One registry of the 16 official MobileNet V1 configurations and their published numbers.

Names follow timm's style: ``mobilenet_v1_<α×100>_<ρ>``, e.g. ``mobilenet_v1_050_160``
is α = 0.5 at 160×160. The published figures are TF-slim's table for the released
checkpoints (``research/slim/nets/mobilenet_v1.md`` in tensorflow/models, the
``mobilenet_v1_2018_02_22`` release): ImageNet top-1/top-5 of the float and the
8-bit quantized model, and the Million MACs / Million parameters it prints (which, unlike
the paper's ρ-scaled figures, are exact counts, include the 1001-way classifier and BN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import MobileNetConfig
from .mobilenet_v1 import MobileNetV1

__all__ = ["OfficialModel", "OFFICIAL_MODELS", "list_models", "get_config", "create_model"]


@dataclass(frozen=True)
class OfficialModel:
    """One released MobileNet V1 and TF-slim's published numbers for it."""

    name: str
    width_multiplier: float
    resolution: int
    tfslim_macs_m: int
    tfslim_params_m: float
    top1: float
    top5: float
    quant_top1: float
    quant_top5: float

    @property
    def config(self) -> MobileNetConfig:
        return MobileNetConfig(width_multiplier=self.width_multiplier, resolution=self.resolution)

    @property
    def tfslim_name(self) -> str:
        return f"MobileNet_v1_{self.width_multiplier:.2f}_{self.resolution}".replace("1.00", "1.0")


# (α, ρ, Million MACs, Million params, top-1, top-5, quant top-1, quant top-5), TF-slim's table.
_TFSLIM_TABLE = [
    (1.0, 224, 569, 4.24, 70.9, 89.9, 69.7, 89.5),
    (1.0, 192, 418, 4.24, 70.0, 89.2, 69.0, 88.9),
    (1.0, 160, 291, 4.24, 68.0, 87.7, 67.3, 87.7),
    (1.0, 128, 186, 4.24, 65.2, 85.8, 64.0, 85.5),
    (0.75, 224, 317, 2.59, 68.4, 88.2, 67.9, 88.1),
    (0.75, 192, 233, 2.59, 67.2, 87.3, 66.2, 87.1),
    (0.75, 160, 162, 2.59, 65.3, 86.0, 63.9, 85.5),
    (0.75, 128, 104, 2.59, 62.1, 83.9, 59.8, 82.8),
    (0.5, 224, 150, 1.34, 63.3, 84.9, 62.2, 84.5),
    (0.5, 192, 110, 1.34, 61.7, 83.6, 60.4, 83.2),
    (0.5, 160, 77, 1.34, 59.1, 81.9, 57.7, 81.3),
    (0.5, 128, 49, 1.34, 56.3, 79.4, 54.9, 78.9),
    (0.25, 224, 41, 0.47, 49.8, 74.2, 48.2, 73.8),
    (0.25, 192, 34, 0.47, 47.7, 72.3, 45.8, 71.9),
    (0.25, 160, 21, 0.47, 45.5, 70.3, 43.5, 69.1),
    (0.25, 128, 14, 0.47, 41.5, 66.3, 39.9, 65.8),
]


def _name(width: float, resolution: int) -> str:
    return f"mobilenet_v1_{round(width * 100):03d}_{resolution}"


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    _name(a, r): OfficialModel(_name(a, r), a, r, macs, params, t1, t5, q1, q5)
    for a, r, macs, params, t1, t5, q1, q5 in _TFSLIM_TABLE
}


def list_models() -> list[str]:
    """Names of the 16 official configurations, largest first."""
    return list(OFFICIAL_MODELS)


def get_config(name: str, **overrides: Any) -> MobileNetConfig:
    """The :class:`MobileNetConfig` of a named model, with fields overridden."""
    try:
        entry = OFFICIAL_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model name {name!r}; choose one of: {', '.join(OFFICIAL_MODELS)} "
            "(see `mobilenets list-models`)"
        ) from None
    return entry.config.replace(**overrides) if overrides else entry.config


def create_model(name: str, *, features_only: bool = False, **overrides: Any) -> MobileNetV1:
    """Build a named model, e.g. ``create_model("mobilenet_v1_050_160", num_classes=10)``."""
    return MobileNetV1(get_config(name, **overrides), features_only=features_only)
