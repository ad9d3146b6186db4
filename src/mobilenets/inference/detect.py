"""Running a detector on images: the whole image resized to the detector's square input (the TF
Object Detection API does not crop), boxes mapped back to the original pixels, labels from COCO's
category names."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..data import load_image
from ..data.detection import open_detection_data
from ..data.labels import coco_category_names
from ..tasks.coco_eval import coco_map
from .classifier import ImageResult

__all__ = ["Detection", "Detector", "evaluate_detector", "resize_for_detector"]


def resize_for_detector(image: Image.Image, resolution: int) -> np.ndarray:
    """``(R, R, 3)`` uint8: the whole image, bilinear, as the TF OD API feeds SSD (no crop, no padding)."""
    return np.asarray(image.convert("RGB").resize((resolution, resolution), Image.BILINEAR))


@dataclass
class Detection(ImageResult):
    detections: list[dict[str, Any]] = field(default_factory=list)
    answer: ClassVar[str] = "detections"


class Detector:
    """A detector (e.g. :class:`~mobilenets.models.detection.SSDMobileNetV1`) with its input size and labels."""

    def __init__(self, model: torch.nn.Module, labels: Sequence[str] | None = None) -> None:
        self.model = model.eval()
        self.resolution = int(getattr(model, "resolution", 300))
        self.labels = list(labels) if labels is not None else coco_category_names()

    def label(self, category_id: int) -> str:
        return self.labels[category_id] if 0 <= category_id < len(self.labels) else str(category_id)

    @torch.no_grad()
    def run_arrays(self, arrays: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Detections for ``(R, R, 3)`` uint8 inputs, in input pixels."""
        device = next(self.model.parameters()).device
        batch = [torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1).float().div(255).to(device) for a in arrays]
        return [{k: v.cpu() for k, v in d.items()} for d in self.model(batch)]

    def detect_image(self, image: Image.Image) -> dict[str, torch.Tensor]:
        """Detections for one image, boxes in its own pixels."""
        w, h = image.size
        out = self.run_arrays([resize_for_detector(image, self.resolution)])[0]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32) / self.resolution
        return {**out, "boxes": out["boxes"] * scale}

    def detect(self, images: Iterable[str | os.PathLike], *, score: float = 0.5) -> Iterable[Detection]:
        """One :class:`Detection` per path (highest score first); unreadable files carry ``error``."""
        for path in images:
            try:
                image = load_image(path)
            except ValueError as e:
                yield Detection(str(path), error=str(e))
                continue
            d = self.detect_image(image)
            keep = d["scores"] >= score
            rows = [{"label": self.label(int(c)), "category_id": int(c), "score": round(float(s), 4),
                     "box": [round(float(v), 1) for v in b]}
                    for b, s, c in zip(d["boxes"][keep], d["scores"][keep], d["labels"][keep])]
            rows.sort(key=lambda r: -r["score"])
            yield Detection(str(Path(path)), detections=rows)


def evaluate_detector(model: torch.nn.Module, data: str | os.PathLike, *, split: str = "val",
                      subset: int | None = None, progress: bool = True, backend: str = "faster",
                      nms_mode: str | None = None) -> dict[str, Any]:
    """COCO box metrics of a detector on a COCO-JSON or YOLO folder/archive (YOLO's 80 class ids
    mapped to COCO's category ids): ``{"map", "map50", "map75", "map_small", "map_medium",
    "map_large", "images"}``, fractions in [0, 1]. ``nms_mode``: an SSD's decoding for this
    evaluation (``"exact"``, ``"multiclass"``, ``"fast"``; default: the model's own)."""
    from tqdm import tqdm


    index = open_detection_data(data, split)
    if subset:
        index = index.subset(subset)
    detector = Detector(model)
    before = getattr(model, "nms_mode", None)
    if nms_mode is not None:
        if before is None:
            raise ValueError(f"nms_mode is for SSD detectors, not {type(model).__name__}")
        model.nms_mode = nms_mode
    predictions = []
    try:
        for sample in tqdm(index.samples, desc=f"evaluate {index.split}", unit="img", disable=not progress,
                           dynamic_ncols=True):
            d = detector.detect_image(load_image(sample.path))
            predictions.append(d)
    finally:
        if nms_mode is not None:
            model.nms_mode = before
    return coco_map(predictions, index.samples, backend=backend)
