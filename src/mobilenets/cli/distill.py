"""``mobilenets distill``: train a student MobileNet from a teacher's outputs (:mod:`mobilenets.tasks.distill`).

Every option of ``train`` that says how to train (recipe, optimization, resume, speed, ...) works
the same here; the run is a normal run directory (``checkpoint.pt``, ``best.pt``, ``metrics.jsonl``,
``summary.json``, TensorBoard events) with the teacher's outputs cached in ``teacher_outputs.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..tasks import DISTILL_LOSSES
from .base import add_command, add_model_options, error, float_type
from .train import add_training_options, config_from_train_args, run_training

__all__ = ["cmd_distill", "register"]

_LABELS = ("teacher", "gt", "both")


def register(sub: Any) -> None:
    p = add_command(sub, "distill", cmd_distill, "train a student MobileNet from a teacher's outputs (KD, "
                    "embeddings, multi-label), on unlabeled images")
    p.add_argument("--teacher", metavar="FILE", help="the teacher: a classifier (TFLite, Keras, our checkpoint or "
                   "run), an embedding extractor (e.g. mobilenet_v1_1.0_224_quant_embedding_extractor.tflite) or a "
                   "detector (its per-image class scores teach --loss multilabel); not needed with --resume")
    p.add_argument("--data", nargs="+", metavar="PATH", help="images to distill on: one or more folders or archives, "
                   "with or without class folders (e.g. cifar10-jpeg.tar.gz coco128.tar.gz imagenet-sample); the "
                   "train split of a source that has one")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--loss", choices=tuple(DISTILL_LOSSES), help="kd: Hinton's logit distillation (teacher: a "
                   "classifier); embedding: squared L2 to the teacher's embedding, as the paper's mobile FaceNet; "
                   "multilabel: sigmoid outputs, BCE (teacher: a detector); default kd")
    g = p.add_argument_group("distillation")
    g.add_argument("--temperature", type=float_type("--temperature"), metavar="T",
                   help="kd: softmax temperature of both networks (default 4)")
    g.add_argument("--alpha", type=float_type("--alpha", inclusive=True, below=1.0 + 1e-9), metavar="A",
                   help="weight of the teacher's term against the labels' when both are used: (1-A)·labels + "
                        "A·teacher (default 0.9 for kd, 0.5 for multilabel)")
    g.add_argument("--labels", choices=_LABELS, help="what to learn from: teacher (distillation only), gt (the "
                   "data's labels only) or both (default when the data's labels are over the teacher's classes)")
    g.add_argument("--val-data", metavar="PATH", help="held-out images (default: the sources' val/test split, "
                   "else a seeded tenth of the images)")
    g.add_argument("--normalize", action="store_true", default=None,
                   help="embedding: L2-normalize both embeddings before the squared distance")
    g.add_argument("--no-teacher-cache", dest="teacher_cache", action="store_false", default=None,
                   help="run the teacher every step on the student's augmented batch instead of once per image "
                        "(slower; the cache is used by default)")
    add_model_options(p, with_classes=False, alpha_alias=False)
    add_training_options(p, recipe_default="distill (AdamW, cosine)")


def cmd_distill(args: argparse.Namespace) -> int:
    """Distill a teacher into a MobileNet student: --loss kd (logits), embedding (the paper's mobile
    FaceNet: squared L2 to the teacher's embedding, a learned projection when the sizes differ) or
    multilabel (the paper's face attributes: BCE to a detector's per-image class scores and/or the
    labels). Any images will do (no labels needed). The teacher sees each image once, unaugmented, in
    its own resolution and preprocessing; its outputs are cached on the device and in
    RUN_DIR/teacher_outputs.pt, so an epoch costs what a plain training epoch costs. metrics.jsonl
    rows carry epoch, train_loss, images_per_second and val_cosine (embedding), val_agreement and
    val_top1 (kd) or val_map (multilabel). Exit status as for train."""
    if args.loss is None:
        args.loss = "kd"
    args.task = args.loss
    config = config_from_train_args(args)
    if config.teacher is None and not config.resume:
        error("give the teacher (--teacher FILE: a classifier, an embedding extractor or a detector)")
        return 2
    if isinstance(config.data, list) and len(config.data) == 1:
        config = dataclasses.replace(config, data=config.data[0])
    summary, status = run_training(config, args.json)
    if status is not None:
        return status
    if not args.json:
        key = {"kd": "val_agreement", "embedding": "val_cosine", "multilabel": "val_map"}[args.loss]
        extra = f"  val top-1 {summary['val_top1']:.2f}%" if summary.get("val_top1") is not None else ""
        print(f"{key} {summary[key]:.4f} (best {summary['best_' + key]:.4f} at epoch {summary['best_epoch']}){extra}  "
              f"{summary['mult_adds'] / 1e6:.1f} M Mult-Adds  {summary['params'] / 1e6:.2f} M params  "
              f"{summary['wall_seconds']:.0f} s  -> {summary['run_dir']}")
    return 0
