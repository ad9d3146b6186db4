"""The training loop: build a run, fit it, one step at a time, and stop cleanly.

The engine owns everything that is not the task: settings, data order, model and optimizer,
AMP, gradient accumulation, DDP, clipping, EMA, checkpoints, resumption, signals and
divergence. What a batch means (its loss and metrics) is the :class:`mobilenets.tasks.Task`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import mix_seed
from ..data import skipped_message
from ..tasks import TASKS, Sums, Task
from .batches import Batch, device_data, load_data
from .build import build_parts, load_init
from .checkpoint import Checkpointer, RunState, finished_summary, previous_run
from .distributed import Dist, StopFlag, all_reduce, barrier, init_distributed
from .logger import RunLogger
from .recipes import lr_factor
from .settings import TrainConfig, check_config, check_finished, check_resume, resolve, run_notes

__all__ = ["TIME_KEYS", "Engine", "TrainingDiverged"]

TIME_KEYS = ("images_per_second", "epoch_time", "train_time", "val_time")  # differ between identical runs


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class Engine:
    """One run: ``Engine(config, task).run()`` builds it (or resumes it), fits it and returns the summary."""

    def __init__(self, cfg: TrainConfig, task: Task | None = None) -> None:
        check_config(cfg)
        self.cfg, self.task = cfg, task if task is not None else TASKS[cfg.task]()
        if cfg.arch is not None and self.task.name != "detection":
            raise ValueError(f"--arch {cfg.arch} is a detector; add --task detection")
        self.run_dir = Path(cfg.out)
        self.device_type = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device_type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu")
        self.dist = Dist()
        self.stop = StopFlag()

    def run(self) -> dict[str, Any]:
        wall_start = time.perf_counter()
        threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.dist = init_distributed(self.device_type)
        self.logger = RunLogger(self.dist, self.run_dir, verbose=self.cfg.verbose, progress=self.cfg.progress,
                                tensorboard=self.cfg.tensorboard)
        try:
            self.device = torch.device(f"cuda:{self.dist.local_rank}" if self.device_type == "cuda" else "cpu")
            with self.stop:
                return self._run(wall_start)
        finally:
            torch.set_num_threads(threads)
            if self.dist.owned:
                import torch.distributed as dist

                dist.destroy_process_group()

    # ------------------------------------------------------------------ build

    def _run(self, wall_start: float) -> dict[str, Any]:
        cfg, log = self.cfg, self.logger
        prev = previous_run(self.run_dir, cfg.resume, log.log)
        done = finished_summary(self.run_dir, prev)
        if done is not None:
            check_finished(cfg, prev, self.run_dir)
            key = self.task.best_metric.removeprefix("best_")
            log.log(f"{self.run_dir}: already finished ({done.get('epochs')} epochs, {key} "
                    f"{done.get(key, float('nan')):.2f}); nothing to do")
            return done
        if cfg.data is None:
            if prev is None:
                raise ValueError("give the training data (--data PATH)")
            self.cfg = cfg = dataclasses.replace(cfg, data=prev["settings"]["data"])
        task = self.task
        self.data = task.load_data(cfg, self.dist) or load_data(cfg.data, cfg.loader, cfg.subset, cfg.val_subset,
                                                                cfg.seed, self.dist)
        r = resolve(cfg, self.data, world=self.dist.world, device_type=self.device_type, task=task.name,
                    model=task.resolve_model, default_recipe=task.default_recipe, arch=getattr(task, "arch", None),
                    freeze_backbone=bool(getattr(task, "freeze_backbone", False)),
                    distill=getattr(task, "distill_settings", None))
        if prev is not None:
            check_resume(r.settings, prev, self.run_dir)
            if prev.get("class_names") != self.data.class_names:
                raise ValueError(f"--resume: the data's classes differ from those of the run in {self.run_dir}")
        self.s = s = r.settings
        self.model_config = r.model_config
        self.task.setup(s)
        self.batches = task.device_data(self.data, s, self.dist, self.device) or device_data(self.data, s, self.dist,
                                                                                             self.device)
        init = None
        if r.init_state is not None and prev is None:
            def init(net: nn.Module) -> None:
                kept = load_init(net, *r.init_state, self.data.class_names, cfg.init)
                log.note(f"initialized from {cfg.init} ({'all layers' if kept else 'new classifier'})")
        self.parts = build_parts(s, self.model_config, self.batches, self.dist, self.device, init, task=task)
        self.ckpt = Checkpointer(self.run_dir, s, self.model_config, self.data.class_names, cfg.to_dict(),
                                 save_weights=task.save_weights)
        self.check_every = 1 if self.device_type == "cpu" else 10  # a host sync; cheap on a CPU
        self.total_steps = s.epochs * s.steps_per_epoch
        self.warmup_steps = round(s.warmup_epochs * s.steps_per_epoch)
        if prev is not None:
            self.state = self.ckpt.restore(prev, self.parts, self.dist.main)
            where = f"epoch {self.state.start_epoch + 1}" + (f", step {self.state.start_step}"
                                                            if self.state.start_step else "")
            log.note(f"resuming {self.run_dir} at {where}")
        else:
            self.state = RunState()
        self.wall_start = wall_start
        return self._loop()

    def wall_seconds(self) -> float:
        return self.state.wall_before + time.perf_counter() - self.wall_start

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> dict[str, Any]:
        s, d, st, log = self.s, self.dist, self.state, self.logger
        log.open(st.start_epoch * s.steps_per_epoch + st.start_step)
        log.log(f"training {self.model_config.label} ({'small-input stem, ' if s.cifar_stem else ''}input "
                f"{s.input_size} px, {self.parts.mult_adds / 1e6:.1f} M Mult-Adds, {self.parts.params / 1e6:.2f} M "
                f"params) on {s.train_images} images, {len(self.data.class_names)} classes; recipe {s.recipe}, "
                f"{s.epochs} epochs, global batch {s.batch_size}, {s.optimizer} lr {s.lr:.4g} {s.schedule}, "
                f"{d.world} process(es) on {self.device_type}, {s.mode} input"
                + (", quantization-aware (int8 fake quantization)" if s.qat else "")
                + (f", task {self.task.name}" if self.task.name != "classification" else "")
                + "".join(f"; {note}" for note in run_notes(self.cfg, s)))
        if self.data.skipped:
            log.note(skipped_message(self.data.skipped, str(self.data.root)))
        status = "finished"
        try:
            for epoch in range(st.start_epoch, s.epochs):
                first = epoch == st.start_epoch
                if self._train_epoch(epoch, st.start_step if first else 0, st.partial if first else {}):
                    status = "interrupted"
                    break
                if epoch + 1 < s.epochs and self._stop_agreed():
                    log.note(f"stopped by {signal.Signals(self.stop.signum or signal.SIGTERM).name} after epoch "
                             f"{epoch + 1}; {self.ckpt.path} is saved, continue with --resume")
                    status = "interrupted"
                    break
        finally:
            log.close()
        summary = _summary(self, status)
        if status == "finished" and d.main:
            self.ckpt.write_summary(summary)
        barrier(d)
        return summary

    def _set_lr(self, step: int, epoch: int) -> float:
        s = self.s
        f = lr_factor(s.schedule, step, total_steps=self.total_steps, steps_per_epoch=s.steps_per_epoch,
                      warmup_steps=self.warmup_steps, decay_rate=s.decay_rate, decay_epochs=s.decay_epochs)
        lr = s.lr * f
        frozen = epoch < s.freeze_epochs
        for g in self.parts.optimizer.param_groups:
            g["lr"] = 0.0 if frozen and not g.get("head") else lr
        return lr

    def _train_epoch(self, epoch: int, start: int, partial: dict[str, float]) -> bool:
        """One epoch from step ``start`` (with the partial sums of a resumed epoch); True if stopped."""
        s, log = self.s, self.logger
        steps = s.steps_per_epoch
        # A frozen body (lr 0) still normalizes with batch statistics and updates its running
        # ones: they adapt to the new data, and nothing jumps when the body is unfrozen.
        self.parts.net.train()
        sums = Sums(self.task.train_sums, self.device, partial)  # this process's; summed at the end
        train_time = float(partial.get("train_time", 0.0))
        log.open_bar(steps, start, f"epoch {epoch + 1}/{s.epochs}")
        t0 = time.perf_counter()
        lr = s.lr
        try:
            for step, micro in self.batches.train_batches(epoch, start):
                lr = self._set_lr(epoch * steps + step, epoch)
                self._step(micro, sums, epoch, step)
                done = step + 1
                if done % self.check_every and done != steps:
                    log.advance()
                    continue
                bad, stop = self._check(sums)
                if bad:
                    raise self._diverged(epoch, step)
                log.advance(self.task.progress(sums.as_dict()) if log.wants_postfix(done, steps) else None)
                if log.writer is not None and done % 50 == 0:
                    log.running("train/loss_running", self.task.train_metrics(sums.as_dict())["train_loss"],
                                epoch * steps + done)
                if stop and done < steps:
                    self._sync()
                    self._stop_mid_epoch(epoch, done, sums, train_time + time.perf_counter() - t0)
                    return True
        finally:
            log.close_bar()
        self._sync()
        self._end_epoch(epoch, sums, train_time + time.perf_counter() - t0, lr)
        return False

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.parts.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.parts.amp_dtype)

    def _step(self, micro: list[Batch], sums: Sums, epoch: int, step: int) -> None:
        """One optimizer step over this process's micro-batches (DDP syncs on the last one)."""
        p, K = self.parts, len(micro)
        for j, batch in enumerate(micro):
            # Dropout draws from the global RNG: seed it per micro-batch of the global step, so
            # 1 process × K micro-batches and K processes see the same masks, and a resumed run
            # needs no RNG state.
            torch.manual_seed(mix_seed(self.s.seed, "dropout", epoch, step, self.dist.rank * K + j))
            sync = p.ddp.no_sync() if p.ddp is not None and j < K - 1 else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss = self.task.train_step(p.step_model, batch, sums)["loss"]
                p.scaler.scale(loss / K).backward()
        if self.s.grad_clip > 0:
            p.scaler.unscale_(p.optimizer)
            nn.utils.clip_grad_norm_(p.net.parameters(), self.s.grad_clip)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.optimizer.zero_grad(set_to_none=True)
        if p.ema is not None:
            p.ema.update(p.net)

    # ------------------------------------------------------------------ epoch end, evaluation

    def _end_epoch(self, epoch: int, sums: Sums, train_time: float, lr: float) -> None:
        """Evaluate, then checkpoint (then best.pt, metrics.jsonl, TensorBoard) on rank 0."""
        s, d, st, task = self.s, self.dist, self.state, self.task
        totals = sums.as_dict(self._reduce)
        if not all(math.isfinite(v) for v in totals.values()):
            raise self._diverged(epoch, s.steps_per_epoch - 1)
        t1 = time.perf_counter()
        val = self._evaluate()
        val_time = time.perf_counter() - t1
        if not all(math.isfinite(v) for v in val.values()) or not self._model_finite():
            raise self._diverged(epoch, s.steps_per_epoch - 1)
        metrics = {"epoch": epoch + 1, **task.train_metrics(totals), **val, "lr": lr,
                   "images_per_second": s.steps_per_epoch * s.batch_size / max(train_time, 1e-9),
                   "train_time": train_time, "val_time": val_time, "epoch_time": train_time + val_time}
        key = task.best_metric
        improved = task.improved(metrics[key], st.best.get(key))
        if improved:
            st.best = {key: metrics[key], "epoch": epoch + 1}
        metrics[f"best_{key}"] = st.best[key]
        st.history.append(metrics)
        st.partial = {}
        if d.main:
            self.ckpt.save(self.parts, st, epoch + 1, 0, "finished" if epoch + 1 == s.epochs else "running",
                           self.wall_seconds())
            if improved:
                self.ckpt.save_best(self.parts, st)
            self.ckpt.write_metrics(st.history)  # after the checkpoint: a line means its epoch is saved
        if metrics.get("skipped_images") and self.data.skipped:
            self.logger.note(skipped_message(self.data.skipped, f"epoch {epoch + 1}"))
        self.logger.epoch(metrics, task.log_keys, s.epochs, (epoch + 1) * s.steps_per_epoch)

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        module = self.ckpt.eval_module(self.parts)
        if self.dist.world > 1:  # every process evaluates with rank 0's BatchNorm statistics
            import torch.distributed as dist

            for b in module.buffers():
                dist.broadcast(b, 0)
        module.eval()
        sums = Sums(self.task.val_sums, self.device)
        for batch in self.batches.val_batches():
            with self._autocast():
                self.task.eval_step(module, batch, sums)
        return self.task.val_metrics(sums.as_dict(self._reduce))

    # ------------------------------------------------------------------ checks, stopping

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce(t, self.dist)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _model_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.parts.net.parameters())

    def _check(self, sums: Sums) -> tuple[bool, bool]:
        """(a sum not finite, stop requested), agreed by all processes."""
        flags = torch.stack([(~sums.finite()).to(torch.float32),
                             torch.tensor(float(self.stop.signum != 0), device=self.device)])
        all_reduce(flags, self.dist, op="max")
        bad, stop = flags.tolist()
        return bad > 0, stop > 0

    def _stop_agreed(self) -> bool:
        flag = torch.tensor([float(self.stop.signum != 0)], device=self.device)
        return float(all_reduce(flag, self.dist, op="max")) > 0

    def _diverged(self, epoch: int, step: int) -> TrainingDiverged:
        last = self.state.history[-1]["epoch"] if self.state.history else 0
        kept = (f"{self.ckpt.path} still holds the last good state (epoch {last})"
                if self.ckpt.path.is_file() else "no checkpoint was written")
        return TrainingDiverged(
            f"training diverged: the loss became NaN or infinite in epoch {epoch + 1} (by step {step + 1}); "
            f"nothing from that epoch was saved and {kept}. Lower --lr, add --warmup-epochs, or use --amp "
            "bf16/off, then run again (with --resume to continue from the checkpoint)")

    def _stop_mid_epoch(self, epoch: int, done: int, sums: Sums, train_time: float) -> None:
        """Save the position inside the epoch and its partial sums (over all processes)."""
        totals = sums.as_dict(self._reduce)
        if self.dist.main:
            if not self._model_finite():
                raise self._diverged(epoch, done - 1)
            self.ckpt.save(self.parts, self.state, epoch, done, "interrupted", self.wall_seconds(),
                           {**totals, "train_time": train_time})
        barrier(self.dist)
        name = signal.Signals(self.stop.signum).name if self.stop.signum else "signal"
        self.logger.note(f"stopped by {name} in epoch {epoch + 1} after step {done}/{self.s.steps_per_epoch}; "
                         f"{self.ckpt.path} is saved, continue with --resume")


def _summary(e: Engine, status: str) -> dict[str, Any]:
    """The summary of a run (``summary.json``); its keys beside the task's are the same for every task."""
    st, s, key = e.state, e.s, e.task.best_metric
    last = st.history[-1] if st.history else {}
    ips = [h["images_per_second"] for h in st.history]
    return {
        "status": status, "signal": signal.Signals(e.stop.signum).name if e.stop.signum else None,
        "epochs": len(st.history), "epochs_planned": s.epochs,
        **{k: last.get(k) for k in e.task.summary_keys},
        f"best_{key}": st.best[key] if st.history else None,
        "best_epoch": st.best["epoch"] if st.history else None,
        "mult_adds": e.parts.mult_adds, "params": e.parts.params,
        "unreadable_images": len(set(e.data.skipped)),  # skipped, this process's count
        "wall_seconds": e.wall_seconds(),
        "images_per_second": sum(ips) / len(ips) if ips else None,
        "model": e.model_config.label, "config": e.model_config.to_dict(),
        "input_size": s.input_size, "recipe": s.recipe, "num_classes": len(e.data.class_names),
        "run_dir": str(e.run_dir), "settings": s.to_dict(),
    }
