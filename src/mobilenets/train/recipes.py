"""Training recipes as data, and the optimization pieces they name: weight-decay groups,
optimizers, learning-rate schedules and the weight EMA.

A :class:`Recipe` records its hyper-parameters and where each comes from (the paper and TF-slim
for ``paper``; common fast-training practice for ``cifar``; torchvision's and timm's references
for ``imagenet``). The trainer (:mod:`mobilenets.train`) resolves a run's settings from one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Recipe", "RECIPES", "OPTIMIZER_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "AMP_MODES", "param_groups",
           "make_optimizer", "lr_factor", "ModelEma"]

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("exp", "cosine", "onecycle", "constant")
AMP_MODES = ("bf16", "fp16", "off")


# ----------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    """A named set of training hyper-parameters and where they come from.

    ``lr`` is for a global batch of ``lr_batch`` and is scaled linearly to the batch used.
    ``crop_scale`` is the area range of RandomResizedCrop (folder path); ``pad`` the zero
    padding of the random crop (tensor path, small images); ``eval_crop`` the central crop
    at evaluation (folder path; small images are evaluated whole).
    """

    name: str
    source: str
    optimizer: str
    lr: float
    lr_batch: int
    schedule: str
    epochs: int
    batch_size: int
    weight_decay: float
    label_smoothing: float = 0.0
    ema: float = 0.0
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    decay_rate: float = 0.94
    decay_epochs: float = 2.5
    crop_scale: tuple[float, float] = (0.08, 1.0)
    pad: int = 4
    cutout: int = 0
    eval_crop: float = 0.875
    amp: str = "bf16"


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        source=("Howard et al. 2017, sec. 4: RMSprop with asynchronous gradient descent as for Inception V3, "
                "less regularization and data augmentation than large models, little or no weight decay on "
                "depthwise filters. Numbers from TF-slim: train_image_classifier.py's RMSprop (decay 0.9, momentum "
                "0.9, epsilon 1.0; no label smoothing, no moving average by default), nets/mobilenet_v1_train.py's "
                "schedule (lr 0.045 at batch 64, x0.94 every 2.5 epochs, staircase; that script itself uses plain "
                "SGD), mobilenet_v1_arg_scope (weight decay 4e-5, regularize_depthwise=False, none on BatchNorm). "
                "torch's RMSprop adds epsilon outside the square root (TF inside) and starts its average at 0 (TF "
                "at 1); at epsilon 1.0 both behave like SGD with momentum. Crops: area 25-100% (the paper limits "
                "Inception's small crops without giving a number). The paper gives no epoch count; 100 is ours."),
        optimizer="rmsprop", lr=0.045, lr_batch=64, schedule="exp", epochs=100, batch_size=256,
        weight_decay=4e-5, decay_rate=0.94, decay_epochs=2.5, crop_scale=(0.25, 1.0),
    ),
    "cifar": Recipe(
        name="cifar",
        source=("Fast CIFAR-10 practice: one-cycle learning rate (Smith & Topin 2017) with SGD + Nesterov, "
                "label smoothing 0.1 (Szegedy et al. 2016), weight decay 5e-4 off BatchNorm and depthwise filters, "
                "4-px padded random crop + flip (He et al. 2016), batch 512 with lr 0.4 (0.1 per 128), bf16 on GPU. "
                "With the small-input stem (stride 8) a 32-px image ends in a 4x4 map."),
        optimizer="sgd", lr=0.4, lr_batch=512, schedule="onecycle", epochs=50, batch_size=512,
        weight_decay=5e-4, label_smoothing=0.1, pad=4, eval_crop=1.0,
    ),
    "imagenet": Recipe(
        name="imagenet",
        source=("A modern ImageNet recipe in the style of torchvision's classification references and timm: SGD + "
                "Nesterov, lr 0.2 per 256 images, 5 warmup epochs then cosine to 0, label smoothing 0.1, weight "
                "decay 4e-5 (MobileNet's) off BatchNorm and depthwise filters, RandomResizedCrop(0.08-1) + flip, "
                "EMA of weights (decay 0.9998), evaluation at 87.5% central crop."),
        optimizer="sgd", lr=0.2, lr_batch=256, schedule="cosine", epochs=150, batch_size=1024,
        weight_decay=4e-5, label_smoothing=0.1, ema=0.9998, warmup_epochs=5.0, crop_scale=(0.08, 1.0),
    ),    # Detection (train --task detection): the image-classification fields (crops, padding, cutout, label
    # smoothing) are left at neutral values.
    "ssd_tf": Recipe(
        name="ssd_tf",
        source=("TF Object Detection API, samples/configs/ssd_mobilenet_v1_coco.config: rms_prop_optimizer "
                "(decay 0.9, momentum 0.9, epsilon 1.0), initial_learning_rate 0.004 at batch_size 24, "
                "exponential_decay_learning_rate decay_factor 0.95 every decay_steps 800720, num_steps 200000 "
                "(= 40.6 epochs of 118287 COCO images; the 800720 steps (162.5 epochs) lie beyond the run, so "
                "TF's rate is in effect constant): scaled to x0.95 every epoch here, which suits short "
                "fine-tuning runs, l2_regularizer 0.00004 on the convolutions, no moving "
                "average; augmentation random_horizontal_flip + ssd_random_crop (DetectionDataset)."),
        optimizer="rmsprop", lr=0.004, lr_batch=24, schedule="exp", epochs=40, batch_size=24,
        weight_decay=4e-5, momentum=0.9, decay_rate=0.95, decay_epochs=1.0,
        crop_scale=(1.0, 1.0), pad=0, eval_crop=1.0, amp="bf16",
    ),
    "ssd_cosine": Recipe(
        name="ssd_cosine",
        source=("Modern SSD training after torchvision's references/detection (ssdlite320_mobilenet_v3_large: "
                "SGD momentum 0.9, lr 0.15 for a global batch of 192 (24 x 8 GPUs), cosine schedule, weight "
                "decay 4e-5, 600 epochs, SSD augmentation), with a 1-epoch linear warmup; weight decay off "
                "BatchNorm, biases and depthwise filters as for the classifiers; 200 epochs here."),
        optimizer="sgd", lr=0.15, lr_batch=192, schedule="cosine", epochs=200, batch_size=192,
        weight_decay=4e-5, momentum=0.9, warmup_epochs=1.0, crop_scale=(1.0, 1.0), pad=0, eval_crop=1.0,
        amp="bf16",
    ),
    # Distillation (mobilenets distill): the student learns the teacher's outputs, which carry far more
    # information per image than a label, so an adaptive optimizer and little regularization.
    "distill": Recipe(
        name="distill",
        source=("Distillation practice (Hinton et al. 2015; Beyer et al. 2022, 'Knowledge distillation: a good "
                "teacher is patient and consistent'): AdamW, 1 warmup epoch then cosine, "
                "weight decay 0.01 off BatchNorm and depthwise filters, no label smoothing (the teacher's "
                "outputs are the soft targets), 4-px padded random crop + flip on the device, bf16 on GPU; lr 5e-3 per 256 "
                "(AdamW with BatchNorm tolerates it; short CPU runs from scratch need it)."),
        optimizer="adamw", lr=5e-3, lr_batch=256, schedule="cosine", epochs=10, batch_size=128,
        weight_decay=0.01, warmup_epochs=1.0, pad=4, eval_crop=1.0,
    ),
}

# Defaults for an optimizer other than the recipe's: (lr, for batch, weight decay).
OPTIMIZER_DEFAULTS: dict[str, tuple[float, int, float]] = {
    "sgd": (0.1, 256, 5e-5), "rmsprop": (0.045, 64, 4e-5), "adamw": (1e-3, 512, 0.05),
}


# ----------------------------------------------------------------------------- optimization

def param_groups(model: nn.Module, weight_decay: float, *, wd_all: bool = False,
                 head: nn.Module | None = None) -> list[dict[str, Any]]:
    """Parameters split by whether they get weight decay (full conv and FC weights) or not
    (depthwise filters, BatchNorm, biases; all of them with ``wd_all``), and by body / head."""
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            decays = wd_all or (name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)) and not depthwise)
            groups.setdefault((decays, id(p) in head_ids), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decays else 0.0, "head": is_head}
            for (decays, is_head), ps in sorted(groups.items())]


def make_optimizer(name: str, groups: list[dict[str, Any]], *, lr: float, momentum: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """RMSprop as TF-slim configures it, SGD with Nesterov momentum, or AdamW; fused CUDA
    kernels where PyTorch has them."""
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, **fast)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, **fast)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1.0, momentum=momentum, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def lr_factor(schedule: str, step: int, *, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
              decay_rate: float = 0.94, decay_epochs: float = 2.5) -> float:
    """The learning-rate multiplier at ``step`` (a pure function, so a resumed run needs only
    the step). ``exp``: ×decay_rate every decay_epochs (staircase, TF-slim); ``cosine``: to 0;
    ``onecycle``: PyTorch's OneCycleLR shape (30% up from 1/25, cosine down to 1/250000);
    ``constant``. ``exp``, ``cosine`` and ``constant`` ramp up linearly over ``warmup_steps``."""
    if schedule == "onecycle":
        up = max(1, int(0.3 * total_steps))
        lo, end = 1 / 25, 1 / 25 / 1e4
        if step < up:
            t = step / up
            return lo + (1 - lo) * (1 - math.cos(math.pi * t)) / 2
        t = min(1.0, (step - up) / max(1, total_steps - up))
        return end + (1 - end) * (1 + math.cos(math.pi * t)) / 2
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "exp":
        decay_steps = max(1, int(steps_per_epoch * decay_epochs))
        return decay_rate ** ((step - warmup_steps) // decay_steps)
    if schedule == "cosine":
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return (1 + math.cos(math.pi * t)) / 2
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")


class ModelEma:
    """Exponential moving average of a model's weights and BatchNorm statistics.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` so the average is useful early
    in short runs too.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]] | None
        self._pairs = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._pairs is None:  # the tensors themselves: state_dict() shares their storage
            ema_f, src_f, other = [], [], []
            for e, s in zip(self.module.state_dict().values(), model.state_dict().values()):
                if e.dtype.is_floating_point:
                    ema_f.append(e)
                    src_f.append(s)
                else:
                    other.append((e, s))
            # Buffers outside the state dict (fake-quant ranges of --qat) follow the model.
            saved = self.module.state_dict().keys()
            other += [(e, s) for (name, e), (_, s) in zip(self.module.named_buffers(), model.named_buffers())
                      if name not in saved]
            self._pairs = (ema_f, src_f, other)
        ema_f, src_f, other = self._pairs
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(ema_f, src_f, 1.0 - d)
        for e, s in other:
            e.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
