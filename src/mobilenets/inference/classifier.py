"""Classify images and evaluate on ImageNet-style folders the way the reference does.

A :class:`Classifier` wraps a loaded model with the preprocessing its weights expect
(``model.pretrained_cfg.preprocess``): TF-slim's for Google's files, and for a
quantized file also the uint8 rounding of its input, so our float model sees exactly the
values the quantized reference sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator

import torch

from ..data import (
    TF_PREPROCESS,
    dequantize_input,
    labels_for,
    list_images,
    load_image,
    quantize_input,
    tf_slim_preprocess,
)
from ..models import MobileNetV1, pretrained_cfg

__all__ = ["Classifier", "ImageResult", "Prediction"]


@dataclass
class ImageResult:
    """One image's answer, or (``error``) why there is none; ``to_dict`` is its JSON line."""

    image: str
    error: str | None = None
    answer: ClassVar[str] = ""  # the field that holds the answer

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, self.answer: getattr(self, self.answer)}


@dataclass
class Prediction(ImageResult):
    top: list[dict[str, Any]] = field(default_factory=list)
    answer: ClassVar[str] = "top"


class Classifier:
    """A model plus the input pipeline and labels that go with its weights."""

    def __init__(self, model: MobileNetV1, labels: list[str] | None = None,
                 preprocess: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        info = pretrained_cfg(model)
        self.spec = preprocess or (info.preprocess if info is not None and info.preprocess else TF_PREPROCESS)
        self.labels = labels or (info.class_names if info is not None else None) or labels_for(model.num_classes)
        self.input_quantization = info.input_quantization if info is not None and info.quantized else None
        self.resolution = int((info.input_size if info is not None else None) or model.resolution)  # a run's size
        self.device = next(model.parameters()).device

    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image or path → the (3, R, R) float tensor the model expects."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        x = tf_slim_preprocess(image, self.resolution, float(self.spec.get("crop", 0.875)),
                               mean=tuple(self.spec["mean"]), std=tuple(self.spec["std"]))
        if self.input_quantization is not None:
            scale, zero_point = self.input_quantization
            x = dequantize_input(quantize_input(x, scale, zero_point), scale, zero_point)
        return x

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch.to(self.device)).float(), dim=1).cpu()

    def predict(self, images: Iterable[str | os.PathLike], top_k: int = 5,
                batch_size: int = 16) -> Iterator[Prediction]:
        """Yield one :class:`Prediction` per image; unreadable files yield one with ``error`` set."""
        paths = list_images(images)
        k = max(1, min(top_k, self.model.num_classes))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            tensors, ok, results = [], [], []
            for p in chunk:
                try:
                    tensors.append(self.preprocess(p))
                    ok.append(p)
                except ValueError as e:
                    results.append((p, Prediction(str(p), error=str(e))))
            if tensors:
                probs = self.probabilities(torch.stack(tensors))
                values, indices = probs.topk(k, dim=1)
                for p, vals, idxs in zip(ok, values.tolist(), indices.tolist()):
                    results.append((p, Prediction(str(p), top=[
                        {"index": i, "label": self.labels[i], "prob": v} for v, i in zip(vals, idxs)])))
            order = {p: n for n, p in enumerate(chunk)}
            for _, pred in sorted(results, key=lambda r: order[r[0]]):
                yield pred






