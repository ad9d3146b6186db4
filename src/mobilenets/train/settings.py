"""A run's options (:class:`TrainConfig`) and what they resolve to (:class:`RunSettings`).

:class:`RunSettings` is the one list of a run's resolved settings. Its field metadata says
which settings define the run (``identity=True``: a resume must give the same) and which
:class:`TrainConfig` options each comes from (``options``), so the resume check and the
check of a finished run follow from it. The checkpoint stores ``RunSettings.to_dict()``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import MobileNetConfig
from ..data import IMAGENET_PREPROCESS
from ..tasks import DETECTION_ARCHS, TASKS
from ..weights import read_weights
from .recipes import AMP_MODES, OPTIMIZER_DEFAULTS, OPTIMIZERS, RECIPES, SCHEDULES, Recipe

__all__ = [
    "IDENTITY",
    "Resolved",
    "RunSettings",
    "TrainConfig",
    "check_config",
    "check_finished",
    "check_resume",
    "resolve",
    "run_notes",
]


# ----------------------------------------------------------------------------- the options

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
    # what to train: "classification" or "detection" (:data:`mobilenets.tasks.TASKS`); for detection
    # ``arch`` ("ssd", "ssdlite", "faster_rcnn"), and ``freeze_backbone``: the body frozen, its maps
    # computed once and kept on the device (no augmentation), only extra layers and predictors train
    task: str = "classification"
    arch: str | None = None
    freeze_backbone: bool = False
    # distillation (``task`` "kd", "embedding" or "multilabel"; :mod:`mobilenets.tasks.distill`):
    # ``teacher`` a weights file or run; ``data`` may then be a list of sources; ``labels`` "teacher",
    # "gt" or "both"; ``teacher_cache``: run the teacher once per image (False: every step, on the
    # student's augmented batch); ``normalize``: L2-normalize embeddings before the squared distance
    teacher: str | os.PathLike | None = None
    temperature: float | None = None
    alpha: float | None = None
    labels: str | None = None
    val_data: str | os.PathLike | None = None
    normalize: bool = False
    teacher_cache: bool = True
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
        for k in ("data", "out", "init", "teacher", "val_data"):
            if isinstance(d[k], (list, tuple)):
                d[k] = [str(x) for x in d[k]]
            elif d[k] is not None:
                d[k] = str(d[k])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        if d.get("model") is not None:
            d["model"] = MobileNetConfig.from_dict(d["model"])
        return cls(**d)


# Options that say where and how to run, not what: they change no resolved setting.
RUN_OPTIONS = ("out", "resume", "progress", "tensorboard", "verbose", "threads")


# ----------------------------------------------------------------------------- the resolved settings

def _m(*options: str, identity: bool = False, legacy: Any = None) -> dict[str, Any]:
    """A :class:`RunSettings` field's metadata: the options it resolves from; ``identity``: fixed
    for a run's life; ``legacy``: its value in checkpoints written before it existed."""
    return {"options": options, "identity": identity, "legacy": legacy}


@dataclass(frozen=True)
class RunSettings:
    """Everything a run resolved from its options, the recipe, the data and the processes."""

    recipe: str = field(metadata=_m("recipe", identity=True))
    model: dict = field(metadata=_m("model", "width", "variant", "resolution", "num_classes", "init", identity=True))
    cifar_stem: bool = field(metadata=_m("cifar_stem", identity=True))
    input_size: int = field(metadata=_m("input_size", identity=True))
    epochs: int = field(metadata=_m("epochs", identity=True))
    batch_size: int = field(metadata=_m("batch_size", identity=True))
    # the number of processes and accumulation steps may change on resume: data order,
    # augmentation and the global batch do not depend on them (only BatchNorm statistics do)
    accum_steps: int = field(metadata=_m("accum_steps"))
    world_size: int = field(metadata=_m())
    world_batch: int = field(metadata=_m())
    steps_per_epoch: int = field(metadata=_m())
    optimizer: str = field(metadata=_m("optimizer", identity=True))
    lr: float = field(metadata=_m("lr", identity=True))
    schedule: str = field(metadata=_m("schedule", identity=True))
    warmup_epochs: float = field(metadata=_m("warmup_epochs", identity=True))
    momentum: float = field(metadata=_m("momentum", identity=True))
    weight_decay: float = field(metadata=_m("weight_decay", identity=True))
    wd_all: bool = field(metadata=_m("wd_all", identity=True))
    label_smoothing: float = field(metadata=_m("label_smoothing", identity=True))
    ema: float = field(metadata=_m("ema", identity=True))
    cutout: int = field(metadata=_m("cutout", identity=True))
    pad: int = field(metadata=_m(identity=True))
    crop_scale: list = field(metadata=_m(identity=True))
    eval_crop: float = field(metadata=_m(identity=True))
    decay_rate: float = field(metadata=_m())
    decay_epochs: float = field(metadata=_m())
    grad_clip: float = field(metadata=_m("grad_clip", identity=True))
    amp: str = field(metadata=_m("amp"))
    channels_last: bool = field(metadata=_m("channels_last"))
    compile: bool = field(metadata=_m("compile"))
    device: str = field(metadata=_m("device"))
    workers: int = field(metadata=_m("workers"))
    mode: str = field(metadata=_m(identity=True))  # from ``loader``, but "auto" may resolve to either
    seed: int = field(metadata=_m("seed", identity=True))
    subset: int | None = field(metadata=_m("subset", identity=True))
    val_subset: int | None = field(metadata=_m("val_subset", identity=True))
    freeze_epochs: int = field(metadata=_m("freeze_epochs", identity=True))
    init: str | None = field(metadata=_m("init", identity=True))
    sync_bn: bool = field(metadata=_m("sync_bn"))
    deterministic: bool = field(metadata=_m("deterministic"))
    qat: bool = field(metadata=_m("qat", identity=True))
    preprocess: dict = field(metadata=_m())
    train_images: int = field(metadata=_m())
    val_images: int = field(metadata=_m())
    data: str = field(metadata=_m("data", identity=True))
    task: str = field(metadata=_m("task", identity=True, legacy="classification"))
    arch: str | None = field(default=None, metadata=_m("arch", identity=True))
    freeze_backbone: bool = field(default=False, metadata=_m("freeze_backbone", identity=True, legacy=False))
    # distillation: teacher (its source and content hash), loss, temperature, alpha, labels, ...
    distill: dict | None = field(default=None, metadata=_m("teacher", "temperature", "alpha", "labels", "val_data",
                                                            "normalize", "teacher_cache", identity=True))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        d = {f.name: data.get(f.name, f.metadata["legacy"]) for f in dataclasses.fields(cls)}
        return cls(**d)

    def __getitem__(self, key: str) -> Any:  # settings["lr"], as the dict of earlier versions
        return getattr(self, key)


def _data_str(data: Any) -> str:
    """The run's data as stored: one path, or several joined by " + " (distillation sources)."""
    if isinstance(data, (list, tuple)):
        return " + ".join(str(d) for d in data) if len(data) > 1 else str(data[0])
    return str(data)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


IDENTITY = tuple(f.name for f in dataclasses.fields(RunSettings) if f.metadata["identity"])
# The options a finished run's settings came from; ``epochs`` has its own message.
_IDENTITY_OPTIONS = tuple(dict.fromkeys(o for f in dataclasses.fields(RunSettings) if f.metadata["identity"]
                                        for o in f.metadata["options"] if o != "epochs"))


def _same(key: str, old: Any, new: Any) -> bool:
    if key in ("data", "init") and isinstance(old, str) and isinstance(new, str):
        return str(old) == str(new) or Path(str(old)).resolve() == Path(str(new)).resolve()
    return old == new


def _differs(key: str, old: Any, new: Any, run_dir: Path) -> ValueError:
    return ValueError(f"--resume: {key} differs from the run in {run_dir} ({old!r} there, {new!r} now); "
                      "resume with the same options")


def check_resume(settings: RunSettings, prev: dict[str, Any], run_dir: Path) -> None:
    """Refuse a resume whose resolved settings that define the run differ from the stored ones."""
    old, new = prev["settings"], settings.to_dict()
    for f in dataclasses.fields(RunSettings):
        key = f.name
        if not f.metadata["identity"]:
            continue
        if key not in old:
            if f.metadata["legacy"] is None and not new.get(key):
                continue  # a setting added since that run was made, at its off value
            stored = f.metadata["legacy"]
        else:
            stored = old[key]
        if not _same(key, stored, new[key]):
            raise _differs(key, stored, new[key], run_dir)


def check_finished(cfg: TrainConfig, prev: dict[str, Any], run_dir: Path) -> None:
    """Refuse to "resume" a finished run with options that would have made another run."""
    done = prev["settings"]["epochs"]
    if cfg.epochs is not None and cfg.epochs != done:
        raise ValueError(f"{run_dir} finished its {done} epochs; a finished run is not extended (its schedule "
                         f"depends on the total): start a new run with --init {run_dir / 'checkpoint.pt'}")
    stored = prev.get("train_config") or {}
    given = cfg.to_dict()
    for key in _IDENTITY_OPTIONS:
        if key not in stored or given[key] is None:
            continue
        if not _same(key, stored[key], given[key]):
            raise _differs(key, stored[key], given[key], run_dir)


# ----------------------------------------------------------------------------- checking the options

def _check_choice(value: Any, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def check_config(cfg: TrainConfig) -> None:
    """The checks that need no data: one line saying what to change."""
    if cfg.data is None and not cfg.resume:
        raise ValueError("give the training data (--data PATH: an ImageFolder tree or a .tar.gz of one)")
    if cfg.out is None:
        raise ValueError("give the run directory (--out RUN_DIR) for checkpoints and metrics")
    for value, allowed, what in ((cfg.recipe, tuple(RECIPES), "recipe"), (cfg.optimizer, OPTIMIZERS, "optimizer"),
                                 (cfg.schedule, SCHEDULES, "schedule"), (cfg.amp, AMP_MODES, "amp mode"),
                                 (cfg.device, ("cpu", "cuda"), "device"),
                                 (cfg.loader, ("auto", "tensor", "folder"), "loader"),
                                 (cfg.task, tuple(TASKS), "task"),
                                 (cfg.arch, DETECTION_ARCHS, "detection architecture (--arch)")):
        _check_choice(value, allowed, what)
    for name in ("epochs", "batch_size", "accum_steps", "subset", "val_subset", "threads"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
    if isinstance(cfg.freeze_epochs, bool) or not isinstance(cfg.freeze_epochs, int) or cfg.freeze_epochs < 0:
        raise ValueError(f"freeze_epochs must be an integer ≥ 0, got {cfg.freeze_epochs!r}")
    if cfg.ema is not None and not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema decay must be in [0, 1) (e.g. 0.9998; 0 = off), got {cfg.ema}")


# ----------------------------------------------------------------------------- resolving

@dataclass
class Resolved:
    settings: RunSettings
    recipe: Recipe
    model_config: MobileNetConfig
    init_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None  # (state dict, info) of --init


def _model_config(cfg: TrainConfig, data: Any) -> tuple[MobileNetConfig, Any, dict[str, Any], int, bool]:
    """(model config, init state, preprocessing, input size, small-input stem)."""
    small = data.mode == "tensor"
    init_state = None
    if cfg.init is not None:
        init_config, sd, info = read_weights(cfg.init)
        if cfg.width is not None and abs(cfg.width - init_config.width_multiplier) > 1e-6:
            raise ValueError(f"{cfg.init}: holds α={init_config.width_multiplier:g} weights but --width "
                             f"{cfg.width:g} was given; drop --width or pick the matching file")
        if cfg.variant is not None and cfg.variant != init_config.variant:
            raise ValueError(f"{cfg.init}: holds a {init_config.variant} MobileNet but --variant "
                             f"{cfg.variant} was given")
        base = init_config
        init_state = (sd, info)
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
    cifar_stem = bool(cfg.cifar_stem if cfg.cifar_stem is not None else input_size < 64)
    if cifar_stem and base.output_stride != 32:
        raise ValueError("the small-input stem (--cifar-stem) cannot be combined with --output-stride 8/16")
    config = base.replace(resolution=resolution, num_classes=num_classes, cifar_stem=cifar_stem)
    return config, init_state, preprocess, int(input_size), cifar_stem


def _optimization(cfg: TrainConfig, recipe: Recipe, world: int, n_train: int) -> dict[str, Any]:
    optimizer = cfg.optimizer or recipe.optimizer
    if optimizer == recipe.optimizer:
        base_lr, lr_batch, wd = recipe.lr, recipe.lr_batch, recipe.weight_decay
    else:
        base_lr, lr_batch, wd = OPTIMIZER_DEFAULTS[optimizer]
        if optimizer != "adamw" and recipe.optimizer != "adamw":
            wd = recipe.weight_decay  # coupled L2 either way: the recipe's value carries over
    batch = cfg.batch_size or recipe.batch_size
    accum = cfg.accum_steps
    if cfg.batch_size is None and batch > n_train >= world * accum:
        # The recipe's batch on a small training set (a 200-image folder, --subset 500): the whole
        # set, in steps the processes can share; the learning rate below scales with it, and the
        # run's first line says so (capped_batch_note).
        batch = n_train // (world * accum) * (world * accum)
    if batch % (world * accum):
        raise ValueError(f"--batch-size {batch} (global) must be divisible by processes × accumulation steps "
                         f"({world} × {accum})")
    steps_per_epoch = n_train // batch
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {batch} is larger than the training set ({n_train} images); "
                         "lower --batch-size or raise --subset")
    lr = cfg.lr if cfg.lr is not None else base_lr * batch / lr_batch
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a number > 0, got {lr}")
    pick = lambda given, default: given if given is not None else default
    return {
        "epochs": int(cfg.epochs or recipe.epochs), "batch_size": int(batch), "accum_steps": accum,
        "world_size": world, "world_batch": batch // world, "steps_per_epoch": steps_per_epoch,
        "optimizer": optimizer, "lr": float(lr), "schedule": cfg.schedule or recipe.schedule,
        "warmup_epochs": float(pick(cfg.warmup_epochs, recipe.warmup_epochs)),
        "momentum": float(pick(cfg.momentum, recipe.momentum)),
        "weight_decay": float(pick(cfg.weight_decay, wd)), "wd_all": bool(cfg.wd_all),
        "label_smoothing": float(pick(cfg.label_smoothing, recipe.label_smoothing)),
        "ema": float(pick(cfg.ema, recipe.ema)), "decay_rate": recipe.decay_rate,
        "decay_epochs": recipe.decay_epochs, "grad_clip": float(cfg.grad_clip),
    }


def run_notes(cfg: TrainConfig, settings: RunSettings) -> list[str]:
    """What the run's first line must say beyond its settings: the recipe's batch capped at a small
    training set; the small-input stem switched on for an --init file made without it."""
    notes = []
    recipe = RECIPES.get(settings.recipe)
    if cfg.batch_size is None and recipe is not None and settings.batch_size < recipe.batch_size:
        notes.append(f"the {recipe.name} recipe's batch {recipe.batch_size} is capped at the training set's "
                     f"{settings.train_images} images (lr scaled to it; --batch-size sets another)")
    if cfg.init is not None and cfg.cifar_stem is None and settings.cifar_stem:
        try:
            init = read_weights(cfg.init)[0]
        except ValueError:
            init = None
        if init is not None and not init.cifar_stem:
            notes.append(f"the small-input stem is switched on for {settings.input_size}-px input (stride 1 in the "
                         f"stem and Conv2d_2): {cfg.init} was made for {init.resolution} px without it; its weights "
                         "are kept (--no-cifar-stem keeps its strides)")
    return notes


def _speed(cfg: TrainConfig, recipe: Recipe, device_type: str, small: bool) -> dict[str, Any]:
    amp = cfg.amp or (recipe.amp if device_type == "cuda" else "off")
    if amp == "fp16" and device_type != "cuda":
        raise ValueError("--amp fp16 needs --device cuda; on a CPU use --amp bf16 or off")
    if amp == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU has no bfloat16; use --amp fp16 or off")
    if cfg.sync_bn and device_type != "cuda":
        raise ValueError("--sync-bn needs --device cuda (PyTorch's SyncBatchNorm runs on GPUs only)")
    workers = cfg.workers
    if workers is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        workers = 0 if small else max(1, min(8, (os.cpu_count() or 2) // max(1, local) - 1))
    return {"amp": amp, "channels_last": bool(cfg.channels_last if cfg.channels_last is not None else True),
            "compile": bool(cfg.compile), "device": device_type, "workers": int(workers),
            "sync_bn": bool(cfg.sync_bn), "deterministic": bool(cfg.deterministic)}


def _check_batch_norm(config: MobileNetConfig, input_size: int, micro_batch: int) -> None:
    """BatchNorm in training mode needs more than one value per channel: a micro-batch of one image
    whose last map is 1×1 (32 px without the small-input stem) cannot train."""
    side = input_size
    for _ in range(int(math.log2(min(config.output_stride, 32))) - (2 if config.cifar_stem else 0)):
        side = -(-side // 2)
    if micro_batch == 1 and side == 1:
        raise ValueError(f"a batch of 1 image per step (per process and accumulation step) of {input_size} px ends "
                         "in a 1×1 map, and BatchNorm in training needs more than one value per channel: use "
                         "--batch-size 2 or more, fewer --accum-steps, or the small-input stem (--cifar-stem)")


def resolve(cfg: TrainConfig, data: Any, *, world: int, device_type: str, task: str = "classification",
            model: Any = None, default_recipe: str | None = None, arch: str | None = None,
            freeze_backbone: bool = False, distill: dict[str, Any] | None = None) -> Resolved:
    """The settings of a run from its options, the recipe and the data (``data``: class names,
    ``mode``, ``native_size`` and the train and val splits). ``model``: the task's
    :meth:`~mobilenets.tasks.Task.resolve_model` (None, or returning None: a classifier's)."""
    small = data.mode == "tensor"
    recipe = RECIPES[cfg.recipe or default_recipe or ("cifar" if small else "imagenet")]
    resolved = model(cfg, data) if model is not None else None
    model_config, init_state, preprocess, input_size, cifar_stem = resolved or _model_config(cfg, data)
    if cfg.freeze_epochs and cfg.init is None:
        raise ValueError("--freeze-epochs freezes pretrained layers; give the weights with --init")
    opt = _optimization(cfg, recipe, world, len(data.train))
    if resolved is None:  # a classifier: checked before the run directory is made, not at the first step
        _check_batch_norm(model_config, input_size, opt["world_batch"] // opt["accum_steps"])
    settings = RunSettings(
        recipe=recipe.name, model=model_config.to_dict(), cifar_stem=cifar_stem, input_size=input_size, **opt,
        cutout=int(cfg.cutout if cfg.cutout is not None else recipe.cutout),
        pad=recipe.pad if small else 0, crop_scale=list(recipe.crop_scale),
        eval_crop=1.0 if small else recipe.eval_crop, **_speed(cfg, recipe, device_type, small), mode=data.mode,
        seed=int(cfg.seed), subset=cfg.subset, val_subset=cfg.val_subset, freeze_epochs=int(cfg.freeze_epochs),
        init=str(cfg.init) if cfg.init else None, qat=bool(cfg.qat),
        preprocess={"mean": list(preprocess["mean"]), "std": list(preprocess["std"]),
                    "crop": 1.0 if small else recipe.eval_crop, "resize": "tf_legacy_bilinear"},
        train_images=len(data.train), val_images=len(data.val), data=_data_str(cfg.data), task=task, arch=arch,
        freeze_backbone=bool(freeze_backbone), distill=dict(distill) if distill else None)
    if not 0 <= settings.label_smoothing < 1:
        raise ValueError(f"label smoothing must be in [0, 1), got {settings.label_smoothing}")
    if settings.weight_decay < 0:
        raise ValueError(f"weight decay must be ≥ 0, got {settings.weight_decay}")
    return Resolved(settings, recipe, model_config, init_state)
