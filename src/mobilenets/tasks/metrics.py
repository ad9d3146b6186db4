"""Metrics of a task: the one top-k count, and named sums that an epoch accumulates.

:func:`topk_correct` is how every part of the library counts top-1 / top-5 (training,
validation, :func:`mobilenets.inference.evaluate_dataset`). :class:`Sums` holds a task's
per-process sums as one float64 tensor, so the engine can sum it over processes in one
``all_reduce``, check it is finite, and store it in a checkpoint as a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

__all__ = ["Sums", "topk_correct"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5),
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """How many targets are among the ``k`` highest logits, for each ``k`` in ``ks`` (``k`` is capped
    at the number of classes); ``valid`` masks samples out. A float64 tensor of ``len(ks)`` counts."""
    ks = tuple(ks)
    kmax = min(max(ks), logits.shape[1])
    match = logits.topk(kmax, dim=1).indices == target[:, None]
    hits = torch.stack([match[:, :min(k, kmax)].any(dim=1) for k in ks], dim=1).double()
    if valid is not None:
        hits = hits * valid.double()[:, None]
    return hits.sum(dim=0)


class Sums:
    """Named sums of one process: ``sums["seen"] += n``; ``as_dict()`` for a checkpoint."""

    def __init__(self, names: Iterable[str], device: torch.device | str = "cpu",
                 start: dict[str, float] | None = None) -> None:
        self.names = tuple(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        start = start or {}
        self.tensor = torch.tensor([float(start.get(n, 0.0)) for n in self.names], dtype=torch.float64,
                                   device=device)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensor[self.index[name]]

    def __setitem__(self, name: str, value: torch.Tensor | float) -> None:
        self.tensor[self.index[name]] = value

    def add(self, values: torch.Tensor, names: Iterable[str] | None = None) -> None:
        """Add a tensor of values, one per name (all names when ``names`` is None)."""
        if names is None:
            self.tensor += values
        else:
            for i, n in enumerate(names):
                self.tensor[self.index[n]] += values[i]

    def finite(self) -> torch.Tensor:
        return torch.isfinite(self.tensor).all()

    def as_dict(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """The sums as floats; with ``reduce`` (e.g. a sum over processes) applied to a copy first."""
        t = self.tensor.clone() if reduce is None else reduce(self.tensor.clone())
        return dict(zip(self.names, t.tolist()))
