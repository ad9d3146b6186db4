"""What a model's weights say about it, typed: where they came from, how to preprocess inputs,
which classes the outputs are, and, for an official model, TF-slim's published accuracy. Every
loader sets one as ``model.pretrained_cfg`` (compare timm's ``PretrainedCfg``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import MobileNetConfig
from .registry import OFFICIAL_MODELS, OfficialModel

__all__ = ["PretrainedInfo", "pretrained_cfg"]

_FIELDS = ("format", "path", "preprocess", "class_names", "has_background_class", "quantized",
           "input_quantization", "input_size")


@dataclass
class PretrainedInfo:
    """``format``: "tflite", "keras", "mobilenets" (our checkpoints), "timm", "state_dict",
    "safetensors" or "mobilenets-detector". ``preprocess``: ``{"mean", "std", "crop", "resize"}``
    as :func:`mobilenets.data.tf_slim_preprocess` takes them. ``class_names``: a trained run's classes
    (None for ImageNet weights, whose labels ship in the package). ``input_quantization``:
    ``(scale, zero_point)`` of a quantized file's uint8 input. ``input_size``: the size a run trained
    at. ``published``: the registry's entry (TF-slim's accuracy) when α and ρ are an official
    model's and the classes ImageNet's. ``extra``: what else the reader found (operators,
    description, Keras version, anchors, ...)."""

    format: str
    path: str | None = None
    config: MobileNetConfig | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    has_background_class: bool = False
    quantized: bool = False
    input_quantization: tuple[float, int] | None = None
    input_size: int | None = None
    published: OfficialModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_reader(cls, info: dict[str, Any], config: MobileNetConfig | None = None) -> "PretrainedInfo":
        """From a weights reader's facts (the dict ``read_weights`` returns)."""
        known = {k: info[k] for k in _FIELDS if k in info and info[k] is not None}
        if "input_quantization" in known:
            scale, zero = known["input_quantization"]
            known["input_quantization"] = (float(scale), int(zero))
        if "class_names" in known:
            known["class_names"] = list(known["class_names"])
        extra = {k: v for k, v in info.items() if k not in _FIELDS}
        published = None
        if config is not None and config.num_classes in (1000, 1001) and config.variant == "separable":
            published = next((m for m in OFFICIAL_MODELS.values() if m.resolution == config.resolution
                              and abs(m.width_multiplier - config.width_multiplier) < 1e-6), None)
        return cls(config=config, published=published, extra=extra, **known)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly except ``extra``'s arrays), e.g. for a checkpoint."""
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict() if self.config is not None else None
        d["published"] = dataclasses.asdict(self.published) if self.published is not None else None
        return d


def pretrained_cfg(model: Any) -> PretrainedInfo | None:
    """The model's :class:`PretrainedInfo`, or None for a model built from a config."""
    info = getattr(model, "pretrained_cfg", None)
    return info if isinstance(info, PretrainedInfo) else None
