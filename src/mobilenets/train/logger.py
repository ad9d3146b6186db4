"""What a run tells its user: console lines, the progress bar, TensorBoard (rank 0 only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .distributed import Dist

__all__ = ["RunLogger"]


class RunLogger:
    """``log``: progress lines on stdout (``verbose``); ``note``: things to know, on stderr."""

    def __init__(self, dist: Dist, run_dir: Path, *, verbose: bool = True, progress: bool = True,
                 tensorboard: bool = True) -> None:
        self.dist, self.run_dir = dist, run_dir
        self.verbose, self.progress, self.tensorboard = verbose, progress, tensorboard
        self.writer: Any = None
        self.bar: Any = None

    def log(self, message: str) -> None:
        if self.dist.main and self.verbose:
            print(message, flush=True)

    def note(self, message: str) -> None:
        if self.dist.main:
            print(f"mobilenets train: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ TensorBoard

    def open(self, start_step: int) -> None:
        """Start TensorBoard at global step ``start_step`` (dropping what a lost run wrote after it)."""
        if not (self.tensorboard and self.dist.main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            return
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start_step or None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def running(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(name, value, step)

    def epoch(self, metrics: dict[str, Any], keys: tuple[str, ...], epochs: int, step: int) -> None:
        """An epoch's line, and its scalars (``train_loss`` as ``train/loss``, ...) in TensorBoard; a key the
        epoch does not have (e.g. ``val_top1`` of a distillation without labels) is left out."""
        keys = tuple(k for k in keys if k in metrics)
        if self.writer is not None:
            for k in (*keys, "lr", "images_per_second"):
                tag = k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k
                self.writer.add_scalar(tag, metrics[k], step)
            self.writer.flush()
        parts = [f"{k} {metrics[k]:.4f}" if "loss" in k else f"{k} {metrics[k]:.2f}" for k in keys]
        self.log(f"epoch {metrics['epoch']}/{epochs}  " + "  ".join(parts) + f"  lr {metrics['lr']:.4g}  "
                 f"{metrics['images_per_second']:.0f} img/s  {metrics['epoch_time']:.1f} s")

    # ------------------------------------------------------------------ progress bar

    def open_bar(self, total: int, initial: int, desc: str) -> None:
        self.bar = None
        if self.progress and self.dist.main and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def wants_postfix(self, done: int, total: int) -> bool:
        return self.bar is not None and (done % 10 == 0 or done == total)

    def advance(self, postfix: dict[str, str] | None = None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
