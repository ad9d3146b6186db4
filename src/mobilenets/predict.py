"""Classify images and evaluate on ImageNet-style folders the way the reference does.

A :class:`Classifier` wraps a loaded model with the preprocessing its weights expect
(``model.pretrained_info["preprocess"]``): TF-slim's for Google's files, and for a
quantized file also the uint8 rounding of its input, so our float model sees exactly the
values the quantized reference sees.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from .labels import labels_for, wnid_to_index
from .model import MobileNetV1
from .preprocess import dequantize_input, list_images, load_image, quantize_input, tf_slim_preprocess
from .weights import TF_PREPROCESS

__all__ = ["Classifier", "Prediction", "imagenet_target", "evaluate_imagenet_folder"]


@dataclass
class Prediction:
    image: str
    top: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "top": self.top} if self.error is None else \
            {"image": self.image, "error": self.error}


class Classifier:
    """A model plus the input pipeline and labels that go with its weights."""

    def __init__(self, model: MobileNetV1, labels: list[str] | None = None,
                 preprocess: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        info = getattr(model, "pretrained_info", {}) or {}
        self.spec = preprocess or info.get("preprocess", TF_PREPROCESS)
        self.labels = labels or info.get("class_names") or labels_for(model.num_classes)
        self.input_quantization = info.get("input_quantization") if info.get("quantized") else None
        self.resolution = int(info.get("input_size") or model.resolution)  # a run's training size
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
                    results.append((p, Prediction(str(p), [
                        {"index": i, "label": self.labels[i], "prob": v} for v, i in zip(vals, idxs)])))
            order = {p: n for n, p in enumerate(chunk)}
            for _, pred in sorted(results, key=lambda r: order[r[0]]):
                yield pred


_WNID = re.compile(r"^(n\d{8})")


def imagenet_target(path: Path) -> int | None:
    """ImageNet class index of a file: from its folder name (``n01440764/x.JPEG``) or its file
    name (``n01440764_tench.JPEG``); ``None`` when neither is a WordNet id of ImageNet-1k."""
    table = wnid_to_index()
    for candidate in (path.parent.name, path.name):
        m = _WNID.match(candidate)
        if m and m[1] in table:
            return table[m[1]]
    return None


def evaluate_imagenet_folder(classifier: Classifier, root: str | os.PathLike, *, batch_size: int = 32,
                             progress: bool = True) -> dict[str, Any]:
    """Top-1 / top-5 on an ImageNet-style folder. Images whose class cannot be told from their
    folder or file name, and unreadable images, are skipped and counted."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory; give an ImageNet-style folder")
    paths = list_images([root])
    if not paths:
        raise ValueError(f"{root}: no images found (expected JPEG/PNG files, in wnid folders or named <wnid>_*.JPEG)")
    offset = 1 if classifier.model.num_classes == 1001 else 0
    labelled = [(p, t) for p in paths if (t := imagenet_target(p)) is not None]
    if not labelled:
        raise ValueError(f"{root}: no image is named by an ImageNet WordNet id (n01440764/... or n01440764_*.JPEG)")
    top1 = top5 = seen = unreadable = 0
    bar = tqdm(total=len(labelled), desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(labelled), batch_size):
        chunk = labelled[start:start + batch_size]
        tensors, targets = [], []
        for p, t in chunk:
            try:
                tensors.append(classifier.preprocess(p))
                targets.append(t + offset)
            except ValueError:
                unreadable += 1
        if tensors:
            probs = classifier.probabilities(torch.stack(tensors))
            top = probs.topk(min(5, probs.shape[1]), dim=1).indices
            target = torch.tensor(targets)[:, None]
            top1 += int((top[:, :1] == target).sum())
            top5 += int((top == target).any(dim=1).sum())
            seen += len(targets)
        bar.update(len(chunk))
        bar.set_postfix(top1=f"{100 * top1 / max(seen, 1):.1f}", top5=f"{100 * top5 / max(seen, 1):.1f}")
    bar.close()
    return {"images": seen, "top1": 100.0 * top1 / max(seen, 1), "top5": 100.0 * top5 / max(seen, 1),
            "unlabelled": len(paths) - len(labelled), "unreadable": unreadable}
