"""A run's data on the device: decoded tensors or a DataLoader, behind one interface.

:func:`load_data` reads the splits once; :func:`device_data` returns the :class:`DeviceData` that
yields, on the device and normalized, the training batches of a step ``(epoch, step)`` (this
process's micro-batches), the validation batches (this process's shard) and the calibration
batches (the first training images, unaugmented). A batch is ``(input, target, valid)``:
``valid`` masks unreadable images, ``None`` when all are readable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data import (
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
    to_input,
)
from .distributed import Dist, barrier

__all__ = ["Batch", "DeviceData", "RunData", "device_data", "load_data"]

Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]  # input, target, valid mask (None: all)


@dataclass
class RunData:
    root: Path
    class_names: list[str]
    mode: str  # "tensor" or "folder"
    train: TensorSplit | FolderIndex
    val: TensorSplit | FolderIndex
    native_size: int | None
    skipped: list[str] = field(default_factory=list)


def load_data(path: Any, loader: str, subset: int | None, val_subset: int | None, seed: int, dist: Dist) -> RunData:
    """The train and val splits. The first process of each node extracts archives and writes
    decode caches; the others then find them there."""
    first = dist.local_rank == 0
    if not first:
        barrier(dist)
    data = _load_once(path, loader, subset, val_subset, seed)
    if first:
        barrier(dist)
    return data


def _load_once(path: Any, loader: str, subset: int | None, val_subset: int | None, seed: int) -> RunData:
    source = open_data(path, loader)
    root = source.root
    train_index = source.index("train")
    names = train_index.class_names
    val_index = source.index("val", names)
    if subset:
        train_index = train_index.subset(balanced_subset(train_index.labels, subset, seed))
    if val_subset:
        val_index = val_index.subset(balanced_subset(val_index.labels, val_subset, seed))
    mode = choose_loader(train_index, loader)
    if mode == "folder":
        return RunData(root, names, mode, train_index, val_index, None)
    train, val = load_tensor_splits([train_index, val_index])
    if val.size != train.size:
        val = TensorSplit(F.interpolate(val.images.float(), size=(train.size, train.size), mode="bilinear",
                                        antialias=True).round().clamp(0, 255).to(torch.uint8),
                          val.labels, val.skipped)
    skipped = train.skipped + val.skipped
    if len(train) == 0:
        raise ValueError(f"{root}/train: no readable image")
    return RunData(root, names, mode, train, val, train.size, skipped)


class DeviceData:
    """Batches on the device, normalized: the same for decoded tensors and a DataLoader."""

    def __init__(self, data: RunData, s: Any, dist: Dist, device: torch.device) -> None:
        self.data, self.s, self.dist, self.device = data, s, dist, device
        pre = s.preprocess
        self.mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)
        self.eval_batch = max(64, min(1024, 2 * s.world_batch))

    @property
    def skipped(self) -> list[str]:
        """Unreadable images met so far (by this process)."""
        return self.data.skipped

    def _input(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return to_input(x, self.mean, self.std, size=size, channels_last=self.s.channels_last)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[int, list[Batch]]]:
        """Per step from ``start``: this process's ``accum_steps`` micro-batches."""
        raise NotImplementedError

    def val_batches(self) -> Iterator[Batch]:
        raise NotImplementedError

    def calibration_batches(self, n: int = 512, batch: int = 128) -> Iterator[torch.Tensor]:
        """The first ``n`` training images (no augmentation), for :func:`recalibrate_batchnorm`."""
        raise NotImplementedError


class TensorData(DeviceData):
    """Small images decoded once into uint8 tensors on the device; augmentation on the device."""

    def __init__(self, data: RunData, s: Any, dist: Dist, device: torch.device) -> None:
        super().__init__(data, s, dist, device)
        self.train = data.train.to(device)
        self.val = data.val.to(device)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[int, list[Batch]]]:
        s, d = self.s, self.dist
        B, K, per = s.batch_size, s.accum_steps, s.world_batch
        m = per // K
        perm = epoch_permutation(len(self.train), s.seed, epoch).to(self.device)
        for step in range(start, s.steps_per_epoch):
            params = augment_params(B, s.input_size, s.pad, s.cutout, seed=s.seed, epoch=epoch, step=step)
            params = params.slice(d.rank * per, (d.rank + 1) * per).to(self.device)
            idx = perm[step * B + d.rank * per: step * B + (d.rank + 1) * per]
            x = self._input(crop_flip(self.train.images[idx], params, s.pad), s.input_size)
            if s.cutout:
                cutout_(x, params, s.cutout)
            y = self.train.labels[idx]
            yield step, [(x[j * m:(j + 1) * m], y[j * m:(j + 1) * m], None) for j in range(K)]

    def val_batches(self) -> Iterator[Batch]:
        n, d = len(self.val), self.dist
        per = -(-n // d.world)
        lo, hi = d.rank * per, min(n, (d.rank + 1) * per)
        for i in range(lo, hi, self.eval_batch):
            j = min(hi, i + self.eval_batch)
            yield self._input(self.val.images[i:j], self.s.input_size), self.val.labels[i:j], None

    def calibration_batches(self, n: int = 512, batch: int = 128) -> Iterator[torch.Tensor]:
        images = self.data.train.images
        for i in range(0, min(n, len(images)), batch):
            yield self._input(images[i:i + batch].to(self.device), self.s.input_size)


class LoaderData(DeviceData):
    """Image files decoded by DataLoader workers; the sampler makes the order (seed, epoch, step)'s."""

    def __init__(self, data: RunData, s: Any, dist: Dist, device: torch.device) -> None:
        super().__init__(data, s, dist, device)
        kw: dict[str, Any] = {"num_workers": s.workers, "pin_memory": device.type == "cuda",
                              "collate_fn": collate_masked}
        if s.workers > 0:
            kw.update(persistent_workers=True, prefetch_factor=4)
        train_ds = FolderDataset(data.train, s.input_size, train=True, crop_scale=tuple(s.crop_scale))
        self.sampler = EpochSampler(len(train_ds), s.batch_size, seed=s.seed, rank=dist.rank, world=dist.world)
        micro = s.batch_size // dist.world // s.accum_steps
        self.train_loader = torch.utils.data.DataLoader(train_ds, batch_size=micro, sampler=self.sampler, **kw)
        val_ds = FolderDataset(data.val, s.input_size, train=False, eval_crop=s.eval_crop)
        self.val_loader = torch.utils.data.DataLoader(val_ds, batch_size=self.eval_batch,
                                                      sampler=ShardSampler(len(val_ds), dist.rank, dist.world), **kw)

    def _batch(self, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, failed: list[str]) -> Batch:
        if failed:
            self.data.skipped.extend(failed)
        mask = None if bool(valid.all()) else valid.to(self.device, non_blocking=True)
        return self._input(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True), mask

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[int, list[Batch]]]:
        self.sampler.set_epoch(epoch, start)
        it = iter(self.train_loader)
        for step in range(start, self.s.steps_per_epoch):
            yield step, [self._batch(*next(it)) for _ in range(self.s.accum_steps)]

    def val_batches(self) -> Iterator[Batch]:
        for x, y, valid, failed in self.val_loader:
            yield self._batch(x, y, valid, failed)

    def calibration_batches(self, n: int = 512, batch: int = 128) -> Iterator[torch.Tensor]:
        ds = FolderDataset(self.data.train, self.s.input_size, train=False, eval_crop=self.s.eval_crop)
        for i in range(0, min(n, len(ds)), batch):
            x, _, valid, _ = collate_masked([ds[j] for j in range(i, min(i + batch, len(ds)))])
            yield self._input(x[valid].to(self.device))


def device_data(data: RunData, s: Any, dist: Dist, device: torch.device) -> DeviceData:
    """The :class:`DeviceData` for the run's input mode (``s.mode``)."""
    return (TensorData if s.mode == "tensor" else LoaderData)(data, s, dist, device)
