"""``predict`` and ``evaluate``: classify images, and measure top-1 / top-5 on a folder."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..data import list_images
from ..deploy import exported_format, load_exported
from ..inference import Classifier, evaluate_dataset, evaluate_detector, evaluate_imagenet_folder
from ..models import pretrained_cfg
from ..weights import is_detector_file, load_detector, load_pretrained
from .base import PROG, UsageError, count_type, device_type, report_each, require_device, resolution_type

__all__ = ["cmd_evaluate", "cmd_predict", "register"]


def _load_weights(path: str, args: argparse.Namespace, device: str | None = None) -> Any:
    """A weights file as a PyTorch model, or a file `mobilenets export` wrote (ONNX, OpenVINO,
    TFLite with its metadata) run in its own runtime, with the same face (see deploy.exported)."""
    if exported_format(path) is not None:
        return load_exported(path, resolution=getattr(args, "resolution", None), device=device or "cpu")
    return load_pretrained(path, resolution=getattr(args, "resolution", None))


def cmd_predict(args: argparse.Namespace) -> int:
    if not list_images(args.images):  # only empty directories were given
        raise UsageError(f"no images found in {', '.join(args.images)}")
    require_device(args.device)
    model = _load_weights(args.weights, args, args.device)
    classifier = Classifier(model.to(args.device) if args.device else model)
    if not classifier.has_classifier:  # e.g. Google's embedding extractor: its embeddings, not labels
        dim = int(classifier.model.num_classes) or classifier.model.config.depth(1024)
        print(f"{PROG}: note: {args.weights} has no classifier (it outputs {dim}-d embeddings, not labels): each "
              "image's embedding size and L2 norm follow (--json: the vector); to classify with it, fine-tune it: "
              f"mobilenets train --init {args.weights} --data DIR", file=sys.stderr, flush=True)

        def show_embedding(e: Any) -> None:
            print(e.image)
            print(f"  {len(e.embedding)}-d embedding, L2 norm {e.norm:.4f} (--json prints the vector)")

        return report_each(classifier.embed(args.images, batch_size=args.batch_size), args.json, show_embedding)

    def show(pred: Any) -> None:
        print(pred.image)
        for t in pred.top:
            print(f"  {t['prob']:7.4f}  {t['label']} ({t['index']})")

    return report_each(classifier.predict(args.images, top_k=args.top, batch_size=args.batch_size), args.json, show)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.weights:
        weights, data = args.weights, args.target
    else:
        weights, data = args.target, args.data
    if not weights or not data:
        raise UsageError("give the data folder and --weights FILE, or a run directory / weights file and --data PATH")
    require_device(args.device)

    if is_detector_file(weights):  # COCO mAP of a detector on a COCO or YOLO folder

        result = evaluate_detector(load_detector(weights, device=args.device or "cpu"), data,
                                   split=args.split or "val", progress=not args.no_progress)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"mAP {100 * result['map']:.2f}  AP50 {100 * result['map50']:.2f}  AP75 {100 * result['map75']:.2f}  "
                  f"AP small/medium/large {100 * result['map_small']:.2f} / {100 * result['map_medium']:.2f} / "
                  f"{100 * result['map_large']:.2f}  on {result['images']} images")
        return 0
    model = _load_weights(weights, args, args.device)
    if args.device:
        model = model.to(args.device)

    info = pretrained_cfg(model)
    if info is not None and info.class_names:
        # A model trained with `mobilenets train`: its own classes and preprocessing.
        # "val" means val/, validation/ or test/, whichever the data has.
        result = evaluate_dataset(model, data, split=args.split or "val", batch_size=args.batch_size,
                                  progress=not args.no_progress)
    else:
        result = evaluate_imagenet_folder(Classifier(model), data, batch_size=args.batch_size,
                                          progress=not args.no_progress)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['images']} images"
              + (f"  ({result['unlabelled']} without an ImageNet class skipped)" if result.get("unlabelled") else "")
              + (f"  ({result['unreadable']} unreadable skipped)" if result.get("unreadable") else "")
              + (f"  ({result['skipped']} unreadable skipped)" if result.get("skipped") else ""))
    return 0


def register(sub: Any) -> None:
    """Add ``predict`` and ``evaluate`` to the ``mobilenets`` subparsers."""
    p = sub.add_parser("predict", help="classify images with a weights file",
                       description="Top-K labels with probabilities for each image (a directory means every "
                                   "image in it), preprocessed exactly as the weights' reference does. A file "
                                   "written by `mobilenets export` (ONNX, OpenVINO, TFLite) runs in its own "
                                   "runtime, as deployed. A file without a classifier (e.g. Google's embedding "
                                   "extractor) gives each image's embedding: its size and L2 norm (--json: the "
                                   "vector). An image far smaller than the model's input is warned about.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")
    p.add_argument("--weights", required=True, metavar="FILE", help="TFLite, Keras .h5, .pt/.pth or "
                   ".safetensors file, a training run directory, or a file `mobilenets export` wrote "
                   "(.onnx, .xml, .tflite: run in its runtime)")
    p.add_argument("--top", type=count_type(1, "--top"), default=5, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"image", "top": [{"index", "label", "prob"}]} '
                   '({"image", "dim", "norm", "embedding"} for a file without a classifier)')
    p.add_argument("--resolution", type=resolution_type, metavar="R", help="input size (default: the file's)")
    p.add_argument("--batch-size", type=count_type(1, "--batch-size"), default=16, metavar="B",
                   help="images per forward pass (default 16)")
    p.add_argument("--device", type=device_type, default=None, metavar="cpu|cuda",
                   help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="top-1 / top-5 accuracy on an image folder",
                       description="Top-1 and top-5 on an ImageNet-style folder (class subfolders named by "
                                   "WordNet id, or files named <wnid>_*.JPEG). Either `evaluate DIR --weights "
                                   "FILE` or `evaluate RUN_DIR_or_WEIGHTS --data DIR`. For a detector (Google's "
                                   "TFLite SSD file or a detection run), COCO mAP, AP50, AP75 and AP by size on a "
                                   "COCO-JSON or YOLO folder or archive (e.g. coco128.tar.gz, val2017).")
    p.add_argument("target", nargs="?", metavar="DIR_or_WEIGHTS",
                   help="the data folder (with --weights), or a weights file / training run directory (with --data)")
    p.add_argument("--weights", metavar="FILE", help="weights file, or a file `mobilenets export` wrote (run in its "
                   "runtime: the accuracy the deployed file keeps); then the positional argument is the data folder")
    p.add_argument("--data", metavar="PATH", help="data folder (then the positional argument is the weights or run dir)")
    p.add_argument("--resolution", type=resolution_type, metavar="R", help="input size (default: the file's)")
    p.add_argument("--batch-size", type=count_type(1, "--batch-size"), default=32, metavar="B",
                   help="images per forward pass (default 32)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--split", choices=("val", "test", "train"), default=None,
                   help="for a model trained with `mobilenets train`: which split of --data (default: val/, else test/)")
    p.add_argument("--device", type=device_type, default=None, metavar="cpu|cuda",
                   help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=cmd_evaluate)
