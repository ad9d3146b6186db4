"""COCO detection metrics (mAP@[.5:.95], AP50, AP75, AP small/medium/large) through the COCO tools:
``faster-coco-eval`` for speed, ``pycocotools`` as the reference (the tests check they agree).
Ground truth and detections are built in memory; nothing is written."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

__all__ = ["COCO_METRIC_KEYS", "coco_map"]

COCO_METRIC_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


def _coco_dicts(predictions: Sequence[dict[str, Any]], truths: Sequence[Any]) -> tuple[dict, list]:
    images, annotations, results = [], [], []
    categories = sorted({int(c) for t in truths for c in t.labels} | {int(c) for p in predictions
                                                                       for c in np.asarray(p["labels"])})
    for t, p in zip(truths, predictions):
        images.append({"id": int(t.image_id), "width": int(t.width), "height": int(t.height)})
        for box, cat in zip(np.asarray(t.boxes, np.float64), t.labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": int(t.image_id), "category_id": int(cat),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "area": float(w * h),
                                "iscrowd": 0})
        for box, score, cat in zip(np.asarray(p["boxes"], np.float64), np.asarray(p["scores"]),
                                   np.asarray(p["labels"])):
            results.append({"image_id": int(t.image_id), "category_id": int(cat), "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    gt = {"images": images, "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in categories],
          "info": {}, "licenses": []}
    return gt, results


def coco_map(predictions: Sequence[dict[str, Any]], truths: Sequence[Any], *, backend: str = "faster") -> dict[str, Any]:
    """COCO box metrics of ``predictions`` (per image: ``boxes`` (N, 4) x1 y1 x2 y2 pixels, ``scores``,
    ``labels`` as COCO category ids) against ``truths`` (:class:`~mobilenets.data.detection.DetectionSample`).

    Returns ``{"map", "map50", "map75", "map_small", "map_medium", "map_large", "images"}`` with the
    metrics as fractions in [0, 1] (COCO reports −1 where a size class has no boxes)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} images")
    if backend == "faster":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose faster or pycocotools")
    gt_dict, results = _coco_dicts(predictions, truths)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            return {**{k: 0.0 for k in COCO_METRIC_KEYS}, "images": len(truths)}
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats[:6]]
    return {**dict(zip(COCO_METRIC_KEYS, stats)), "images": len(truths)}
