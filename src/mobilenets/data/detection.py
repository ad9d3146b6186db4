"""Detection data: COCO JSON (``annotations/instances_<split>.json`` + images) and YOLO text labels
(``images/<split>/``, ``labels/<split>/``, one ``class cx cy w h`` line per box, normalized, class
ids in COCO's 80-class order, as COCO128 ships), from a folder or an archive of one (extracted once
into the cache). Boxes come out in pixels ``(x1, y1, x2, y2)`` with COCO category ids (1–90), so a
YOLO folder and its COCO original are evaluated alike. An image without boxes (an empty label file, or
none, YOLO's convention) is a negative; a missing label folder, a box outside its image, an unknown class id or an empty split is a one-line
``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._utils import mix_seed
from .archives import ARCHIVE_SUFFIXES, extract_archive
from .preprocess import IMAGE_EXTENSIONS, load_image

__all__ = ["COCO80_TO_91", "DetectionSample", "DetectionIndex", "DetectionDataset", "open_detection_data"]

#: YOLO/COCO-80 class index → COCO category id (COCO leaves 11 of the ids 1–90 unused).
COCO80_TO_91 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
                32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
                58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
                88, 89, 90)
_SPLIT_NAMES = {"val": ("val2017", "val", "valid", "validation", "test2017", "test"), "train": ("train2017", "train")}
_TOLERANCE = 1e-3  # YOLO files round to 6 digits: a box may poke out of [0, 1] by that much


@dataclass(frozen=True)
class DetectionSample:
    path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, pixels, x1 y1 x2 y2
    labels: np.ndarray  # (N,) int64, COCO category ids


@dataclass(frozen=True)
class DetectionIndex:
    root: Path
    split: str
    format: str  # "yolo" or "coco"
    samples: tuple[DetectionSample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, n: int) -> "DetectionIndex":
        """The first ``n`` images (files are listed in name order)."""
        return DetectionIndex(self.root, self.split, self.format, self.samples[:n])


def _root(given: Path) -> Path:
    if not given.exists():
        raise ValueError(f"{given}: no such file or folder; give a COCO or YOLO detection folder or an archive of one")
    if given.is_file():
        if not given.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"{given}: not a folder or an archive (.tar.gz, .tar, .zip) of one")
        given = extract_archive(given)
    p = given
    for _ in range(3):
        if (p / "annotations").is_dir() or ((p / "images").is_dir() and (p / "labels").is_dir()):
            return p
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            break
        p = subdirs[0]
    raise ValueError(f"{given}: neither COCO (annotations/instances_*.json) nor YOLO (images/ and labels/) detection data")


def _split_dir(parent: Path, split: str) -> Path | None:
    for name in _SPLIT_NAMES.get(split, (split,)):
        if (parent / name).is_dir():
            return parent / name
    return None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable image ({e})") from None


def _read_yolo(root: Path, split: str) -> tuple[DetectionSample, ...]:
    images, labels = _split_dir(root / "images", split), _split_dir(root / "labels", split)
    if images is None:
        raise ValueError(f"{root}/images: no {' or '.join(_SPLIT_NAMES.get(split, (split,)))} folder")
    if labels is None:
        raise ValueError(f"{root}/labels: no label folder for {images.name}/ (expected labels/{images.name}/ with "
                         "one .txt per image)")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{images}: no images in this split")
    out = []
    for i, path in enumerate(files):
        label = labels / f"{path.stem}.txt"
        w, h = _image_size(path)
        # YOLO's convention (COCO128 follows it): an image without a label file has no boxes
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()] if label.is_file() else []
        boxes, cats = [], []
        for n, row in enumerate(rows, 1):
            try:
                cls, cx, cy, bw, bh = int(row[0]), *map(float, row[1:5])
                if len(row) != 5:
                    raise ValueError
            except (ValueError, IndexError):
                raise ValueError(f"{label}:{n}: expected 'class cx cy w h', got {' '.join(row)!r}") from None
            if not 0 <= cls < len(COCO80_TO_91):
                raise ValueError(f"{label}:{n}: unknown class id {cls}; YOLO COCO labels use 0–79")
            x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            if min(x1, y1) < -_TOLERANCE or max(x2, y2) > 1 + _TOLERANCE or bw <= 0 or bh <= 0:
                raise ValueError(f"{label}:{n}: box {cx:g} {cy:g} {bw:g} {bh:g} lies outside the image "
                                 "(normalized coordinates must be within [0, 1])")
            boxes.append([max(x1, 0) * w, max(y1, 0) * h, min(x2, 1) * w, min(y2, 1) * h])
            cats.append(COCO80_TO_91[cls])
        image_id = int(path.stem) if path.stem.isdigit() else i + 1
        out.append(DetectionSample(path, image_id, w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                                   np.asarray(cats, np.int64)))
    return tuple(out)


def _read_coco(root: Path, split: str) -> tuple[DetectionSample, ...]:
    names = _SPLIT_NAMES.get(split, (split,))
    ann = next((root / "annotations" / f"instances_{n}.json" for n in names
                if (root / "annotations" / f"instances_{n}.json").is_file()), None)
    if ann is None:
        raise ValueError(f"{root}/annotations: no instances_{names[0]}.json")
    data = json.loads(ann.read_text())
    folder = next((d for d in [_split_dir(root / "images", split), _split_dir(root, split)] if d is not None), None)
    if folder is None:
        raise ValueError(f"{root}: no image folder for {ann.name} (expected {names[0]}/ or images/{names[0]}/)")
    known = {c["id"] for c in data.get("categories", [])}
    by_image: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        if a["category_id"] not in known:
            raise ValueError(f"{ann}: annotation {a.get('id')} has unknown category id {a['category_id']}")
        by_image.setdefault(a["image_id"], []).append(a)
    out = []
    for img in sorted(data.get("images", []), key=lambda m: m["file_name"]):
        path = folder / img["file_name"]
        w, h = int(img["width"]), int(img["height"])
        boxes, cats = [], []
        for a in by_image.get(img["id"], []):
            x, y, bw, bh = a["bbox"]
            if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                raise ValueError(f"{ann}: annotation {a.get('id')} box {a['bbox']} lies outside its {w}×{h} image")
            boxes.append([x, y, x + bw, y + bh])
            cats.append(a["category_id"])
        out.append(DetectionSample(path, int(img["id"]), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                                   np.asarray(cats, np.int64)))
    if not out:
        raise ValueError(f"{ann}: no images in this split")
    return tuple(out)


def open_detection_data(path: str | os.PathLike, split: str = "val") -> DetectionIndex:
    """The images and boxes of one split (``"val"`` finds val2017/val/…, ``"train"`` train2017/train)."""
    root = _root(Path(path).expanduser())
    if (root / "annotations").is_dir():
        return DetectionIndex(root, split, "coco", _read_coco(root, split))
    return DetectionIndex(root, split, "yolo", _read_yolo(root, split))


class DetectionDataset:
    """Images of a :class:`DetectionIndex` as ``(uint8 tensor (3, R, R), target)``: the whole image
    resized to the detector's square input (boxes scaled with it), and for training the TF OD API's
    SSD augmentation (random horizontal flip, SSD random crop) through torchvision.transforms.v2 on
    ``tv_tensors.BoundingBoxes``. Targets hold ``boxes`` (pixels of the resized image), ``labels``
    (COCO ids) and ``image_id``. A sample's augmentation is seeded by ``(seed, epoch, index)``."""

    def __init__(self, index: DetectionIndex, resolution: int, *, train: bool = False, seed: int = 0) -> None:
        self.index, self.resolution, self.train, self.seed, self.epoch = index, resolution, train, seed, 0

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from torchvision import tv_tensors
        from torchvision.transforms import v2


        s = self.index.samples[i]
        image = tv_tensors.Image(torch.from_numpy(np.asarray(load_image(s.path)).copy()).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(s.boxes.copy()), format="XYXY",
                                         canvas_size=(image.shape[-2], image.shape[-1]))
        target = {"boxes": boxes, "labels": torch.from_numpy(s.labels.copy())}
        steps: list[Any] = []
        if self.train:
            steps += [v2.RandomHorizontalFlip(0.5), v2.RandomIoUCrop(), v2.SanitizeBoundingBoxes()]
        steps.append(v2.Resize((self.resolution, self.resolution), antialias=True))
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(mix_seed(self.seed, "detection-augment", self.epoch, i))
            image, target = v2.Compose(steps)(image, target)
        finally:
            torch.random.set_rng_state(state)
        return torch.as_tensor(image), {"boxes": torch.as_tensor(target["boxes"]), "labels": target["labels"],
                                        "image_id": s.image_id}
