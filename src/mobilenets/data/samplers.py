"""Seeded, deterministic choices: class-balanced subsets and epoch permutations (pure functions of seed and epoch)."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from .._utils import seeded_generator


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training set in one epoch: a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=seeded_generator(seed, "epoch", epoch))


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of a fixed, seeded subset of ``n`` samples with (nearly) equal counts per class.

    Each class gets ``n // classes`` samples, the first ``n % classes`` classes of a seeded
    order one more; a class with too few gives all it has. Indices come back sorted.
    """
    if n <= 0:
        raise ValueError(f"a subset needs at least 1 image, got {n}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    classes = sorted(by_class)
    if n >= len(labels):
        return list(range(len(labels)))
    base, extra = divmod(n, len(classes))
    order = torch.randperm(len(classes), generator=seeded_generator(seed, "subset-classes")).tolist()
    bonus = {classes[i] for i in order[:extra]}
    chosen: list[int] = []
    for c in classes:
        members = by_class[c]
        take = min(len(members), base + (1 if c in bonus else 0))
        perm = torch.randperm(len(members), generator=seeded_generator(seed, "subset", c)).tolist()
        chosen.extend(members[j] for j in perm[:take])
    return sorted(chosen)
