"""``mobilenets train`` and ``mobilenets experiment``: the command-line face of
:mod:`mobilenets.train` (the trainer and the paper's experiments).

:func:`register` adds both subcommands to the ``mobilenets`` parser. Every option
defaults to ``None`` ("not given"), so ``train --out RUN_DIR --resume`` can continue a run
with the options stored in its checkpoint, any option given again overriding them.

Exit status: 0 when training finished; 2 for bad options or data (one line on stderr);
1 when the loss diverged (the last good checkpoint is kept); 128 + signal number
(143 for SIGTERM, 130 for SIGINT) when a signal stopped the run after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from .._utils import check_writable
from ..config import MobileNetConfig
from ..models import get_config
from ..tasks import DETECTION_ARCHS, DISTILL_LOSSES, TASKS
from ..train import (
    AMP_MODES,
    DISTILL_TABLES,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    TrainingDiverged,
    run_distill_experiment,
    run_experiment,
    train,
)
from .base import PROG, add_command, add_model_options, count_type, error, float_type

__all__ = ["add_training_options", "cmd_experiment", "cmd_train", "config_from_train_args", "register",
           "run_training"]


def _add_run_options(p: argparse.ArgumentParser, *, recipe_default: str) -> None:
    """Options shared by ``train`` and ``experiment``."""
    p.add_argument("--recipe", choices=tuple(RECIPES), help="paper: RMSprop as in the paper (TF-slim's settings); "
                   "cifar: fast 32x32 recipe (SGD + one-cycle); imagenet: modern (SGD cosine, label smoothing, "
                   "EMA); detection: ssd_tf (TF OD API ssd_mobilenet_v1_coco: RMSprop 0.004 at batch 24, x0.95 "
                   f"every epoch), ssd_cosine (SGD cosine, torchvision's SSDLite reference). Default: {recipe_default}")
    p.add_argument("--epochs", type=count_type(1, "--epochs"), metavar="E", help="default: the recipe's")
    p.add_argument("--batch-size", type=count_type(1, "--batch-size"), metavar="B",
                   help="GLOBAL batch, split over all processes (default: the recipe's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: the recipe's on cuda, off on cpu)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--workers", type=count_type(0, "--workers"), metavar="N",
                   help="DataLoader workers per process for image folders (small images need none)")
    p.add_argument("--threads", type=count_type(1, "--threads"), metavar="N",
                   help="CPU threads for PyTorch (default: its own choice; 1 is best on a busy shared machine)")
    p.add_argument("--seed", type=count_type(0, "--seed"), metavar="S", help="default 0")
    p.add_argument("--subset", type=count_type(1, "--subset"), metavar="N",
                   help="train on a fixed, seeded, class-balanced subset of N images")
    p.add_argument("--val-subset", type=count_type(1, "--val-subset"), metavar="N",
                   help="evaluate on a fixed, seeded, class-balanced subset of N images")
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")


def register(sub: Any) -> None:
    """Add ``train`` and ``experiment`` to the ``mobilenets`` subparsers."""
    _add_train_parser(sub)
    _add_experiment_parser(sub)


def _add_train_parser(sub: Any) -> None:
    p = add_command(sub, "train", cmd_train, "train a MobileNet on an image folder or CIFAR-10 archive")
    p.add_argument("--data", metavar="PATH", help="ImageFolder tree or .tar.gz/.zip of one (not needed with --resume); "
                   "with --task detection a COCO (annotations/instances_*.json) or YOLO (images/, labels/) folder "
                   "or archive")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")

    g = p.add_argument_group("task")
    g.add_argument("--task", choices=tuple(t for t in TASKS if t not in DISTILL_LOSSES), help="classification (default) or detection")
    g.add_argument("--arch", choices=DETECTION_ARCHS, help="with --task detection: ssd (default), ssdlite "
                   "(3x3 depthwise predictors) or faster_rcnn; --init may give Google's TFLite SSD or one of our "
                   "detectors to fine-tune, or a classifier file whose body to use")
    g.add_argument("--freeze-backbone", action="store_true", default=None,
                   help="with --task detection: freeze the MobileNet body and cache its feature maps on the device "
                        "(no augmentation); only the extra layers and predictors train (practical on a CPU)")
    add_model_options(p, with_classes=False)
    # Training's ρ default is the data's, not 224 (a 32-px CIFAR image trains at 32 px).
    next(a for a in p._actions if a.dest == "resolution").help = (
        "input resolution ρ in pixels (≥ 32; cost ~R²); default: the images' own size for small images "
        "(up to 64 px; 32 for CIFAR-10), else 224. Under 64 px the small-input stem is used (see --cifar-stem), "
        "also when fine-tuning an --init file made at another size")
    p.add_argument("--num-classes", type=count_type(1, "--num-classes"), metavar="K",
                   help="classifier outputs (default: the number of class folders)")
    add_training_options(p, recipe_default="cifar for images up to 64 px, imagenet otherwise")


def add_training_options(p: argparse.ArgumentParser, *, recipe_default: str) -> None:
    """How to train (recipe, optimization, small inputs and fine-tuning, speed, run): the options
    ``train`` and ``distill`` share."""
    _add_run_options(p, recipe_default=recipe_default)
    g = p.add_argument_group("optimization (default: the recipe's)")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="rmsprop (the paper, TF-slim's settings), sgd (Nesterov momentum) or adamw")
    g.add_argument("--lr", type=float_type("--lr"), metavar="LR",
                   help="learning rate for the global batch, used as is (the recipe's is scaled to the batch)")
    g.add_argument("--schedule", choices=SCHEDULES, help="exp: x0.94 every 2.5 epochs (TF-slim); cosine; "
                   "onecycle; constant")
    g.add_argument("--warmup-epochs", type=float_type("--warmup-epochs", inclusive=True), metavar="E",
                   help="ramp the learning rate up linearly over the first E epochs (0 = none)")
    g.add_argument("--momentum", type=float_type("--momentum", inclusive=True, below=1.0), metavar="M",
                   help="momentum of rmsprop and sgd (Nesterov when > 0), 0 ≤ M < 1; adamw ignores it")
    g.add_argument("--weight-decay", type=float_type("--weight-decay", inclusive=True), metavar="WD",
                   help="weight decay (0 = off; see --wd-all for which parameters)")
    g.add_argument("--wd-all", action="store_true", default=None,
                   help="weight decay on every parameter (default: not on depthwise filters, BatchNorm, biases)")
    g.add_argument("--label-smoothing", type=float_type("--label-smoothing", inclusive=True, below=1.0), metavar="S",
                   help="spread S of the target probability over all classes, 0 ≤ S < 1 (0 = off)")
    g.add_argument("--ema", type=float_type("--ema", inclusive=True, below=1.0), nargs="?", const=0.9998, metavar="DECAY",
                   help="average the weights (decay 0.9998 if no value; 0 = off); evaluation and saved weights "
                        "use the average")
    g.add_argument("--cutout", type=count_type(0, "--cutout"), metavar="PX",
                   help="cutout square size for small images (0 = off)")
    g.add_argument("--grad-clip", type=float_type("--grad-clip", inclusive=True), metavar="NORM", help="0 = off")
    g.add_argument("--accum-steps", type=count_type(1, "--accum-steps"), metavar="K",
                   help="split each process's share of the batch into K micro-batches (same gradients, less memory)")
    g = p.add_argument_group("small inputs and fine-tuning")
    g.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None,
                   help="stride 1 in the stem and in Conv2d_2 (total stride 8: a 32-px image ends in 4x4); "
                        "default: on for inputs under 64 px")
    g.add_argument("--input-size", type=count_type(8, "--input-size"), metavar="PX",
                   help="train and evaluate at this size (may be under 32; default: --resolution, or the image size)")
    g.add_argument("--init", metavar="WEIGHTS", help="start from these weights (our checkpoint, TFLite, Keras, timm, "
                   "...): the architecture comes from the file, the classifier is new for --num-classes")
    g.add_argument("--freeze-epochs", type=count_type(0, "--freeze-epochs"), metavar="N",
                   help="with --init: train only the classifier for the first N epochs")
    g.add_argument("--qat", action="store_true", default=None,
                   help="quantization-aware training: round weights (per-channel int8) and activations (8 bit) "
                        "as `mobilenets export --int8` will, so the int8 model keeps the accuracy; best with --init")
    g = p.add_argument_group("speed and scale-out")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default on: faster on GPUs and CPUs alike)")
    g.add_argument("--loader", choices=("auto", "tensor", "folder"),
                   help="tensor: decode once, keep uint8 on the device, augment there; folder: DataLoader "
                        "workers (default auto: tensor for images up to 64 px)")
    g.add_argument("--sync-bn", action="store_true", default=None, help="synchronize BatchNorm across GPUs (DDP)")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic GPU kernels (slower); CPU runs are deterministic anyway")
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in RUN_DIR from checkpoint.pt with its stored options (start a new "
                        "one if there is none)")
    g.add_argument("--no-tensorboard", action="store_true", default=None, help="no TensorBoard events")
    g.add_argument("--quiet", action="store_true", default=None, help="no per-epoch lines")
    g.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _add_experiment_parser(sub: Any) -> None:
    p = add_command(sub, "experiment", cmd_experiment, "retrain the models of the paper's Tables 4-7 on CIFAR-10, "
                    "or run Table 13 (detection) and the distillation tables 12, 14 and kd")
    p.add_argument("table", choices=("table4", "table5", "table6", "table7", "all", *DISTILL_TABLES, "table13"),
                   help="which of the paper's tables to retrain (all: the four in turn)")
    p.add_argument("--data", required=True, metavar="PATH", help="e.g. ../shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="experiment directory: one run per model in DIR/<name>/, the tables in DIR/<table>.md/.csv/.png")
    _add_run_options(p, recipe_default="cifar")
    g = p.add_argument_group("distillation tables (table12, table14, kd; --subset / --val-subset: training / test "
                             "images)")
    g.add_argument("--teacher", metavar="FILE", help="table14: the 1.0-224 embedding extractor; table12: Google's SSD "
                   "detector (kd trains its own α=1.0 teacher)")
    g.add_argument("--extra-data", nargs="+", metavar="PATH", help="more unlabeled images to distill on (e.g. "
                   "coco128.tar.gz imagenet-sample); table12: an extra 'unlabeled' row per student, distilled on "
                   "COCO128 train plus these")
    g.add_argument("--widths", nargs="+", type=float_type("--widths"), metavar="A",
                   help="the students' α (default: the paper's)")
    g.add_argument("--resolutions", nargs="+", type=count_type(32, "--resolutions"), metavar="R",
                   help="the students' ρ in px (default: the paper's)")
    g.add_argument("--lr", type=float_type("--lr"), metavar="LR", help="every student's learning rate, as is "
                   "(default: table14 AdamW at 1e-4 x the batch; the recipe's for table12 and kd)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


# ----------------------------------------------------------------------------- building the config

_MODEL_FIELDS = (("activation", "activation"), ("tf_padding", "tf_padding"), ("output_stride", "output_stride"))
# TrainConfig fields the command line does not copy by name: ``model`` is built from --model and
# the model options, the run flags come from --resume / --no-progress / --no-tensorboard / --quiet.
_NOT_DIRECT = frozenset({"model", "resume", "progress", "tensorboard", "verbose"})


def _direct_fields() -> tuple[str, ...]:
    """The TrainConfig fields that an option of the same name sets."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_DIRECT)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the command line set explicitly."""
    out: dict[str, Any] = {k: getattr(args, k) for k in _direct_fields() if getattr(args, k, None) is not None}
    model = get_config(args.model) if getattr(args, "model", None) else None
    if model is not None and "resolution" not in out:
        out["resolution"] = model.resolution
    changes = {f: getattr(args, a) for a, f in _MODEL_FIELDS if getattr(args, a, None) is not None}
    if changes:
        model = (model or MobileNetConfig()).replace(**changes)
    if model is not None:
        out["model"] = model
    if getattr(args, "no_progress", None):
        out["progress"] = False
    if getattr(args, "no_tensorboard", None):
        out["tensorboard"] = False
    if getattr(args, "quiet", None):
        out["verbose"] = False
    return out


def config_from_train_args(args: argparse.Namespace) -> Any:
    """A :class:`TrainConfig` from ``train``'s options; with ``--resume`` and a checkpoint in
    ``--out``, the stored options with the given ones on top."""
    from pathlib import Path

    import torch


    given = _given(args)
    ckpt = Path(args.out) / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        try:
            stored = torch.load(ckpt, map_location="cpu", weights_only=True).get("train_config")
        except Exception:  # noqa: BLE001 (any unreadable checkpoint: the trainer reports it)
            stored = None  # the trainer reports an unreadable checkpoint
        if stored:  # the trainer checks that nothing that defines the run has changed
            return dataclasses.replace(TrainConfig.from_dict(stored), **given, resume=True)
    return TrainConfig(**given, resume=bool(args.resume))


def run_training(config: Any, as_json: bool) -> tuple[dict[str, Any], int | None]:
    """Train ``config`` (``train`` and ``distill``): the summary (printed as JSON with ``as_json``), and
    the exit status when the command ends here (1: diverged; 128 + N: stopped by signal N), else None.
    Under torchrun only rank 0 prints: the other ranks end here with their status, silently."""
    try:
        summary = train(config)
    except TrainingDiverged as e:
        error(e)
        return {}, 1
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun's rank: one final line per run, not per process
        return summary, 0 if summary.get("status") == "finished" else _signal_status(summary)
    if as_json:
        print(json.dumps({k: v for k, v in summary.items() if k != "settings"}))
    if summary.get("status") != "finished":
        return summary, _signal_status(summary)
    return summary, None


def _signal_status(summary: dict[str, Any]) -> int:
    import signal

    return 128 + int(getattr(signal, summary.get("signal") or "SIGTERM"))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a MobileNet V1 on an ImageFolder tree (PATH/train/<class>/, PATH/val/ or PATH/test/) or
    an archive of one (e.g. cifar10-jpeg.tar.gz: small images are read in place, others extracted
    once into a cache). Small images are decoded once, kept on the device and augmented there. The
    input resolution defaults to the image size for small images, 224 otherwise. Writes
    RUN_DIR/checkpoint.pt (every epoch, and on SIGTERM/SIGINT), best.pt, metrics.jsonl, summary.json
    and TensorBoard events in RUN_DIR/tb. Under torchrun it trains with DDP. Exit status 0:
    finished; 2: bad input; 1: the loss diverged; 128+N: stopped by signal N after saving."""
    check_writable(args.out, folder=True)  # before the data is read and the run built, not after
    config = config_from_train_args(args)
    summary, status = run_training(config, args.json)
    if status is not None:
        return status
    if not args.json and summary.get("val_map") is not None:
        print(f"val mAP@[.5:.95] {summary['val_map']:.3f}  mAP@.5 {summary['val_map50']:.3f}  (best "
              f"{summary['best_val_map']:.3f} at epoch {summary['best_epoch']})  {summary['mult_adds'] / 1e6:.1f} M "
              f"Mult-Adds  {summary['wall_seconds']:.0f} s  -> {summary['run_dir']}")
    if not args.json and summary.get("val_top1") is not None:
        print(f"val top-1 {summary['val_top1']:.2f}%  top-5 {summary['val_top5']:.2f}%  (best "
              f"{summary['best_val_top1']:.2f}% at epoch {summary['best_epoch']})  {summary['mult_adds'] / 1e6:.1f} M "
              f"Mult-Adds  {summary['params'] / 1e6:.2f} M params  {summary['wall_seconds']:.0f} s  -> "
              f"{summary['run_dir']}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Train the models one of the paper's Tables 4-7 compares (table4: separable vs full conv;
    table5: 0.75 narrow vs shallow; table6: α 1.0/0.75/0.5/0.25; table7: inputs 32/27/23/18 px, the
    paper's ρ applied to 32 px), each as a resumable run in DIR/<name>/, and write DIR/<table>.md,
    .csv and .png (accuracy vs Mult-Adds) beside the paper's ImageNet numbers."""
    check_writable(args.out, folder=True)
    if args.table in DISTILL_TABLES:
        return _distill_experiment(args)
    if args.lr is not None:
        error(f"--lr is for the distillation tables ({', '.join(DISTILL_TABLES)}); {args.table} trains with its "
              "recipe's (--recipe)")
        return 2
    given = [flag for flag, dest in (("--teacher", "teacher"), ("--extra-data", "extra_data"),
                                     ("--widths", "widths"), ("--resolutions", "resolutions"))
             if getattr(args, dest, None) is not None]
    if given:  # rather than ignored: this table's models are the paper's, fixed
        error(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the distillation tables "
              f"({', '.join(DISTILL_TABLES)}); {args.table} trains the paper's models of that table")
        return 2
    options: dict[str, Any] = {}
    for k in ("amp", "workers", "compile", "threads"):
        if getattr(args, k, None) is not None:
            options[k] = getattr(args, k)
    try:
        result = run_experiment(args.table, args.data, args.out, epochs=args.epochs, subset=args.subset,
                                val_subset=args.val_subset, device=args.device, batch_size=args.batch_size,
                                seed=args.seed or 0, recipe=args.recipe or "cifar", progress=not args.no_progress,
                                **options)
    except TrainingDiverged as e:
        error(e)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["rows"]:
            if r["table"] == "table13":  # detection (train.table13): COCO128 mAP, Mult-Adds in billions
                print(f"table13  {r['model']:<52} mAP {r['val_map']:6.2f}  {r['mult_adds'] / 1e9:6.2f} B Mult-Adds  "
                      f"{r['params'] / 1e6:5.2f} M params   (paper: {r['paper_map'] or '-'})")
                continue
            print(f"{r['table']}  {r['model']:<34} top-1 {r['val_top1']:6.2f}%  {r['mult_adds'] / 1e6:8.1f} M Mult-Adds"
                  f"  {r['params'] / 1e6:5.2f} M params   (paper: {r['paper_model']}, {r['paper_top1']:.1f}%)")
        for f in result["files"]:
            print(f"wrote {f}")
    return _experiment_status(result)


def _distill_experiment(args: argparse.Namespace) -> int:
    """``experiment table12|table14|kd`` (:func:`mobilenets.train.run_distill_experiment`)."""
    scale = {"train_images": args.subset, "test_images": args.val_subset, "epochs": args.epochs,
             "batch_size": args.batch_size, "threads": args.threads, "progress": not args.no_progress,
             "seed": args.seed, "lr": args.lr}
    try:
        result = run_distill_experiment(args.table, args.data, args.out, teacher=args.teacher,
                                        extra_data=args.extra_data, widths=tuple(args.widths) if args.widths else None,
                                        resolutions=tuple(args.resolutions) if args.resolutions else None, **scale)
    except TrainingDiverged as e:
        error(e)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        key = {"table14": "knn_top1", "table12": "val_map", "kd": "val_top1"}[args.table]
        for r in result["rows"]:
            print(f"{r['table']}  {r['name']:<20} {r['model']:<22} {key} {r[key]:6.2f}  "
                  f"{r['mult_adds'] / 1e6:8.1f} M Mult-Adds  {r['params'] / 1e6:5.2f} M params")
        for f in result["files"]:
            print(f"wrote {f}")
    return _experiment_status(result)


def _experiment_status(result: dict[str, Any]) -> int:
    """0 when every run of the experiment finished; 128 + SIGTERM when one was stopped (rerun to continue)."""
    if result["status"] != "finished":
        print(f"{PROG}: stopped in {result['stopped_at']}; run the same command again to continue", file=sys.stderr)
        return 128 + 15
    return 0
