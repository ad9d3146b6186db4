"""The model, its wrappers and the optimization state of a run, from its settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._utils import mix_seed
from ..analysis import cost
from ..config import MobileNetConfig
from ..models import MobileNetV1
from ..quant import enable_fake_quant, recalibrate_batchnorm
from .batches import DeviceData
from .distributed import Dist
from .recipes import ModelEma, make_optimizer, param_groups
from .settings import RunSettings

__all__ = ["TrainParts", "build_parts", "load_init"]


@dataclass
class TrainParts:
    net: MobileNetV1  # the network itself (what is saved)
    step_model: nn.Module  # what a training step calls: DDP and/or compiled around ``net``
    ddp: Any  # DistributedDataParallel, or None with one process
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    amp_dtype: torch.dtype | None
    mult_adds: int
    params: int


def _backends(s: RunSettings) -> None:
    if s.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif s.device == "cuda":
        torch.backends.cudnn.benchmark = True
    if s.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def build_parts(s: RunSettings, model_config: MobileNetConfig, data: DeviceData, dist: Dist, device: torch.device,
                init: Callable[[MobileNetV1], None] | None, task: Any = None) -> TrainParts:
    """``init``: loads the --init weights into a new network (then BatchNorm is recalibrated on
    the training data); None when resuming or training from scratch. ``task``: its
    :meth:`~mobilenets.tasks.Task.build_model` may build the network instead (with its own init)."""
    _backends(s)
    torch.manual_seed(mix_seed(s.seed, "init"))
    built = task.build_model(s, device) if task is not None else None
    net = built if built is not None else MobileNetV1(model_config)
    if init is not None and built is None:
        init(net)
    if task is not None:
        task.init_head(net)
    net.to(device)
    if s.channels_last:
        net.to(memory_format=torch.channels_last)
    if init is not None and built is None:
        recalibrate_batchnorm(net, data.calibration_batches())

    report = cost(net, s.input_size)
    if s.qat:
        enable_fake_quant(net)
    if s.sync_bn and dist.world > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ddp = None
    step_model: nn.Module = net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(net, device_ids=[dist.local_rank] if s.device == "cuda" else None)
        step_model = ddp
    head = task.train_head(net) if built is not None else net.classifier
    groups = param_groups(net, s.weight_decay, wd_all=s.wd_all, head=head)
    return TrainParts(
        net=net, step_model=torch.compile(step_model) if s.compile else step_model, ddp=ddp,
        optimizer=make_optimizer(s.optimizer, groups, lr=s.lr, momentum=s.momentum, device=device),
        scaler=torch.amp.GradScaler(s.device, enabled=s.amp == "fp16"),
        ema=ModelEma(net, s.ema) if s.ema > 0 else None,
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.amp),
        mult_adds=int(report.mult_adds), params=int(report.params))


def load_init(net: MobileNetV1, sd: dict[str, torch.Tensor], info: dict[str, Any], class_names: list[str],
              source: Any) -> bool:
    """Body from the file; the classifier too when it already fits the data's classes (returned)."""
    own = net.state_dict()
    head = sd.get("classifier.weight")
    keep_head = (head is not None and tuple(head.shape) == tuple(own["classifier.weight"].shape)
                 and info.get("class_names") == class_names)
    body = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    missing = [k for k in own if not k.startswith("classifier.") and k not in body]
    if missing:
        raise ValueError(f"{source}: weights lack {missing[0]} ({len(missing)} tensors missing)")
    for k, v in body.items():
        if k not in own or tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"{source}: tensor {k} does not fit the model")
    if keep_head:
        body.update({k: v for k, v in sd.items() if k.startswith("classifier.")})
    net.load_state_dict(body, strict=False)
    return keep_head
