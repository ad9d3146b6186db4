"""COCO metrics: faster-coco-eval (used for speed) agrees with pycocotools (the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilenets.data.detection import DetectionSample
from mobilenets.tasks.coco_eval import COCO_METRIC_KEYS, coco_map

pytest.importorskip("pycocotools", reason="the reference COCO evaluation needs pycocotools")
pytest.importorskip("faster_coco_eval", reason="the fast COCO evaluation needs faster-coco-eval")


def _random_set(seed: int, images: int = 30):
    rng = np.random.default_rng(seed)
    truths, preds = [], []
    for i in range(images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(4, 200, (n, 2))  # small, medium and large boxes
        boxes = np.concatenate([xy, np.minimum(xy + wh, 640)], 1).astype(np.float32)
        labels = rng.choice([1, 3, 18, 62], n)
        truths.append(DetectionSample(None, i + 1, 640, 480, boxes, labels))
        m = int(rng.integers(0, 10))
        jitter = boxes[rng.integers(0, max(n, 1), m)] if n else rng.uniform(0, 300, (m, 4))
        pb = (jitter + rng.normal(0, 8, (m, 4))).clip(0, 640)
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        preds.append({"boxes": pb, "scores": rng.uniform(0, 1, m),
                      "labels": labels[rng.integers(0, n, m)] if n else rng.choice([1, 3], m)})
    return preds, truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faster_coco_eval_agrees_with_pycocotools(seed):
    preds, truths = _random_set(seed)
    fast, ref = coco_map(preds, truths), coco_map(preds, truths, backend="pycocotools")
    assert set(fast) == set(COCO_METRIC_KEYS) | {"images"} and fast["images"] == 30
    for k in COCO_METRIC_KEYS:
        assert fast[k] == pytest.approx(ref[k], abs=1e-4), k
    assert 0 < ref["map"] < 1


def test_perfect_detections_score_one_and_bad_input_is_refused():
    _, truths = _random_set(3)
    perfect = [{"boxes": t.boxes, "scores": np.ones(len(t.labels)), "labels": t.labels} for t in truths]
    assert coco_map(perfect, truths)["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="predictions for"):
        coco_map(perfect[:-1], truths)
    with pytest.raises(ValueError, match="unknown COCO evaluation backend"):
        coco_map(perfect, truths, backend="mine")
