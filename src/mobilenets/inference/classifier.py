"""Classify images and evaluate on ImageNet-style folders the way the reference does.

A :class:`Classifier` wraps a loaded model with the preprocessing its weights expect
(``model.pretrained_cfg.preprocess``): TF-slim's for Google's files, and for a
quantized file also the uint8 rounding of its input, so our float model sees exactly the
values the quantized reference sees.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

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

__all__ = ["SMALL_IMAGE_FACTOR", "Classifier", "Embedding", "ImageResult", "Prediction", "small_image_warning"]

# An image whose shorter side is under the model's input size / this is "far smaller": it is
# enlarged more than 4× (a 1×1 image, a 32-px CIFAR image for a 224-px model), and the answer says
# little about it; predict says so on stderr.
SMALL_IMAGE_FACTOR = 4


def small_image_warning(path: str, size: tuple[int, int], resolution: int) -> str | None:
    """A one-line warning when an image of ``size`` (w, h) is far smaller than the model's input."""
    w, h = size
    if min(w, h) * SMALL_IMAGE_FACTOR >= resolution:
        return None
    return (f"{path}: the image is {w}×{h} px, far smaller than the model's {resolution}-px input "
            f"(enlarged {resolution / max(1, min(w, h)):.0f}×): its answer means little")


@dataclass
class ImageResult:
    """One image's answer, or (``error``) why there is none; ``to_dict`` is its JSON line."""

    image: str
    error: str | None = None
    warning: str | None = None  # e.g. an image far smaller than the model's input (said on stderr)
    answer: ClassVar[str] = ""  # the field that holds the answer

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, self.answer: getattr(self, self.answer)}


@dataclass
class Prediction(ImageResult):
    top: list[dict[str, Any]] = field(default_factory=list)
    answer: ClassVar[str] = "top"


@dataclass
class Embedding(ImageResult):
    """A model without a classifier: the image's pooled ``1024·α``-d embedding."""

    embedding: list[float] = field(default_factory=list)
    answer: ClassVar[str] = "embedding"

    @property
    def norm(self) -> float:
        return float(sum(v * v for v in self.embedding) ** 0.5)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return super().to_dict()
        return {"image": self.image, "dim": len(self.embedding), "norm": self.norm, "embedding": self.embedding}


class Classifier:
    """A model plus the input pipeline and labels that go with its weights.

    ``model``: a :class:`~mobilenets.models.MobileNetV1` (or anything with its face, e.g. an
    exported file from :func:`mobilenets.deploy.load_exported`), or a weights file path, loaded
    with :func:`mobilenets.load_pretrained`. A model without a classifier (``num_classes=0``,
    e.g. Google's embedding extractor) has no labels to predict: :meth:`embed` gives its
    embeddings, :meth:`predict` says so.
    """

    def __init__(self, model: MobileNetV1 | str | os.PathLike, labels: list[str] | None = None,
                 preprocess: dict[str, Any] | None = None) -> None:
        if isinstance(model, (str, os.PathLike)):
            from ..weights import load_pretrained  # (weights sits below inference: no cycle)

            model = load_pretrained(model)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "num_classes"):
            raise ValueError(f"Classifier needs a MobileNetV1 (e.g. mobilenets.load_pretrained(path)) or a weights "
                             f"file path, got {type(model).__name__}")
        self.model = model.eval()
        info = pretrained_cfg(model)
        self.spec = preprocess or (info.preprocess if info is not None and info.preprocess else TF_PREPROCESS)
        self.labels = labels or (info.class_names if info is not None else None) or labels_for(model.num_classes)
        self.input_quantization = info.input_quantization if info is not None and info.quantized else None
        self.resolution = int((info.input_size if info is not None else None) or model.resolution)  # a run's size
        # (an exported file run in its runtime has no parameters: its inputs are built on the CPU)
        self.device = next(iter(model.parameters()), torch.empty(0)).device

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

    @property
    def has_classifier(self) -> bool:
        """False for a body without a classifier and for a distilled embedding student (whose last layer
        projects to its teacher's embedding: ``output: "embedding"`` in its checkpoint)."""
        info = pretrained_cfg(self.model)
        embedding = info is not None and (info.extra or {}).get("output") == "embedding"
        return int(self.model.num_classes) > 0 and not embedding

    def no_classifier_message(self) -> str:
        """What a model without a classifier is, and what it is for (one line)."""
        info = pretrained_cfg(self.model)
        name = info.path if info is not None and info.path else "this model"
        dim = int(self.model.num_classes) or self.model.config.depth(1024)
        return (f"{name} has no classifier: it outputs {dim}-d image embeddings, not labels. Use it as a "
                "pretrained body to fine-tune (`mobilenets train --init FILE --data DIR`), or for embeddings "
                "(Classifier(model).embed(images) in Python; `mobilenets predict` prints each image's)")

    def predict(self, images: str | os.PathLike | Iterable[str | os.PathLike], top_k: int = 5,
                batch_size: int = 16) -> Iterator[Prediction]:
        """Yield one :class:`Prediction` per image (``images``: files, folders, or one path);
        unreadable files yield one with ``error`` set. A model without a classifier is a
        ``ValueError`` (see :meth:`embed`)."""
        if not self.has_classifier:
            raise ValueError(self.no_classifier_message())
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer ≥ 1, got {top_k!r}")
        k = min(top_k, self.model.num_classes)

        def answer(path: str, out: torch.Tensor) -> Prediction:
            values, indices = torch.softmax(out.float(), dim=0).topk(k)
            return Prediction(path, top=[{"index": i, "label": self.labels[i], "prob": v}
                                         for v, i in zip(values.tolist(), indices.tolist())])
        return self._run(images, batch_size, answer, Prediction)

    def embed(self, images: str | os.PathLike | Iterable[str | os.PathLike],
              batch_size: int = 16) -> Iterator[Embedding]:
        """Yield one :class:`Embedding` per image: the model's output for it (for a model without
        a classifier, the pooled embedding; for a classifier, its logits)."""
        return self._run(images, batch_size, lambda path, out: Embedding(path, embedding=out.float().tolist()),
                         Embedding)

    def _run(self, images: Any, batch_size: int, answer: Any, kind: Any) -> Iterator[Any]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
        paths = list_images([images] if isinstance(images, (str, os.PathLike)) else images)
        return self._batches(paths, batch_size, answer, kind)

    def _batches(self, paths: list[Any], batch_size: int, answer: Any, kind: Any) -> Iterator[Any]:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            tensors, ok, results, warnings = [], [], [], {}
            for p in chunk:
                try:
                    image = load_image(p)
                    tensors.append(self.preprocess(image))
                    ok.append(p)
                    warnings[p] = small_image_warning(str(p), image.size, self.resolution)
                except ValueError as e:
                    results.append((p, kind(str(p), error=str(e))))
            if tensors:
                with torch.inference_mode():
                    outputs = self.model(torch.stack(tensors).to(self.device)).cpu()
                for p, out in zip(ok, outputs):
                    result = answer(str(p), out)
                    result.warning = warnings[p]
                    results.append((p, result))
            order = {p: n for n, p in enumerate(chunk)}
            for _, result in sorted(results, key=lambda r: order[r[0]]):
                yield result






