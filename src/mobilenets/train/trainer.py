"""Train a MobileNet V1: named recipes, fast input paths, DDP, and exact resumption.

From Python::

    from mobilenets.train import TrainConfig, train
    summary = train(TrainConfig(data="../shared/data/cifar10-jpeg.tar.gz", out="runs/c10",
                                width=0.5, epochs=30))
    summary["val_top1"], summary["mult_adds"]

From the shell: ``mobilenets train --data PATH --out RUN_DIR [options]``, and on N GPUs
``torchrun --nproc-per-node N -m mobilenets train ...``.

The pieces: the options and their resolution into :class:`RunSettings` in
:mod:`~mobilenets.train.settings`; the recipes and the optimization pieces they name in
:mod:`~mobilenets.train.recipes`; batches on the device in :mod:`~mobilenets.train.batches`; the
model and optimizer in :mod:`~mobilenets.train.build`; the run directory (checkpoints, metrics,
summary) in :mod:`~mobilenets.train.checkpoint`; console and TensorBoard in
:mod:`~mobilenets.train.logger`; process groups, RNG state and signals in
:mod:`~mobilenets.train.distributed`; the loop in :mod:`~mobilenets.train.engine`. What a batch
means (loss, metrics, which metric picks ``best.pt``) is a :class:`mobilenets.tasks.Task`:
``train(config, task=...)``, by default :class:`mobilenets.tasks.ClassificationTask`.

Design choices worth knowing:

* ``batch_size`` is the **global** batch (all processes together), so a recipe means the
  same thing on 1 GPU or 8; each process gets ``batch_size / world_size``. With
  ``accum_steps`` K each process runs K micro-batches per step; 1 process with K = N and N
  processes with K = 1 compute the same gradients (up to BatchNorm statistics, which are
  per micro-batch / per process unless ``--sync-bn``).
* The learning rate of a recipe is given for a reference batch and scaled linearly to
  yours; an explicit ``lr`` is used as is.
* Every epoch's data order, augmentation and dropout masks are pure functions of
  ``(seed, epoch, step)``, whatever the number of processes, and a checkpoint
  (``checkpoint.pt``, written atomically at every epoch end and on SIGTERM/SIGINT after the
  current step) holds everything else: model, optimizer, scaler, EMA, RNG states, the
  position in the epoch, the metrics so far. A resumed run continues exactly where it
  stopped; on a CPU with a fixed seed (and thread count) the final metrics are bit-for-bit
  those of an uninterrupted run.
* Fine-tuning (``init``) first re-expresses every BatchNorm in the new data's statistics
  (:func:`recalibrate_batchnorm`), so weights with folded BatchNorm (TFLite) fine-tune too.
* A non-finite loss stops the run with a message; the last good checkpoint is kept.
* Weight decay applies to full convolution and FC weights only: not to depthwise filters
  (the paper: "very little or no weight decay on the depthwise filters since there are so
  few parameters in them"), BatchNorm or biases, unless ``wd_all``.

**Small inputs** (CIFAR's 32×32): MobileNet V1 strides 32×, so a 32-px image would end as a
1×1 map after the fifth stride-2 layer. With ``cifar_stem`` (default for inputs under 64 px)
the stem conv (Table 1 row 0) and the depthwise conv of Conv2d_2 (row 2) use stride 1:
total stride 8. A 32-px image stays 32×32 through Conv2d_3, is 16×16 in Conv2d_4–5, 8×8 in
the five 512-channel blocks and 4×4 in Conv2d_12–13 (ImageNet's 224 px gives 112, 56, 28, 14,
7: the two highest-resolution stages merge, the rest keep their shape). No weight changes
shape, so any MobileNet V1 weights load. It is ``MobileNetConfig.cifar_stem``, so the
checkpoint's config rebuilds it and :func:`mobilenets.load_pretrained` returns the trained network.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..config import MobileNetConfig
from ..models import MobileNetV1
from ..tasks import Task
from ..weights import load_pretrained
from .engine import Engine
from .settings import TrainConfig

__all__ = ["build_model", "fit", "load_trained", "train"]


def build_model(config: MobileNetConfig, *, cifar_stem: bool = False) -> MobileNetV1:
    """A MobileNet from its config, with the small-input stem (``MobileNetConfig.cifar_stem``) if asked."""
    return MobileNetV1(config.replace(cifar_stem=True) if cifar_stem else config)


def load_trained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> MobileNetV1:
    """:func:`mobilenets.load_pretrained` of a run's checkpoint: its config carries the small-input
    stem and ``pretrained_cfg`` the input size it was trained at. Kept as the trainer's name for it."""
    return load_pretrained(path, device=device)


def train(config: TrainConfig | None = None, *, task: Task | None = None, **options: Any) -> dict[str, Any]:
    """Train (or resume) one run; returns the summary dict (also written to ``summary.json``).

    ``task``: what to train (:class:`mobilenets.tasks.Task`); default
    :class:`~mobilenets.tasks.ClassificationTask`. ``summary["status"]`` is ``"finished"``, or
    ``"interrupted"`` after SIGTERM/SIGINT (the checkpoint then holds the exact position;
    ``resume=True`` continues). Raises ``ValueError`` for bad options or data (one line saying
    what to do) and :class:`TrainingDiverged` when the loss stops being finite.
    """
    if config is None:
        config = TrainConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    return Engine(config, task).run()


fit = train
