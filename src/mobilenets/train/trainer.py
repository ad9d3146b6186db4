"""Train a MobileNet V1: named recipes, fast input paths, DDP, and exact resumption.

From Python::

    from mobilenets.train import TrainConfig, train
    summary = train(TrainConfig(data="../shared/data/cifar10-jpeg.tar.gz", out="runs/c10",
                                width=0.5, epochs=30))
    summary["val_top1"], summary["mult_adds"]

From the shell: ``mobilenets train --data PATH --out RUN_DIR [options]``, and on N GPUs
``torchrun --nproc-per-node N -m mobilenets train ...``.

The recipes and the optimization pieces they name live in :mod:`mobilenets.train.recipes`; process
groups, RNG state and signal handling in :mod:`mobilenets.train.distributed`; data in
:mod:`mobilenets.data`. This module resolves a run's settings and runs the loop.

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

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import atomic_write, mix_seed
from ..config import MobileNetConfig
from ..data import (
    IMAGENET_PREPROCESS,
    EpochSampler,
    FolderDataset,
    FolderIndex,
    ShardSampler,
    TensorSplit,
    augment_params,
    balanced_subset,
    choose_loader,
    collate_masked,
    crop_flip,
    cutout_,
    epoch_permutation,
    load_tensor_splits,
    open_data,
    skipped_message,
    to_input,
)
from ..models import MobileNetV1
from ..quant import (
    enable_fake_quant,
    fake_quant_ranges,
    load_fake_quant_ranges,
    recalibrate_batchnorm,
)
from ..weights import read_weights, save_checkpoint
from .distributed import (
    Dist,
    StopFlag,
    all_reduce,
    barrier,
    init_distributed,
    rng_state,
    set_rng_state,
)
from .recipes import (
    AMP_MODES,
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    RECIPES,
    SCHEDULES,
    ModelEma,
    Recipe,
    lr_factor,
    make_optimizer,
    param_groups,
)

__all__ = [
    "Recipe", "RECIPES", "TrainConfig", "train", "fit", "TrainingDiverged",
    "build_model", "load_trained", "TIME_KEYS",
]

TIME_KEYS = ("images_per_second", "epoch_time", "train_time", "val_time")  # differ between identical runs


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


# ----------------------------------------------------------------------------- the config

@dataclass
class TrainConfig:
    """What to train and how. ``None`` means "the recipe's / the data's choice".

    Model: ``model`` gives any :class:`MobileNetConfig` field (activation, tf_padding, ...);
    ``width``, ``variant`` override it; ``resolution`` is the model's nominal input size
    (default: the image size for small images, 224 otherwise; ``model.resolution`` is not
    used), ``input_size`` the size actually trained and evaluated at (default ``resolution``;
    may be below 32). ``num_classes`` defaults to the number of class folders.
    ``init``: weights to start from (any file :func:`mobilenets.load_pretrained` reads); the
    architecture then comes from the file and the classifier is new unless it already fits.
    ``batch_size`` is global (all processes). ``ema`` is the decay of an exponential moving
    average of the weights (0 = off); evaluation and saved weights use the average.
    ``qat``: quantization-aware training (:func:`mobilenets.quant.enable_fake_quant`): weights
    and activations are rounded as the int8 export rounds them, so the network learns to live
    with it; best started from trained weights (``init``). Validation accuracy is then the
    int8-simulated accuracy.
    """

    data: str | os.PathLike | None = None
    out: str | os.PathLike | None = None
    # model
    model: MobileNetConfig | None = None
    width: float | None = None
    resolution: int | None = None
    variant: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    cifar_stem: bool | None = None
    init: str | os.PathLike | None = None
    freeze_epochs: int = 0
    # recipe
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    accum_steps: int = 1
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    wd_all: bool = False
    label_smoothing: float | None = None
    ema: float | None = None
    cutout: int | None = None
    grad_clip: float = 0.0
    qat: bool = False
    # speed
    device: str | None = None
    amp: str | None = None
    channels_last: bool | None = None
    compile: bool = False
    workers: int | None = None
    threads: int | None = None
    loader: str = "auto"
    sync_bn: bool = False
    deterministic: bool = False
    # data and run
    seed: int = 0
    subset: int | None = None
    val_subset: int | None = None
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    verbose: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict() if self.model is not None else None
        for k in ("data", "out", "init"):
            if d[k] is not None:
                d[k] = str(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        if d.get("model") is not None:
            d["model"] = MobileNetConfig.from_dict(d["model"])
        return cls(**d)


# ----------------------------------------------------------------------------- model helpers

def build_model(config: MobileNetConfig, *, cifar_stem: bool = False) -> MobileNetV1:
    """A MobileNet from its config, with the small-input stem (``MobileNetConfig.cifar_stem``) if asked."""
    return MobileNetV1(config.replace(cifar_stem=True) if cifar_stem else config)


def load_trained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> MobileNetV1:
    """:func:`mobilenets.load_pretrained` of a run's checkpoint: its config carries the small-input
    stem and ``pretrained_info`` the input size it was trained at. Kept as the trainer's name for it."""
    from ..weights import load_pretrained

    return load_pretrained(path, device=device)




def _make_criterion(label_smoothing: float) -> nn.Module:
    """Per-sample cross entropy (reduced by the caller, which masks unreadable images)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="none")


# ----------------------------------------------------------------------------- the trainer

_Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # input, target, valid mask (None: all)


@dataclass
class _Data:
    root: Path
    class_names: list[str]
    mode: str  # "tensor" or "folder"
    train: TensorSplit | FolderIndex
    val: TensorSplit | FolderIndex
    native_size: int | None
    skipped: list[str] = field(default_factory=list)


def _check_choice(value: Any, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


# Resolved settings that must not change when a run is resumed. The number of processes and
# accumulation steps may: data order, augmentation and the global batch do not depend on them
# (only BatchNorm's per-process statistics do).
_IDENTITY = ("recipe", "model", "cifar_stem", "input_size", "epochs", "batch_size", "optimizer", "lr", "schedule",
             "warmup_epochs", "momentum", "weight_decay", "wd_all", "label_smoothing", "ema", "cutout", "pad",
             "crop_scale", "eval_crop", "grad_clip", "seed", "subset", "val_subset", "freeze_epochs", "init", "mode",
             "qat")


class _Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.data is None and not cfg.resume:
            raise ValueError("give the training data (--data PATH: an ImageFolder tree or a .tar.gz of one)")
        if cfg.out is None:
            raise ValueError("give the run directory (--out RUN_DIR) for checkpoints and metrics")
        for value, allowed, what in ((cfg.recipe, tuple(RECIPES), "recipe"), (cfg.optimizer, OPTIMIZERS, "optimizer"),
                                     (cfg.schedule, SCHEDULES, "schedule"), (cfg.amp, AMP_MODES, "amp mode"),
                                     (cfg.device, ("cpu", "cuda"), "device"),
                                     (cfg.loader, ("auto", "tensor", "folder"), "loader")):
            _check_choice(value, allowed, what)
        for name in ("epochs", "batch_size", "accum_steps", "subset", "val_subset", "threads"):
            v = getattr(cfg, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
        if isinstance(cfg.freeze_epochs, bool) or not isinstance(cfg.freeze_epochs, int) or cfg.freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be an integer ≥ 0, got {cfg.freeze_epochs!r}")
        if cfg.ema is not None and not 0.0 <= cfg.ema < 1.0:
            raise ValueError(f"ema decay must be in [0, 1) (e.g. 0.9998; 0 = off), got {cfg.ema}")
        self.cfg = cfg
        self.run_dir = Path(cfg.out)
        self.device_type = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device_type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu")
        self.dist = Dist()
        self.stop = StopFlag()

    # ------------------------------------------------------------------ small utilities

    def log(self, message: str) -> None:
        if self.dist.main and self.cfg.verbose:
            print(message, flush=True)

    def note(self, message: str) -> None:
        if self.dist.main:
            print(f"mobilenets train: {message}", file=sys.stderr, flush=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ entry

    def run(self) -> dict[str, Any]:
        wall_start = time.perf_counter()
        threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.dist = init_distributed(self.device_type)
        try:
            self.device = torch.device(f"cuda:{self.dist.local_rank}" if self.device_type == "cuda" else "cpu")
            with self.stop:
                return self._run(wall_start)
        finally:
            torch.set_num_threads(threads)
            if self.dist.owned:
                import torch.distributed as dist

                dist.destroy_process_group()

    def _run(self, wall_start: float) -> dict[str, Any]:
        prev = self._previous_run()
        if prev is not None and prev.get("status") == "finished" and (self.run_dir / "summary.json").is_file():
            done = prev["settings"]["epochs"]
            if self.cfg.epochs is not None and self.cfg.epochs != done:
                raise ValueError(f"{self.run_dir} finished its {done} epochs; a finished run is not extended (its "
                                 f"schedule depends on the total): start a new run with --init "
                                 f"{self.run_dir / 'checkpoint.pt'}")
            summary = json.loads((self.run_dir / "summary.json").read_text())
            self.log(f"{self.run_dir}: already finished ({summary.get('epochs')} epochs, val top-1 "
                     f"{summary.get('val_top1', float('nan')):.2f}%); nothing to do")
            return summary
        if self.cfg.data is None:
            if prev is None:
                raise ValueError("give the training data (--data PATH)")
            self.cfg = dataclasses.replace(self.cfg, data=prev["settings"]["data"])
        self.data = self._load_data()
        self.resuming = prev is not None
        self._resolve(prev)
        self._build()
        self.wall_before = 0.0
        if prev is not None:
            self._restore(prev)
        else:
            self.start_epoch, self.start_step, self.history, self.best = 0, 0, [], {"val_top1": -1.0, "epoch": 0}
            self.partial: dict[str, float] = {}
        self.wall_start = wall_start
        return self._loop()

    # ------------------------------------------------------------------ run directory

    def _previous_run(self) -> dict[str, Any] | None:
        ckpt = self.run_dir / "checkpoint.pt"
        if not ckpt.is_file():
            if self.cfg.resume:
                self.log(f"no checkpoint in {self.run_dir}: starting a new run")
            return None
        if not self.cfg.resume:
            raise ValueError(f"{self.run_dir} already holds a run (checkpoint.pt); add --resume to continue it "
                             "or choose another --out")
        try:
            prev = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{ckpt}: unreadable checkpoint ({str(e).splitlines()[0][:100]}); "
                             "move it away to start over") from None
        if not isinstance(prev, dict) or prev.get("format") != "mobilenets" or "settings" not in prev:
            raise ValueError(f"{ckpt}: not a training checkpoint of mobilenets; choose another --out")
        return prev

    # ------------------------------------------------------------------ data

    def _load_data(self) -> _Data:
        # The first process of each node extracts archives and writes decode caches; the
        # others then find them there.
        first = self.dist.local_rank == 0
        if not first:
            barrier(self.dist)
        data = self._load_data_once()
        if first:
            barrier(self.dist)
        return data

    def _load_data_once(self) -> _Data:
        cfg = self.cfg
        source = open_data(cfg.data, cfg.loader)
        root = source.root
        train_index = source.index("train")
        names = train_index.class_names
        val_index = source.index("val", names)
        if cfg.subset:
            train_index = train_index.subset(balanced_subset(train_index.labels, cfg.subset, cfg.seed))
        if cfg.val_subset:
            val_index = val_index.subset(balanced_subset(val_index.labels, cfg.val_subset, cfg.seed))
        mode = choose_loader(train_index, cfg.loader)
        if mode == "folder":
            return _Data(root, names, mode, train_index, val_index, None)
        train, val = load_tensor_splits([train_index, val_index])
        if val.size != train.size:
            val = TensorSplit(F.interpolate(val.images.float(), size=(train.size, train.size), mode="bilinear",
                                            antialias=True).round().clamp(0, 255).to(torch.uint8),
                              val.labels, val.skipped)
        skipped = train.skipped + val.skipped
        if len(train) == 0:
            raise ValueError(f"{root}/train: no readable image")
        return _Data(root, names, mode, train, val, train.size, skipped)

    # ------------------------------------------------------------------ settings

    def _resolve(self, prev: dict[str, Any] | None) -> None:
        cfg, data = self.cfg, self.data
        small = data.mode == "tensor"
        recipe = RECIPES[cfg.recipe or ("cifar" if small else "imagenet")]
        # model config: from the --init file, or from the options
        self.init_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        if cfg.init is not None:
            init_config, sd, info = read_weights(cfg.init)
            if cfg.width is not None and abs(cfg.width - init_config.width_multiplier) > 1e-6:
                raise ValueError(f"{cfg.init}: holds α={init_config.width_multiplier:g} weights but --width "
                                 f"{cfg.width:g} was given; drop --width or pick the matching file")
            if cfg.variant is not None and cfg.variant != init_config.variant:
                raise ValueError(f"{cfg.init}: holds a {init_config.variant} MobileNet but --variant "
                                 f"{cfg.variant} was given")
            base = init_config
            self.init_state = (sd, info)
            preprocess = dict(info.get("preprocess") or IMAGENET_PREPROCESS)
        else:
            base = cfg.model or MobileNetConfig()
            changes = {k: v for k, v in (("width_multiplier", cfg.width), ("variant", cfg.variant)) if v is not None}
            base = base.replace(**changes) if changes else base
            preprocess = dict(IMAGENET_PREPROCESS)
        if cfg.input_size is not None and cfg.input_size < 8:
            raise ValueError(f"input_size must be at least 8 pixels, got {cfg.input_size}")
        if cfg.resolution is not None:
            resolution = cfg.resolution
            input_size = cfg.input_size or resolution
        elif small:
            input_size = cfg.input_size or int(data.native_size)
            resolution = max(32, input_size)
        else:
            resolution = 224 if cfg.input_size is None else max(32, cfg.input_size)
            input_size = cfg.input_size or resolution
        n_classes = len(data.class_names)
        num_classes = cfg.num_classes if cfg.num_classes is not None else n_classes
        if num_classes < n_classes:
            raise ValueError(f"--num-classes {num_classes} is fewer than the {n_classes} class folders of the data")
        cifar_stem = cfg.cifar_stem if cfg.cifar_stem is not None else input_size < 64
        if cifar_stem and base.output_stride != 32:
            raise ValueError("the small-input stem (--cifar-stem) cannot be combined with --output-stride 8/16")
        model_config = base.replace(resolution=resolution, num_classes=num_classes, cifar_stem=bool(cifar_stem))

        # optimization
        optimizer = cfg.optimizer or recipe.optimizer
        if optimizer == recipe.optimizer:
            base_lr, lr_batch, wd = recipe.lr, recipe.lr_batch, recipe.weight_decay
        else:
            base_lr, lr_batch, wd = OPTIMIZER_DEFAULTS[optimizer]
            if optimizer != "adamw" and recipe.optimizer != "adamw":
                wd = recipe.weight_decay  # coupled L2 either way: the recipe's value carries over
        epochs = cfg.epochs or recipe.epochs
        batch = cfg.batch_size or recipe.batch_size
        world, accum = self.dist.world, cfg.accum_steps
        if batch % (world * accum):
            raise ValueError(f"--batch-size {batch} (global) must be divisible by processes × accumulation steps "
                             f"({world} × {accum})")
        n_train = len(data.train)
        steps_per_epoch = n_train // batch
        if steps_per_epoch == 0:
            raise ValueError(f"--batch-size {batch} is larger than the training set ({n_train} images); "
                             "lower --batch-size or raise --subset")
        lr = cfg.lr if cfg.lr is not None else base_lr * batch / lr_batch
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"learning rate must be a number > 0, got {lr}")
        amp = cfg.amp or (recipe.amp if self.device_type == "cuda" else "off")
        if amp == "fp16" and self.device_type != "cuda":
            raise ValueError("--amp fp16 needs --device cuda; on a CPU use --amp bf16 or off")
        if amp == "bf16" and self.device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU has no bfloat16; use --amp fp16 or off")
        if cfg.sync_bn and self.device_type != "cuda":
            raise ValueError("--sync-bn needs --device cuda (PyTorch's SyncBatchNorm runs on GPUs only)")
        if cfg.freeze_epochs and cfg.init is None:
            raise ValueError("--freeze-epochs freezes pretrained layers; give the weights with --init")
        workers = cfg.workers
        if workers is None:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            workers = 0 if small else max(1, min(8, (os.cpu_count() or 2) // max(1, local) - 1))
        s: dict[str, Any] = {
            "recipe": recipe.name, "model": model_config.to_dict(), "cifar_stem": bool(cifar_stem),
            "input_size": int(input_size), "epochs": int(epochs), "batch_size": int(batch), "accum_steps": accum,
            "world_size": world, "world_batch": batch // world, "steps_per_epoch": steps_per_epoch,
            "optimizer": optimizer, "lr": float(lr),
            "schedule": cfg.schedule or recipe.schedule,
            "warmup_epochs": float(cfg.warmup_epochs if cfg.warmup_epochs is not None else recipe.warmup_epochs),
            "momentum": float(cfg.momentum if cfg.momentum is not None else recipe.momentum),
            "weight_decay": float(cfg.weight_decay if cfg.weight_decay is not None else wd),
            "wd_all": bool(cfg.wd_all),
            "label_smoothing": float(cfg.label_smoothing if cfg.label_smoothing is not None
                                     else recipe.label_smoothing),
            "ema": float(cfg.ema if cfg.ema is not None else recipe.ema),
            "cutout": int(cfg.cutout if cfg.cutout is not None else recipe.cutout),
            "pad": recipe.pad if small else 0, "crop_scale": list(recipe.crop_scale),
            "eval_crop": 1.0 if small else recipe.eval_crop, "decay_rate": recipe.decay_rate,
            "decay_epochs": recipe.decay_epochs, "grad_clip": float(cfg.grad_clip),
            "amp": amp, "channels_last": bool(cfg.channels_last if cfg.channels_last is not None else True),
            "compile": bool(cfg.compile), "device": self.device_type, "workers": int(workers), "mode": data.mode,
            "seed": int(cfg.seed), "subset": cfg.subset, "val_subset": cfg.val_subset,
            "freeze_epochs": int(cfg.freeze_epochs), "init": str(cfg.init) if cfg.init else None,
            "sync_bn": bool(cfg.sync_bn), "deterministic": bool(cfg.deterministic), "qat": bool(cfg.qat),
            "preprocess": {"mean": list(preprocess["mean"]), "std": list(preprocess["std"]),
                           "crop": 1.0 if small else recipe.eval_crop, "resize": "tf_legacy_bilinear"},
            "train_images": n_train, "val_images": len(data.val), "data": str(cfg.data),
        }
        if not 0 <= s["label_smoothing"] < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {s['label_smoothing']}")
        if s["weight_decay"] < 0:
            raise ValueError(f"weight decay must be ≥ 0, got {s['weight_decay']}")
        if prev is not None:
            old = prev["settings"]
            for key in _IDENTITY:
                if key not in old and not s.get(key):
                    continue  # a setting added since that run was made, at its off value
                if old.get(key) != s.get(key):
                    raise ValueError(f"--resume: {key} differs from the run in {self.run_dir} "
                                     f"({old.get(key)!r} there, {s.get(key)!r} now); resume with the same options")
            if prev.get("class_names") != data.class_names:
                raise ValueError(f"--resume: the data's classes differ from those of the run in {self.run_dir}")
        self.s = s
        self.recipe = recipe
        self.model_config = model_config

    # ------------------------------------------------------------------ model, optimizer

    def _build(self) -> None:
        s, cfg = self.s, self.cfg
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        pre = s["preprocess"]
        self.mean = torch.tensor(pre["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"], device=self.device).view(1, 3, 1, 1)
        torch.manual_seed(mix_seed(s["seed"], "init"))
        net = MobileNetV1(self.model_config)
        if self.init_state is not None and not self.resuming:
            self._load_init(net, *self.init_state)
        net.to(self.device)
        if s["channels_last"]:
            net.to(memory_format=torch.channels_last)
        if self.init_state is not None and not self.resuming:
            recalibrate_batchnorm(net, self._calibration_batches())
        from ..analysis import cost

        report = cost(net, s["input_size"])
        self.mult_adds, self.params = int(report.mult_adds), int(report.params)
        if s["qat"]:
            enable_fake_quant(net)
        if s["sync_bn"] and self.dist.world > 1:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net
        self.ddp = None
        step_model: nn.Module = net
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(net, device_ids=[self.dist.local_rank] if self.device_type == "cuda" else None)
            step_model = self.ddp
        self.step_model = torch.compile(step_model) if s["compile"] else step_model
        groups = param_groups(net, s["weight_decay"], wd_all=s["wd_all"], head=net.classifier)
        self.optimizer = make_optimizer(s["optimizer"], groups, lr=s["lr"], momentum=s["momentum"], device=self.device)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=s["amp"] == "fp16")
        self.ema = ModelEma(net, s["ema"]) if s["ema"] > 0 else None
        self.criterion = _make_criterion(s["label_smoothing"])
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s["amp"])
        self.check_every = 1 if self.device_type == "cpu" else 10  # a host sync; cheap on a CPU
        self.total_steps = s["epochs"] * s["steps_per_epoch"]
        self.warmup_steps = int(round(s["warmup_epochs"] * s["steps_per_epoch"]))
        self._prepare_batches()

    def _load_init(self, net: MobileNetV1, sd: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Body from the file; the classifier too when it already fits the data's classes."""
        own = net.state_dict()
        head = sd.get("classifier.weight")
        keep_head = (head is not None and tuple(head.shape) == tuple(own["classifier.weight"].shape)
                     and info.get("class_names") == self.data.class_names)
        body = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        missing = [k for k in own if not k.startswith("classifier.") and k not in body]
        if missing:
            raise ValueError(f"{self.cfg.init}: weights lack {missing[0]} ({len(missing)} tensors missing)")
        for k, v in body.items():
            if k not in own or tuple(own[k].shape) != tuple(v.shape):
                raise ValueError(f"{self.cfg.init}: tensor {k} does not fit the model")
        if keep_head:
            body.update({k: v for k, v in sd.items() if k.startswith("classifier.")})
        net.load_state_dict(body, strict=False)
        self.note(f"initialized from {self.cfg.init} ({'all layers' if keep_head else 'new classifier'})")

    # ------------------------------------------------------------------ batches

    def _calibration_batches(self, n: int = 512, batch: int = 128) -> Iterator[torch.Tensor]:
        """The first ``n`` training images (no augmentation), for :func:`recalibrate_batchnorm`."""
        s = self.s
        if s["mode"] == "tensor":
            images = self.data.train.images
            for i in range(0, min(n, len(images)), batch):
                yield to_input(images[i:i + batch].to(self.device), self.mean, self.std, size=s["input_size"],
                               channels_last=s["channels_last"])
            return
        ds = FolderDataset(self.data.train, s["input_size"], train=False, eval_crop=s["eval_crop"])
        for i in range(0, min(n, len(ds)), batch):
            x, _, valid, _ = collate_masked([ds[j] for j in range(i, min(i + batch, len(ds)))])
            yield to_input(x[valid].to(self.device), self.mean, self.std, channels_last=s["channels_last"])

    def _prepare_batches(self) -> None:
        s, d = self.s, self.dist
        if s["mode"] == "tensor":
            self.train_data = self.data.train.to(self.device)
            self.val_data = self.data.val.to(self.device)
            return
        pin = self.device_type == "cuda"
        kw: dict[str, Any] = {"num_workers": s["workers"], "pin_memory": pin, "collate_fn": collate_masked}
        if s["workers"] > 0:
            kw.update(persistent_workers=True, prefetch_factor=4)
        train_ds = FolderDataset(self.data.train, s["input_size"], train=True, crop_scale=tuple(s["crop_scale"]))
        self.train_sampler = EpochSampler(len(train_ds), s["batch_size"], seed=s["seed"], rank=d.rank, world=d.world)
        micro = s["batch_size"] // d.world // s["accum_steps"]
        self.train_loader = torch.utils.data.DataLoader(train_ds, batch_size=micro, sampler=self.train_sampler, **kw)
        val_ds = FolderDataset(self.data.val, s["input_size"], train=False, eval_crop=s["eval_crop"])
        self.val_loader = torch.utils.data.DataLoader(val_ds, batch_size=self._eval_batch(),
                                                      sampler=ShardSampler(len(val_ds), d.rank, d.world), **kw)

    def _eval_batch(self) -> int:
        return max(64, min(1024, 2 * self.s["world_batch"]))

    def _train_batches(self, epoch: int, start: int) -> Iterator[tuple[int, list[_Batch]]]:
        """Per step: this process's micro-batches (input, target, valid mask or None), on the device."""
        s, d = self.s, self.dist
        B, K, per = s["batch_size"], s["accum_steps"], s["world_batch"]
        m = per // K
        cl = s["channels_last"]
        if s["mode"] == "tensor":
            data = self.train_data
            perm = epoch_permutation(len(data), s["seed"], epoch).to(self.device)
            size = s["input_size"]
            for step in range(start, s["steps_per_epoch"]):
                params = augment_params(B, size, s["pad"], s["cutout"], seed=s["seed"], epoch=epoch, step=step)
                params = params.slice(d.rank * per, (d.rank + 1) * per).to(self.device)
                idx = perm[step * B + d.rank * per: step * B + (d.rank + 1) * per]
                x = crop_flip(data.images[idx], params, s["pad"])
                x = to_input(x, self.mean, self.std, size=size, channels_last=cl)
                if s["cutout"]:
                    cutout_(x, params, s["cutout"])
                y = data.labels[idx]
                yield step, [(x[j * m:(j + 1) * m], y[j * m:(j + 1) * m], None) for j in range(K)]
            return
        self.train_sampler.set_epoch(epoch, start)
        it = iter(self.train_loader)
        for step in range(start, s["steps_per_epoch"]):
            micro = []
            for _ in range(K):
                x, y, valid, failed = next(it)
                if failed:
                    self.data.skipped.extend(failed)
                mask = None if bool(valid.all()) else valid.to(self.device, non_blocking=True)
                x = to_input(x.to(self.device, non_blocking=True), self.mean, self.std, channels_last=cl)
                micro.append((x, y.to(self.device, non_blocking=True), mask))
            yield step, micro

    def _val_batches(self) -> Iterator[_Batch]:
        s, d = self.s, self.dist
        cl = s["channels_last"]
        if s["mode"] == "tensor":
            data = self.val_data
            n = len(data)
            per = -(-n // d.world)
            lo, hi = d.rank * per, min(n, (d.rank + 1) * per)
            bs = self._eval_batch()
            for i in range(lo, hi, bs):
                j = min(hi, i + bs)
                yield to_input(data.images[i:j], self.mean, self.std, size=s["input_size"], channels_last=cl), \
                    data.labels[i:j], None
            return
        for x, y, valid, failed in self.val_loader:
            if failed:
                self.data.skipped.extend(failed)
            mask = None if bool(valid.all()) else valid.to(self.device, non_blocking=True)
            yield to_input(x.to(self.device, non_blocking=True), self.mean, self.std, channels_last=cl), \
                y.to(self.device, non_blocking=True), mask

    # ------------------------------------------------------------------ resume

    def _restore(self, prev: dict[str, Any]) -> None:
        raw = prev.get("raw_model", prev["model"])
        self.net.load_state_dict(raw)
        if self.ema is not None:
            self.ema.module.load_state_dict(prev["model"])
            self.ema.load_state_dict(prev.get("ema") or {})
        for module in (self.net, self.ema.module if self.ema is not None else None):
            if module is not None and prev.get("qat_ranges"):
                load_fake_quant_ranges(module, prev["qat_ranges"])
        self.optimizer.load_state_dict(prev["optimizer"])
        if prev.get("scaler"):
            self.scaler.load_state_dict(prev["scaler"])
        self.start_epoch = int(prev["epoch"])
        self.start_step = int(prev.get("step_in_epoch", 0))
        self.history = list(prev.get("history", []))
        self.best = dict(prev.get("best", {"val_top1": -1.0, "epoch": 0}))
        self.partial = dict(prev.get("partial", {})) if self.dist.main else {}
        self.wall_before = float(prev.get("wall_seconds", 0.0))
        if self.start_step > 0 and "rng" in prev:
            set_rng_state(prev["rng"])
        where = f"epoch {self.start_epoch + 1}" + (f", step {self.start_step}" if self.start_step else "")
        self.note(f"resuming {self.run_dir} at {where}")
        if self.dist.main:
            self._write_metrics()  # drop lines of work that was lost

    # ------------------------------------------------------------------ saving

    def _model_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.net.parameters())

    def _eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def _save(self, epoch_done: int, step_in_epoch: int, status: str, partial: dict[str, float] | None = None) -> None:
        """checkpoint.pt: everything to resume, loadable by :func:`mobilenets.load_pretrained`."""
        s = self.s
        extra: dict[str, Any] = {
            "config": self.model_config.to_dict(),
            "preprocess": s["preprocess"], "class_names": self.data.class_names, "input_size": s["input_size"],
            "epoch": epoch_done, "step": epoch_done * s["steps_per_epoch"] + step_in_epoch,
            "step_in_epoch": step_in_epoch, "status": status,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "scheduler": {"schedule": s["schedule"], "step": epoch_done * s["steps_per_epoch"] + step_in_epoch},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            "sampler": {"seed": s["seed"], "epoch": epoch_done, "step_in_epoch": step_in_epoch,
                        "global_batch": s["batch_size"]},
            "best": self.best, "history": self.history, "partial": partial or {},
            "metrics": self.history[-1] if self.history else {},
            "settings": s, "train_config": self.cfg.to_dict(),
            "wall_seconds": self.wall_before + time.perf_counter() - self.wall_start,
        }
        if self.ema is not None:
            extra["raw_model"] = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        if s["qat"]:
            extra["qat_ranges"] = fake_quant_ranges(self.net)
        save_checkpoint(self.run_dir / "checkpoint.pt", self._eval_module(), **extra)

    def _save_best(self) -> None:
        s = self.s
        save_checkpoint(self.run_dir / "best.pt", self._eval_module(),
                        config=self.model_config.to_dict(),
                        preprocess=s["preprocess"], class_names=self.data.class_names, input_size=s["input_size"],
                        epoch=self.best["epoch"], metrics=self.history[-1], settings=s)

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(h) + "\n" for h in self.history)

        def write(tmp: str) -> None:
            Path(tmp).write_text(lines)
        atomic_write(self.run_dir / "metrics.jsonl", write)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        module = self._eval_module()
        if self.dist.world > 1:  # every process evaluates with rank 0's BatchNorm statistics
            import torch.distributed as dist

            for b in module.buffers():
                dist.broadcast(b, 0)
        module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        k = min(5, self.model_config.num_classes)
        for x, y, valid in self._val_batches():
            with self._autocast():
                logits = module(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, reduction="none")
            top = logits.topk(k, dim=1).indices
            hit1 = (top[:, 0] == y).double()
            hit5 = (top == y[:, None]).any(dim=1).double()
            w = torch.ones_like(hit1) if valid is None else valid.double()
            sums += torch.stack([(loss.double() * w).sum(), (hit1 * w).sum(), (hit5 * w).sum(), w.sum()])
        all_reduce(sums, self.dist)
        loss_sum, top1, top5, n = sums.tolist()
        n = max(n, 1.0)
        return {"val_loss": loss_sum / n, "val_top1": 100.0 * top1 / n, "val_top5": 100.0 * top5 / n,
                "val_images": int(n)}

    # ------------------------------------------------------------------ the loop

    def _set_lr(self, step: int, epoch: int) -> float:
        s = self.s
        f = lr_factor(s["schedule"], step, total_steps=self.total_steps, steps_per_epoch=s["steps_per_epoch"],
                      warmup_steps=self.warmup_steps, decay_rate=s["decay_rate"], decay_epochs=s["decay_epochs"])
        lr = s["lr"] * f
        frozen = epoch < s["freeze_epochs"]
        for g in self.optimizer.param_groups:
            g["lr"] = 0.0 if frozen and not g.get("head") else lr
        return lr

    def _set_train_mode(self, epoch: int) -> None:
        # A frozen body (lr 0) still normalizes with batch statistics and updates its running
        # ones: they adapt to the new data, and nothing jumps when the body is unfrozen.
        self.net.train()

    def _check(self, loss_sum: torch.Tensor) -> tuple[bool, bool]:
        """(loss not finite, stop requested), agreed by all processes."""
        flags = torch.stack([(~torch.isfinite(loss_sum)).to(torch.float32),
                             torch.tensor(float(self.stop.signum != 0), device=loss_sum.device)])
        all_reduce(flags, self.dist, op="max")
        bad, stop = flags.tolist()
        return bad > 0, stop > 0

    def _diverged(self, epoch: int, step: int) -> TrainingDiverged:
        last = self.history[-1]["epoch"] if self.history else 0
        kept = (f"{self.run_dir / 'checkpoint.pt'} still holds the last good state (epoch {last})"
                if (self.run_dir / "checkpoint.pt").is_file() else "no checkpoint was written")
        return TrainingDiverged(
            f"training diverged: the loss became NaN or infinite in epoch {epoch + 1} (by step {step + 1}); "
            f"nothing from that epoch was saved and {kept}. Lower --lr, add --warmup-epochs, or use --amp "
            "bf16/off, then run again (with --resume to continue from the checkpoint)")

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def _loop(self) -> dict[str, Any]:
        s, d = self.s, self.dist
        self.writer = self._writer()
        self.log(f"training {self.model_config.label} ({'small-input stem, ' if s['cifar_stem'] else ''}input "
                 f"{s['input_size']} px, {self.mult_adds / 1e6:.1f} M Mult-Adds, {self.params / 1e6:.2f} M params) on "
                 f"{s['train_images']} images, {len(self.data.class_names)} classes; recipe {s['recipe']}, "
                 f"{s['epochs']} epochs, global batch {s['batch_size']}, {s['optimizer']} lr {s['lr']:.4g} "
                 f"{s['schedule']}, {d.world} process(es) on {self.device_type}, {s['mode']} input"
                 + (", quantization-aware (int8 fake quantization)" if s["qat"] else ""))
        if self.data.skipped:
            self.note(skipped_message(self.data.skipped, str(self.data.root)))
        status = "finished"
        try:
            for epoch in range(self.start_epoch, s["epochs"]):
                first = epoch == self.start_epoch
                if self._train_epoch(epoch, self.start_step if first else 0, self.partial if first else {}):
                    status = "interrupted"
                    break
                if epoch + 1 < s["epochs"] and self._stop_agreed():
                    self.note(f"stopped by {signal.Signals(self.stop.signum or signal.SIGTERM).name} after epoch "
                              f"{epoch + 1}; {self.run_dir / 'checkpoint.pt'} is saved, continue with --resume")
                    status = "interrupted"
                    break
        finally:
            if self.writer is not None:
                self.writer.close()
        summary = self._summary(status)
        if status == "finished" and d.main:
            atomic_write(self.run_dir / "summary.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
        barrier(d)
        return summary

    def _train_epoch(self, epoch: int, start: int, partial: dict[str, float]) -> bool:
        """One epoch from step ``start`` (with the partial sums of a resumed epoch); True if stopped."""
        s, d = self.s, self.dist
        steps = s["steps_per_epoch"]
        self._set_train_mode(epoch)
        # loss sum, correct, seen, skipped (this process; summed over processes at the end)
        acc = torch.tensor([partial.get(k, 0.0) for k in ("loss_sum", "correct", "seen", "skipped")],
                           dtype=torch.float64, device=self.device)
        train_time = float(partial.get("train_time", 0.0))
        bar = None
        if self.cfg.progress and d.main and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch + 1}/{s['epochs']}", unit="step",
                       dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        lr = s["lr"]
        try:
            for step, micro in self._train_batches(epoch, start):
                lr = self._set_lr(epoch * steps + step, epoch)
                self._step(micro, acc, epoch, step)
                done = step + 1
                if done % self.check_every and done != steps:
                    if bar is not None:
                        bar.update(1)
                    continue
                bad, stop = self._check(acc[0])
                if bad:
                    raise self._diverged(epoch, step)
                if bar is not None:
                    bar.update(1)
                    if done % 10 == 0 or done == steps:
                        loss_sum, correct, seen, _ = acc.tolist()
                        rate = (done - start) * s["batch_size"] / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}",
                                        acc=f"{100 * correct / max(seen, 1):.1f}", img_s=f"{rate:.0f}")
                if self.writer is not None and done % 50 == 0:
                    loss_sum, _, seen, _ = acc.tolist()
                    self.writer.add_scalar("train/loss_running", loss_sum / max(seen, 1), epoch * steps + done)
                if stop and done < steps:
                    self._sync()
                    self._stop_mid_epoch(epoch, done, acc, train_time + time.perf_counter() - t0)
                    return True
        finally:
            if bar is not None:
                bar.close()
        self._sync()
        self._end_epoch(epoch, acc, train_time + time.perf_counter() - t0, lr)
        return False

    def _step(self, micro: list[_Batch], acc: torch.Tensor, epoch: int, step: int) -> None:
        """One optimizer step over this process's micro-batches (DDP syncs on the last one)."""
        K = len(micro)
        for j, (x, y, valid) in enumerate(micro):
            # Dropout draws from the global RNG: seed it per micro-batch of the global step, so
            # 1 process × K micro-batches and K processes see the same masks, and a resumed run
            # needs no RNG state.
            torch.manual_seed(mix_seed(self.s["seed"], "dropout", epoch, step, self.dist.rank * K + j))
            sync = self.ddp.no_sync() if self.ddp is not None and j < K - 1 else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    logits = self.step_model(x)
                losses = self.criterion(logits.float(), y)
                hits = logits.detach().argmax(1) == y
                if valid is None:
                    loss = losses.mean()
                    acc[0] += losses.detach().sum()
                    acc[1] += hits.sum()
                    acc[2] += y.shape[0]
                else:
                    w = valid.to(losses.dtype)
                    loss = (losses * w).sum() / w.sum().clamp_min(1.0)
                    acc[0] += (losses.detach() * w).sum()
                    acc[1] += (hits & valid).sum()
                    acc[2] += w.sum()
                    acc[3] += (~valid).sum()
                self.scaler.scale(loss / K).backward()
        if self.s["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.s["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.net)

    def _end_epoch(self, epoch: int, acc: torch.Tensor, train_time: float, lr: float) -> None:
        """Evaluate, then checkpoint (then best.pt, metrics.jsonl, TensorBoard) on rank 0."""
        s, d = self.s, self.dist
        totals = all_reduce(acc.clone(), d)
        loss_sum, correct, seen, skipped = totals.tolist()
        if not math.isfinite(loss_sum):
            raise self._diverged(epoch, s["steps_per_epoch"] - 1)
        t1 = time.perf_counter()
        val = self._evaluate()
        val_time = time.perf_counter() - t1
        if not math.isfinite(val["val_loss"]) or not self._model_finite():
            raise self._diverged(epoch, s["steps_per_epoch"] - 1)
        metrics = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1.0), "train_top1": 100.0 * correct / max(seen, 1.0),
            **val, "lr": lr, "images_per_second": s["steps_per_epoch"] * s["batch_size"] / max(train_time, 1e-9),
            "train_time": train_time, "val_time": val_time, "epoch_time": train_time + val_time,
            "skipped_images": int(skipped),
        }
        improved = metrics["val_top1"] > self.best["val_top1"]
        if improved:
            self.best = {"val_top1": metrics["val_top1"], "epoch": epoch + 1}
        metrics["best_val_top1"] = self.best["val_top1"]
        self.history.append(metrics)
        self.partial = {}
        if d.main:
            self._save(epoch + 1, 0, "finished" if epoch + 1 == s["epochs"] else "running")
            if improved:
                self._save_best()
            self._write_metrics()  # after the checkpoint: a line in metrics.jsonl means its epoch is saved
            if self.writer is not None:
                step_no = (epoch + 1) * s["steps_per_epoch"]
                for k in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_second"):
                    tag = k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k
                    self.writer.add_scalar(tag, metrics[k], step_no)
                self.writer.flush()
        if skipped and self.data.skipped:
            self.note(skipped_message(self.data.skipped, f"epoch {epoch + 1}"))
        self.log(f"epoch {epoch + 1}/{s['epochs']}  train_loss {metrics['train_loss']:.4f}  "
                 f"train_top1 {metrics['train_top1']:.2f}  val_loss {metrics['val_loss']:.4f}  "
                 f"val_top1 {metrics['val_top1']:.2f}  val_top5 {metrics['val_top5']:.2f}  lr {lr:.4g}  "
                 f"{metrics['images_per_second']:.0f} img/s  {metrics['epoch_time']:.1f} s")

    def _stop_agreed(self) -> bool:
        flag = torch.tensor([float(self.stop.signum != 0)], device=self.device)
        return float(all_reduce(flag, self.dist, op="max")) > 0

    def _stop_mid_epoch(self, epoch: int, done: int, acc: torch.Tensor, train_time: float) -> None:
        """Save the position inside the epoch and its partial sums (over all processes)."""
        totals = all_reduce(acc.clone(), self.dist)
        if self.dist.main:
            if not self._model_finite():
                raise self._diverged(epoch, done - 1)
            loss_sum, correct, seen, skipped = totals.tolist()
            self._save(epoch, done, "interrupted", {"loss_sum": loss_sum, "correct": correct, "seen": seen,
                                                    "skipped": skipped, "train_time": train_time})
        barrier(self.dist)
        name = signal.Signals(self.stop.signum).name if self.stop.signum else "signal"
        self.note(f"stopped by {name} in epoch {epoch + 1} after step {done}/{self.s['steps_per_epoch']}; "
                  f"{self.run_dir / 'checkpoint.pt'} is saved, continue with --resume")

    def _writer(self) -> Any:
        if not (self.cfg.tensorboard and self.dist.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            return None
        start = self.start_epoch * self.s["steps_per_epoch"] + self.start_step
        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start if start else None)

    def _summary(self, status: str) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        ips = [h["images_per_second"] for h in self.history]
        return {
            "status": status, "signal": signal.Signals(self.stop.signum).name if self.stop.signum else None,
            "epochs": len(self.history), "epochs_planned": self.s["epochs"],
            "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"), "val_loss": last.get("val_loss"),
            "train_loss": last.get("train_loss"), "best_val_top1": self.best["val_top1"] if self.history else None,
            "best_epoch": self.best["epoch"] if self.history else None,
            "mult_adds": self.mult_adds, "params": self.params,
            "unreadable_images": len(set(self.data.skipped)),  # skipped, this process's count
            "wall_seconds": self.wall_before + time.perf_counter() - self.wall_start,
            "images_per_second": sum(ips) / len(ips) if ips else None,
            "model": self.model_config.label,
            "config": self.model_config.to_dict(),
            "input_size": self.s["input_size"], "recipe": self.s["recipe"], "num_classes": len(self.data.class_names),
            "run_dir": str(self.run_dir), "settings": self.s,
        }


def train(config: TrainConfig | None = None, **options: Any) -> dict[str, Any]:
    """Train (or resume) one run; returns the summary dict (also written to ``summary.json``).

    ``summary["status"]`` is ``"finished"``, or ``"interrupted"`` after SIGTERM/SIGINT (the
    checkpoint then holds the exact position; ``resume=True`` continues). Raises ``ValueError``
    for bad options or data (one line saying what to do) and :class:`TrainingDiverged` when the
    loss stops being finite.
    """
    if config is None:
        config = TrainConfig(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    return _Trainer(config).run()


fit = train



