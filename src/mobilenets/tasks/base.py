"""The interface between the training engine and what it trains."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .metrics import Sums

__all__ = ["Task", "masked_mean"]

Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # input, target, valid mask (None: all)


def masked_mean(losses: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The mean of per-sample losses over the valid samples (all when ``valid`` is None)."""
    if valid is None:
        return losses.mean()
    w = valid.to(losses.dtype)
    return (losses * w).sum() / w.sum().clamp_min(1.0)


class Task:
    """What the engine trains. The engine owns the model, the optimizer, the data order, AMP,
    accumulation, DDP, checkpoints and resumption; a task turns a batch into a loss and keeps
    the metrics of an epoch in :class:`Sums` (which the engine sums over processes and stores in
    checkpoints, so a resumed epoch continues its sums).

    A subclass sets ``name`` (stored with the run: a run is not resumed with another task), the
    names of its sums, the metric that decides ``best.pt`` and which metrics are logged, and
    implements :meth:`train_step`, :meth:`eval_step`, :meth:`train_metrics`, :meth:`val_metrics`.
    ``train_metrics`` returns ``train_*`` keys (``train_loss`` at least), ``val_metrics``
    ``val_*`` keys; ``skipped_images`` counts unreadable images met in training.
    """

    name = "task"
    train_sums: tuple[str, ...] = ("loss_sum", "seen")
    val_sums: tuple[str, ...] = ("loss_sum", "seen")
    best_metric = "val_loss"
    higher_is_better = False
    log_keys: tuple[str, ...] = ("train_loss", "val_loss")  # the console line and TensorBoard
    summary_keys: tuple[str, ...] = ("val_loss", "train_loss")  # copied from the last epoch into the summary

    # The hooks below let a task bring its own data, model and weights file; each returns None
    # (or False) by default: the engine then does what it does for image classification.
    default_recipe: str | None = None  # the recipe when none is given (None: the engine's choice)

    def load_data(self, cfg: Any, dist: Any) -> Any | None:
        """The run's splits (an object with ``root``, ``class_names``, ``mode``, ``train``, ``val``,
        ``native_size``, ``skipped``), or None: the engine reads an image-classification folder."""
        return None

    def resolve_model(self, cfg: Any, data: Any) -> tuple[Any, Any, dict[str, Any], int, bool] | None:
        """``(MobileNetConfig of the body, classifier init state or None, preprocessing {"mean", "std"},
        input size, small-input stem)``, or None: the engine resolves a classifier from the options."""
        return None

    def device_data(self, data: Any, settings: Any, dist: Any, device: torch.device) -> Any | None:
        """The batches on the device (the engine's ``DeviceData`` interface), or None: the engine's."""
        return None

    def build_model(self, settings: Any, device: torch.device) -> nn.Module | None:
        """The network to train (on ``device``, with its initial weights), or None: a MobileNetV1."""
        return None

    def init_head(self, net: nn.Module) -> None:
        """Adjust a new network's initial weights from the data (e.g. a bias at the targets' mean);
        not called on resume, where the checkpoint's weights replace them."""

    def train_head(self, net: nn.Module) -> nn.Module | None:
        """The part of a task-built network that ``--freeze-epochs`` keeps training."""
        return None

    def save_weights(self, path: Any, module: nn.Module, extra: dict[str, Any]) -> bool:
        """Write a checkpoint or ``best.pt`` in the task's own weights format (``extra``: what the
        engine stores beside the weights); False: the engine's format (:func:`save_checkpoint`)."""
        return False

    def setup(self, settings: Any) -> None:
        """Called once with the run's resolved settings (:class:`mobilenets.train.RunSettings`)."""

    def train_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        """``{"loss": scalar to minimize, "output": the model's output}``; adds to ``sums``."""
        raise NotImplementedError

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        """Like :meth:`train_step` on a validation batch (under ``no_grad``, model in eval mode)."""
        raise NotImplementedError

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def progress(self, sums: dict[str, float]) -> dict[str, str]:
        """The progress bar's postfix for this process's running sums."""
        return {k.removeprefix("train_"): f"{v:.3f}" for k, v in self.train_metrics(sums).items()
                if k.startswith("train_")}

    def improved(self, value: float, best: float | None) -> bool:
        """Whether an epoch's ``best_metric`` beats the best so far (``None``: no epoch yet)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best
