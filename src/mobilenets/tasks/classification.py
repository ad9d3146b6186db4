"""Image classification: cross entropy with label smoothing, top-1 / top-5."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, Task, masked_mean
from .metrics import Sums, topk_correct

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Cross entropy (with the run's label smoothing) over the valid images of a batch; unreadable
    images (``valid`` False) count for nothing but ``skipped_images``. ``best.pt`` follows
    ``val_top1``; validation loss is plain cross entropy."""

    name = "classification"
    train_sums = ("loss_sum", "correct", "seen", "skipped")
    val_sums = ("loss_sum", "top1", "top5", "seen")
    best_metric = "val_top1"
    higher_is_better = True
    log_keys = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5")
    summary_keys = ("val_top1", "val_top5", "val_loss", "train_loss")

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing  # the engine sets the run's (--label-smoothing or the recipe's)

    def setup(self, settings: Any) -> None:
        self.label_smoothing = float(settings.label_smoothing)

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss (reduced by :meth:`train_step`, which masks unreadable images)."""
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction="none")

    def train_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        x, y, valid = batch
        logits = model(x)
        losses = self.criterion(logits.float(), y)
        correct = topk_correct(logits.detach(), y, (1,), valid)[0]
        if valid is None:
            sums["loss_sum"] += losses.detach().sum()
            sums["seen"] += y.shape[0]
        else:
            w = valid.to(losses.dtype)
            sums["loss_sum"] += (losses.detach() * w).sum()
            sums["seen"] += w.sum()
            sums["skipped"] += (~valid).sum()
        sums["correct"] += correct
        return {"loss": masked_mean(losses, valid), "output": logits}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        x, y, valid = batch
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="none").double()
        w = torch.ones_like(loss) if valid is None else valid.double()
        top1, top5 = topk_correct(logits, y, (1, 5), valid).unbind()
        sums.add(torch.stack([(loss * w).sum(), top1, top5, w.sum()]))
        return {"loss": loss, "output": logits}

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        seen = max(sums["seen"], 1.0)
        return {"train_loss": sums["loss_sum"] / seen, "train_top1": 100.0 * sums["correct"] / seen,
                "skipped_images": int(sums["skipped"])}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["seen"], 1.0)
        return {"val_loss": sums["loss_sum"] / n, "val_top1": 100.0 * sums["top1"] / n,
                "val_top5": 100.0 * sums["top5"] / n, "val_images": int(n)}

    def progress(self, sums: dict[str, float]) -> dict[str, str]:
        m = self.train_metrics(sums)
        return {"loss": f"{m['train_loss']:.3f}", "acc": f"{m['train_top1']:.1f}"}
