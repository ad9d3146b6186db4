"""``detect``: boxes with labels and scores for images, optionally drawn into PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._utils import atomic_write
from ..data import list_images, load_image
from ..inference import Detector
from ..weights import load_detector
from .base import UsageError, add_command, float_type, report_each

__all__ = ["cmd_detect", "register"]


def _draw(image_path: str, rows: list[dict[str, Any]], out_dir: Path) -> Path:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes


    image = torch.from_numpy(np.asarray(load_image(image_path)).copy()).permute(2, 0, 1)
    if rows:
        boxes = torch.tensor([r["box"] for r in rows], dtype=torch.float32)
        labels = [f"{r['label']} {r['score']:.2f}" for r in rows]
        image = draw_bounding_boxes(image, boxes, labels, colors="yellow", width=max(2, image.shape[-1] // 200))
    out = out_dir / f"{Path(image_path).stem}.png"
    atomic_write(out, lambda tmp: Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp, format="PNG"))
    return out


def cmd_detect(args: argparse.Namespace) -> int:
    """Boxes, labels and scores for each image (a directory means every image in it). The whole
    image is resized to the detector's input (300×300 for Google's SSD file), as the TF Object
    Detection API does; boxes are in the original image's pixels, highest score first."""
    paths = list_images(args.images)
    if not paths:
        raise UsageError(f"no images found in {', '.join(args.images)}")
    out_dir = Path(args.draw) if args.draw else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--draw {out_dir}: exists and is not a folder; give a folder for the PNGs")
        out_dir.mkdir(parents=True, exist_ok=True)
    detector = Detector(load_detector(args.weights))
    def show(result: Any) -> None:
        print(result.image)
        for r in result.detections:
            x1, y1, x2, y2 = r["box"]
            print(f"  {r['score']:6.3f}  {r['label']} ({r['category_id']})  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")

    draw = (lambda result: _draw(result.image, result.detections, out_dir)) if out_dir is not None else None
    return report_each(detector.detect(args.images, score=args.score), args.json, show, draw)


def register(sub: Any) -> None:
    """Add ``detect`` to the ``mobilenets`` subparsers."""
    p = add_command(sub, "detect", cmd_detect, "detect objects in images with a detector file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="a TFLite SSD MobileNet file (e.g. Google's coco_ssd_mobilenet_v1) or a detection run / "
                        "checkpoint from `mobilenets train --task detection`")
    p.add_argument("--score", type=float_type("--score", minimum=0.0, inclusive=True, below=1.0), default=0.5,
                   metavar="S", help="report boxes scoring at least S (default 0.5)")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"image", "detections": '
                   '[{"label", "category_id", "score", "box": [x1, y1, x2, y2]}]}')
    p.add_argument("--draw", metavar="OUT_DIR", help="also write each image with its boxes drawn as OUT_DIR/<name>.png")
