"""Metrics of a task: the one top-k count, and named sums that an epoch accumulates.

:func:`topk_correct` is how every part of the library counts top-1 / top-5 (training,
validation, :func:`mobilenets.inference.evaluate_dataset`). :class:`Sums` holds a task's
per-process sums as one float64 tensor, so the engine can sum it over processes in one
``all_reduce``, check it is finite, and store it in a checkpoint as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

__all__ = ["Sums", "agreement_count", "cosine_sum", "knn_accuracy", "linear_probe_accuracy", "mean_average_precision",
           "tar_at_far", "topk_correct"]


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


# ----------------------------------------------------------------------------- distillation metrics

def agreement_count(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """How many samples the student's top-1 class equals the teacher's (float64 scalar)."""
    same = (student.argmax(dim=1) == teacher.argmax(dim=1)).double()
    return (same * valid.double()).sum() if valid is not None else same.sum()


def cosine_sum(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The sum over samples of the cosine similarity of two (N, D) embeddings (float64 scalar)."""
    c = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
    return (c * valid.double()).sum() if valid is not None else c.sum()


def knn_accuracy(train_emb: torch.Tensor, train_labels: torch.Tensor, test_emb: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 (%) of a weighted k-NN classifier on cosine similarity (the usual protocol for
    judging embeddings without training: Wu et al. 2018): each of the ``k`` nearest training
    embeddings votes for its label with weight ``exp(cos / temperature)``."""
    a = torch.nn.functional.normalize(train_emb.float(), dim=1)
    b = torch.nn.functional.normalize(test_emb.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, a.shape[0])
    correct = 0
    for i in range(0, b.shape[0], 1024):
        sim = b[i:i + 1024] @ a.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], n_classes)
        votes.scatter_add_(1, train_labels[idx].long(), (top / temperature).exp())
        correct += int((votes.argmax(dim=1) == test_labels[i:i + 1024]).sum())
    return 100.0 * correct / max(1, b.shape[0])


def linear_probe_accuracy(train_emb: torch.Tensor, train_labels: torch.Tensor, test_emb: torch.Tensor,
                          test_labels: torch.Tensor, c: float = 1.0) -> float:
    """Top-1 (%) of a logistic regression (scikit-learn, L-BFGS) fitted on standardized training
    embeddings: how linearly separable the classes are in the embedding."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_emb.double().numpy())
    clf = LogisticRegression(C=c, max_iter=1000)
    clf.fit(scaler.transform(train_emb.double().numpy()), train_labels.numpy())
    pred = clf.predict(scaler.transform(test_emb.double().numpy()))
    return 100.0 * float((pred == test_labels.numpy()).mean())


def tar_at_far(emb: torch.Tensor, labels: torch.Tensor, far: float = 1e-4, block: int = 2048) -> dict[str, float]:
    """Verification rate at a false-accept rate over **all pairs** of a labelled set (FaceNet's
    "VAL at FAR", the paper's Table 14 "1e-4 accuracy"): the threshold is the cosine similarity
    that ``far`` of the different-identity pairs exceed; TAR is the share of same-identity pairs
    above it. Exact: the highest impostor scores are kept block by block, never all pairs at once.
    Returns ``{"tar", "far", "threshold", "genuine_pairs", "impostor_pairs"}``."""
    x = torch.nn.functional.normalize(emb.float(), dim=1)
    y = labels.long()
    n = x.shape[0]
    counts = torch.bincount(y)
    genuine_n = int((counts * (counts - 1) // 2).sum())
    impostor_n = n * (n - 1) // 2 - genuine_n
    if genuine_n == 0 or impostor_n == 0:
        raise ValueError("TAR at FAR needs at least two images of one identity and two identities")
    keep = math.floor(far * impostor_n)  # impostor pairs allowed above the threshold (may be 0)
    top = torch.empty(0)
    genuine = []
    for i in range(0, n, block):
        sim = x[i:i + block] @ x.T
        rows = torch.arange(i, min(n, i + block))[:, None]
        upper = torch.arange(n)[None, :] > rows  # each pair once
        same = y[i:i + block, None] == y[None, :]
        genuine.append(sim[upper & same])
        imp = sim[upper & ~same]
        top = torch.cat([top, imp]).topk(min(keep + 1, top.numel() + imp.numel())).values
    gen = torch.cat(genuine)
    # the threshold: accept scores strictly above the (keep+1)-th highest impostor score
    threshold = float(top[keep]) if top.numel() > keep else float(top[-1]) - 1e-12
    accepted = int((top > threshold).sum())
    return {"tar": float((gen > threshold).double().mean()), "far": accepted / impostor_n, "threshold": threshold,
            "genuine_pairs": genuine_n, "impostor_pairs": impostor_n}


def mean_average_precision(scores: torch.Tensor | Any, targets: torch.Tensor | Any) -> float:
    """Mean over classes of average precision (scikit-learn's ``average_precision_score``, the
    area under the precision-recall step curve), for multi-label (N, C) scores and 0/1 targets.
    Classes without a positive sample are left out (their AP is undefined)."""
    from sklearn.metrics import average_precision_score

    s = np.asarray(scores.detach().cpu().double() if isinstance(scores, torch.Tensor) else scores, np.float64)
    t = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets) > 0.5
    present = t.any(axis=0)
    if not present.any():
        raise ValueError("mean AP needs at least one positive label")
    return float(average_precision_score(t[:, present], s[:, present], average="macro"))
