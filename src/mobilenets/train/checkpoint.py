"""A run's directory: its previous state, checkpoints (atomic), ``best.pt``, ``metrics.jsonl``,
``summary.json``.

``checkpoint.pt`` (written at every epoch end and on SIGTERM/SIGINT after the current step)
holds everything a resumed run needs, and is also a weights file
(:func:`mobilenets.load_pretrained`). A line in ``metrics.jsonl`` means its epoch is saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import atomic_write, error_line
from ..config import MobileNetConfig
from ..quant import fake_quant_ranges, load_fake_quant_ranges
from ..weights import save_checkpoint
from .distributed import rng_state, set_rng_state
from .settings import RunSettings

__all__ = ["Checkpointer", "RunState", "previous_run"]

_RUN_FORMATS = ("mobilenets", "mobilenets-detector")  # a classifier's run, a detector's (a task's own file)


@dataclass
class RunState:
    """Where a run is: the next epoch and step, the metrics so far, the best epoch, the partial
    sums of an interrupted epoch, and the wall time of earlier sessions."""

    start_epoch: int = 0
    start_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0})
    partial: dict[str, float] = field(default_factory=dict)
    wall_before: float = 0.0


def previous_run(run_dir: Path, resume: bool, log: Any) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` (with ``resume``), or None; refuses to overwrite a run."""
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        if resume:
            log(f"no checkpoint in {run_dir}: starting a new run")
        return None
    if not resume:
        raise ValueError(f"{run_dir} already holds a run (checkpoint.pt); add --resume to continue it "
                         "or choose another --out")
    try:
        prev = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
        raise ValueError(f"{ckpt}: unreadable checkpoint ({error_line(e, 100)}); "
                         "move it away to start over") from None
    if not isinstance(prev, dict) or prev.get("format") not in _RUN_FORMATS or "settings" not in prev:
        raise ValueError(f"{ckpt}: not a training checkpoint of mobilenets; choose another --out")
    return prev


class Checkpointer:
    """Saves and restores a run. ``parts`` has ``net``, ``ema`` (or None), ``optimizer``, ``scaler``."""

    def __init__(self, run_dir: Path, settings: RunSettings, model_config: MobileNetConfig,
                 class_names: list[str], train_config: dict[str, Any],
                 save_weights: Callable[[Path, nn.Module, dict[str, Any]], bool] | None = None) -> None:
        self.run_dir, self.s, self.model_config = run_dir, settings, model_config
        self.class_names, self.train_config = class_names, train_config
        self._save_weights = save_weights  # a task's own weights format (False: ours)

    def _write(self, path: Path, module: nn.Module, **extra: Any) -> None:
        if self._save_weights is None or not self._save_weights(path, module, extra):
            save_checkpoint(path, module, **extra)

    @property
    def path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @staticmethod
    def eval_module(parts: Any) -> nn.Module:
        return parts.ema.module if parts.ema is not None else parts.net

    def _weights_info(self) -> dict[str, Any]:
        s = self.s
        return {"config": self.model_config.to_dict(), "preprocess": s.preprocess, "class_names": self.class_names,
                "input_size": s.input_size}

    def save(self, parts: Any, state: RunState, epoch_done: int, step_in_epoch: int, status: str,
             wall_seconds: float, partial: dict[str, float] | None = None) -> None:
        """checkpoint.pt: everything to resume, loadable by :func:`mobilenets.load_pretrained`."""
        s = self.s
        step = epoch_done * s.steps_per_epoch + step_in_epoch
        extra: dict[str, Any] = {
            **self._weights_info(), "epoch": epoch_done, "step": step, "step_in_epoch": step_in_epoch,
            "status": status, "optimizer": parts.optimizer.state_dict(), "scaler": parts.scaler.state_dict(),
            "scheduler": {"schedule": s.schedule, "step": step},
            "ema": parts.ema.state_dict() if parts.ema is not None else None,
            "rng": rng_state(),
            "sampler": {"seed": s.seed, "epoch": epoch_done, "step_in_epoch": step_in_epoch,
                        "global_batch": s.batch_size},
            "best": state.best, "history": state.history, "partial": partial or {},
            "metrics": state.history[-1] if state.history else {},
            "settings": s.to_dict(), "train_config": self.train_config, "wall_seconds": wall_seconds,
        }
        if parts.ema is not None:
            extra["raw_model"] = {k: v.detach().cpu() for k, v in parts.net.state_dict().items()}
        if s.qat:
            extra["qat_ranges"] = fake_quant_ranges(parts.net)
        self._write(self.path, self.eval_module(parts), **extra)

    def save_best(self, parts: Any, state: RunState) -> None:
        self._write(self.run_dir / "best.pt", self.eval_module(parts), **self._weights_info(),
                        epoch=state.best["epoch"], metrics=state.history[-1], settings=self.s.to_dict())

    def restore(self, prev: dict[str, Any], parts: Any, main: bool) -> RunState:
        """Load a previous checkpoint into ``parts``; the state to continue from."""
        parts.net.load_state_dict(prev.get("raw_model", prev["model"]))
        if parts.ema is not None:
            parts.ema.module.load_state_dict(prev["model"])
            parts.ema.load_state_dict(prev.get("ema") or {})
        for module in (parts.net, parts.ema.module if parts.ema is not None else None):
            if module is not None and prev.get("qat_ranges"):
                load_fake_quant_ranges(module, prev["qat_ranges"])
        parts.optimizer.load_state_dict(prev["optimizer"])
        if prev.get("scaler"):
            parts.scaler.load_state_dict(prev["scaler"])
        state = RunState(int(prev["epoch"]), int(prev.get("step_in_epoch", 0)), list(prev.get("history", [])),
                         dict(prev.get("best", {"epoch": 0})), dict(prev.get("partial", {})) if main else {},
                         float(prev.get("wall_seconds", 0.0)))
        if state.start_step > 0 and "rng" in prev:
            set_rng_state(prev["rng"])
        if main:
            self.write_metrics(state.history)  # drop lines of work that was lost
        return state

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(h) + "\n" for h in history)
        atomic_write(self.run_dir / "metrics.jsonl", lambda tmp: Path(tmp).write_text(lines))

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.run_dir / "summary.json", lambda tmp: Path(tmp).write_text(text))


def finished_summary(run_dir: Path, prev: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary of a finished run, or None if the run is not finished."""
    if prev is None or prev.get("status") != "finished" or not (run_dir / "summary.json").is_file():
        return None
    return json.loads((run_dir / "summary.json").read_text())
