"""Detection data: YOLO text labels and COCO JSON, with one-line errors for bad label files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import need_data
from PIL import Image

from mobilenets.data.detection import COCO80_TO_91, DetectionDataset, open_detection_data


def _yolo(root, labels: dict[str, str], size=(64, 48)):
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", size, (90, 120, 150)).save(root / "images" / "val" / f"{name}.jpg")
        if text is not None:
            (root / "labels" / "val" / f"{name}.txt").write_text(text)
    return root


def test_coco128_val_reads_as_coco_ids_in_pixels():
    index = open_detection_data(need_data("coco128.tar.gz"), "val")
    assert len(index) == 128 and index.format == "yolo"
    first = index.samples[0]
    assert first.image_id == 139 and (first.width, first.height) == (640, 426)
    assert first.labels[0] == 64  # YOLO class 58 (potted plant) is COCO id 64
    assert (first.boxes[:, 2] <= 640).all() and (first.boxes[:, 3] <= 426).all()
    assert len(COCO80_TO_91) == 80 and COCO80_TO_91[-1] == 90
    train = open_detection_data(need_data("coco128.tar.gz"), "train")
    assert sum(len(s.labels) == 0 for s in train.samples) == 2  # two images without a label file: negatives


def test_yolo_boxes_negatives_and_errors(tmp_path):
    root = _yolo(tmp_path / "ok", {"a": "0 0.5 0.5 0.5 0.5\n16 0.25 0.25 0.1 0.2\n", "b": "", "c": None})
    index = open_detection_data(root)
    a, b, c = index.samples
    assert np.allclose(a.boxes, [[16, 12, 48, 36], [12.8, 7.2, 19.2, 16.8]], atol=1e-4)
    assert a.labels.tolist() == [1, 18]  # person, dog
    assert len(b.labels) == 0 and len(c.labels) == 0
    cases = {
        "outside": ("0 0.9 0.5 0.5 0.5\n", "lies outside the image"),
        "unknown": ("80 0.5 0.5 0.1 0.1\n", "unknown class id 80"),
        "garbled": ("person 0.5 0.5\n", "expected 'class cx cy w h'"),
    }
    for name, (text, message) in cases.items():
        bad = _yolo(tmp_path / name, {"x": text})
        with pytest.raises(ValueError, match=message) as e:
            open_detection_data(bad)
        assert "\n" not in str(e.value) and "x.txt:1" in str(e.value)
    empty = tmp_path / "empty"
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "labels" / "val").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images in this split"):
        open_detection_data(empty)
    nolabels = tmp_path / "nolabels"
    (nolabels / "images" / "val").mkdir(parents=True)
    (nolabels / "labels").mkdir()
    with pytest.raises(ValueError, match="no label folder for val/"):
        open_detection_data(nolabels)
    with pytest.raises(ValueError, match="neither COCO"):
        open_detection_data(tmp_path / "ok" / "images")
    with pytest.raises(ValueError, match="no such file or folder"):
        open_detection_data(tmp_path / "missing")


def test_coco_json_and_its_errors(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.new("RGB", (100, 80)).save(root / "val2017" / "1.jpg")
    Image.new("RGB", (100, 80)).save(root / "val2017" / "2.jpg")
    data = {"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 80},
                       {"id": 2, "file_name": "2.jpg", "width": 100, "height": 80}],
            "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 90, "bbox": [10, 20, 30, 40], "iscrowd": 0}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    index = open_detection_data(root)
    assert index.format == "coco" and len(index) == 2
    assert index.samples[0].boxes.tolist() == [[10, 20, 40, 60]] and index.samples[0].labels.tolist() == [90]
    assert len(index.samples[1].labels) == 0
    data["annotations"][0]["category_id"] = 12
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown category id 12"):
        open_detection_data(root)
    data["annotations"][0].update(category_id=1, bbox=[90, 20, 30, 40])
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="lies outside its 100×80 image"):
        open_detection_data(root)


def test_training_augmentation_keeps_boxes_on_the_image_and_is_seeded(tmp_path):
    root = _yolo(tmp_path / "aug", {"a": "0 0.5 0.5 0.5 0.5\n2 0.2 0.3 0.2 0.2\n"}, size=(200, 120))
    ds = DetectionDataset(open_detection_data(root), 96, train=True, seed=1)
    x, t = ds[0]
    assert x.shape == (3, 96, 96) and x.dtype.is_floating_point is False
    assert (t["boxes"] >= 0).all() and (t["boxes"] <= 96).all()
    x2, t2 = ds[0]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(t["boxes"].numpy(), t2["boxes"].numpy())
    plain = DetectionDataset(open_detection_data(root), 96)[0][1]["boxes"]
    assert plain[0].tolist() == pytest.approx([24, 24, 72, 72], abs=0.01)  # 96/200 and 96/120 scaling
