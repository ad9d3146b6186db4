"""The folder path: a DataLoader dataset that decodes, crops and resizes in workers; samplers that split an epoch's global batches between processes."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from .._utils import mix_seed
from .index import FolderIndex
from .preprocess import central_crop, load_image, resize_bilinear_legacy
from .samplers import epoch_permutation


class FolderDataset(torch.utils.data.Dataset):
    """Images of a :class:`FolderIndex` for a DataLoader.

    Training keys are ``(index, seed)`` pairs from :class:`EpochSampler`: the random crop and
    flip of a sample are seeded by them, so they do not depend on the worker that runs them.
    Training returns uint8 (3, R, R) (RandomResizedCrop + flip); evaluation returns float
    (3, R, R) in [0, 1] computed as :class:`~mobilenets.inference.Classifier` does (central
    crop, TF's bilinear resize), so the accuracy logged in training is what ``evaluate``
    reports. An unreadable image yields a zero image marked invalid; it is skipped and counted.
    """

    def __init__(self, index: FolderIndex, size: int, *, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                 eval_crop: float = 0.875) -> None:
        self.index = index
        self.size = size
        self.train = train
        self.crop_scale = crop_scale
        self.eval_crop = eval_crop

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, str | None]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        path, label = self.index.paths[i], self.index.labels[i]
        try:
            img = load_image(path)
        except ValueError:
            dtype = torch.uint8 if self.train else torch.float32
            return torch.zeros(3, self.size, self.size, dtype=dtype), label, str(path)
        if self.train:
            from torchvision.transforms.functional import (
                hflip,
                pil_to_tensor,
                resized_crop,
            )

            g = torch.Generator().manual_seed(seed)  # the sample's own stream, whichever worker runs it
            top, left, h, w = random_resized_crop_box(img.size, self.crop_scale, g)
            img = resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
            if torch.rand(1, generator=g).item() < 0.5:
                img = hflip(img)
            return pil_to_tensor(img), label, None
        array = np.asarray(img)
        if self.eval_crop < 1.0:
            array = central_crop(array, self.eval_crop)
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).to(torch.float32) / 255.0
        return resize_bilinear_legacy(x, self.size, self.size), label, None


def random_resized_crop_box(size: tuple[int, int], scale: tuple[float, float], g: torch.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an Inception-style random crop (torchvision's
    RandomResizedCrop rule: area fraction in ``scale``, log-uniform aspect ratio in ``ratio``,
    ten tries, then the central crop), drawn from ``g`` instead of the global RNG."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=g).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def collate_masked(batch: list[tuple[torch.Tensor, int, str | None]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Stack a batch; ``valid`` marks readable images, failures are listed by path."""
    x = torch.stack([b[0] for b in batch])
    y = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    valid = torch.tensor([b[2] is None for b in batch], dtype=torch.bool)
    return x, y, valid, [b[2] for b in batch if b[2] is not None]


class EpochSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of the epoch's permutation, from a given
    step on, as ``(index, augmentation seed)`` keys. Global batch ``s`` is
    ``perm[s·B : (s+1)·B]``; process ``r`` of ``W`` takes its ``r``-th contiguous slice."""

    def __init__(self, n: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    @property
    def steps(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return (self.steps - self.start_step) * (self.global_batch // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch).tolist()
        per = self.global_batch // self.world
        for s in range(self.start_step, self.steps):
            start = s * self.global_batch + self.rank * per
            for i in perm[start:start + per]:
                yield i, mix_seed(self.seed, "sample", self.epoch, i) & 0xFFFFFFFF


class ShardSampler(torch.utils.data.Sampler):
    """Process ``r``'s contiguous share of ``range(n)`` for evaluation (counts are summed)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        per = -(-n // world)
        self.indices = list(range(rank * per, min(n, (rank + 1) * per)))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def skipped_message(paths: Sequence[str], where: str) -> str:
    """One line naming the first unreadable files and the count."""
    head = ", ".join(paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"{where}: skipped {len(paths)} unreadable image(s): {head}{more}"
