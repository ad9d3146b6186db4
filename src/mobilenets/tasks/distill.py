"""Distillation through the training engine: logit KD, embedding distillation, multi-label.

Each loss is a :class:`~.base.Task` (``TrainConfig(task="kd" | "embedding" | "multilabel",
teacher=...)``, ``mobilenets distill --loss ...``); the loop, checkpoints, resumption, DDP, EMA
and AMP are the engine's, unchanged.

**Data**: any images (:func:`mobilenets.data.images.open_images`: labelled or not, several
sources combined), decoded once into ``uint8`` tensors at the student's input size and kept on
the device (the engine's tensor path: augmentation is the device's random crop and flip).
Validation: ``val_data``, else the sources' val/test split, else a seeded tenth of the images.

**The teacher cache**: the teacher sees each image once, unaugmented, in its own view
(:class:`~.teachers.Teacher`), before training starts; its outputs stay on the device and are
written to ``RUN/teacher_outputs.pt`` keyed by image and teacher, so a resumed or repeated run
does not run the teacher again. A distillation step then costs what a plain training step
costs. The cache applies because the teacher's input is not augmented; with
``teacher_cache=False`` the teacher runs every step on the student's augmented batch (resized
to its size and normalized its way), which costs a teacher forward per image per epoch.

Labels (``labels``): "teacher" (distillation only), "gt" (ground truth only), "both"
(default when the data's labels fit the teacher's classes, else "teacher").
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import atomic_write, seeded_generator
from ..config import MobileNetConfig
from ..data import TensorSplit, balanced_subset
from ..data.images import ImageSet, View, iter_decoded, open_images
from ..weights import read_weights, save_checkpoint
from .base import Batch, Task
from .metrics import Sums, agreement_count, cosine_sum, mean_average_precision, topk_correct
from .teachers import Teacher, load_teacher

__all__ = ["DISTILL_LOSSES", "DistillRunData", "DistillationTask", "EmbeddingDistillationTask",
           "LogitDistillationTask", "MultiLabelTask", "embedding_loss", "kd_loss", "multilabel_loss"]

CACHE_FILE = "teacher_outputs.pt"
LABEL_MODES = ("teacher", "gt", "both")


# ----------------------------------------------------------------------------- the losses (per sample)

def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0,
            target: torch.Tensor | None = None, alpha: float = 0.9) -> torch.Tensor:
    """Hinton et al. 2015, per sample: ``(1 − a)·CE(s, y) + a·T²·KL(softmax(t/T) ‖ softmax(s/T))``;
    without ``target`` the KL term alone (``a`` = 1)."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1) * (t * t)
    if target is None:
        return kl
    return (1.0 - alpha) * F.cross_entropy(student.float(), target, reduction="none") + alpha * kl


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """The paper's FaceNet distillation, per sample: the squared L2 distance ``‖s − t‖²`` between
    the student's and the teacher's embeddings (both L2-normalized first with ``normalize``:
    then ``2 − 2·cos``)."""
    s, t = student.float(), teacher.float()
    if normalize:
        s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
    return (s - t).pow(2).sum(dim=1)


def multilabel_loss(student: torch.Tensor, teacher: torch.Tensor | None = None, target: torch.Tensor | None = None,
                    alpha: float = 0.5) -> torch.Tensor:
    """Per sample, the mean over classes of binary cross entropy of the student's sigmoid against
    the teacher's scores and/or the 0/1 ground truth: ``(1 − a)·BCE(s, y) + a·BCE(s, p)`` with both."""
    s = student.float()
    bce = lambda y: F.binary_cross_entropy_with_logits(s, y.float(), reduction="none").mean(dim=1)
    if teacher is None and target is None:
        raise ValueError("the multi-label loss needs the teacher's scores, the labels or both")
    if teacher is None:
        return bce(target)
    if target is None:
        return bce(teacher)
    return (1.0 - alpha) * bce(target) + alpha * bce(teacher)


# ----------------------------------------------------------------------------- the run's data

@dataclass
class DistillRunData:
    """A distillation run's images (``uint8`` at the student's size; a split's ``labels`` are the
    image indices, which the task maps to teacher outputs and ground truth), with the fields the
    engine reads of a run's data."""

    root: Path
    class_names: list[str]
    train: TensorSplit
    val: TensorSplit
    native_size: int
    mode: str = "tensor"
    skipped: list[str] = field(default_factory=list)


def _barrier(dist: Any) -> None:
    if getattr(dist, "world", 1) > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _say(cfg: Any, text: str) -> None:
    if getattr(cfg, "verbose", True):
        print(text, file=sys.stderr, flush=True)


class DistillationTask(Task):
    """What the three distillation losses share: the teacher, the data, its cache, the student."""

    name = "distill"
    loss = "kd"
    default_recipe = "distill"

    def __init__(self, teacher: Any = None, **teacher_kw: Any) -> None:
        self._given_teacher = teacher
        self._teacher_kw = teacher_kw
        self.teacher: Teacher | None = None
        self.temperature, self.alpha, self.normalize, self.cached = 4.0, 0.9, False, True
        self.label_mode = "teacher"
        self.targets: dict[str, torch.Tensor | None] = {}  # "train"/"val" teacher outputs; "train_gt"/"val_gt"
        self.out_dim = 0
        self.distill_settings: dict[str, Any] = {}
        self.teacher_seconds = 0.0

    # ---------------------------------------------------------------- data and teacher

    def _teacher(self, cfg: Any) -> Teacher:
        source = self._given_teacher if self._given_teacher is not None else cfg.teacher
        if source is None:
            raise ValueError("give the teacher (--teacher FILE: a classifier, an embedding extractor or a detector)")
        return load_teacher(source, loss=self.loss, **self._teacher_kw)

    def _fits_labels(self, images: ImageSet, teacher: Teacher) -> bool:
        """Whether the data's labels are over the classes the student learns (the teacher's)."""
        if self.loss == "kd":
            return images.labels is not None and list(images.class_names) == list(teacher.class_names)
        if self.loss == "multilabel":
            return images.multilabels is not None and list(images.class_names) == list(teacher.class_names)
        return False

    def load_data(self, cfg: Any, dist: Any) -> DistillRunData:
        if getattr(dist, "local_rank", 0) != 0:
            _barrier(dist)  # the first process computes the teacher's outputs and writes the cache
        try:
            return self._load(cfg)
        finally:
            if getattr(dist, "local_rank", 0) == 0:
                _barrier(dist)

    def _load(self, cfg: Any) -> DistillRunData:
        teacher = self.teacher = self._teacher(cfg)
        if cfg.data is None:
            raise ValueError("give the images to distill on (--data PATH ...)")
        sources = [cfg.data] if isinstance(cfg.data, (str, Path)) else list(cfg.data)
        train = open_images(sources, "train")
        assert train is not None
        val = None
        if cfg.val_data is not None:
            val = open_images(cfg.val_data, "val", required=False) or open_images(cfg.val_data, "train")
        elif any(_has_val(s) for s in sources):
            val = open_images([s for s in sources if _has_val(s)], "val", required=False)
        if val is None:  # a seeded tenth of the images (at most 1000) is held out
            n = len(train)
            if n < 2:
                raise ValueError(f"{sources[0]}: one image cannot be split into training and validation; "
                                 "add images or give --val-data")
            perm = torch.randperm(n, generator=seeded_generator(cfg.seed, "holdout")).tolist()
            k = max(1, min(1000, n // 10))
            val, train = train.subset(sorted(perm[:k])), train.subset(sorted(perm[k:]))
        if cfg.subset:
            train = train.subset(_subset(train, cfg.subset, cfg.seed))
        if cfg.val_subset:
            val = val.subset(_subset(val, cfg.val_subset, cfg.seed))
        fits = self._fits_labels(train, teacher)
        mode = cfg.labels or ("both" if fits else "teacher")
        if mode not in LABEL_MODES:
            raise ValueError(f"unknown --labels {mode!r}; choose one of: {', '.join(LABEL_MODES)}")
        if mode != "teacher" and self.loss == "embedding":
            raise ValueError("--loss embedding learns from the teacher only; drop --labels")
        if mode != "teacher" and not fits:
            have = {"single": f"{len(train.class_names)} class folders", "multi": f"{len(train.class_names)} "
                    "multi-label classes", "none": "no labels"}[train.label_kind]
            raise ValueError(f"--labels {mode} needs labels over the teacher's {len(teacher.class_names)} classes, "
                             f"but the data has {have}; use --labels teacher")
        self.label_mode = mode
        size = int(cfg.input_size or cfg.resolution or teacher.input_size)
        if size < 8:
            raise ValueError(f"the student's input must be at least 8 px, got {size}")
        self.cached = bool(getattr(cfg, "teacher_cache", True))
        out = Path(cfg.out) if cfg.out is not None else None
        tr_images, tr_out, tr_skip = self._prepare(train, size, teacher, out, cfg, "train", need=self.cached)
        va_images, va_out, va_skip = self._prepare(val, size, teacher, out, cfg, "val", need=True)
        self.targets = {"train": tr_out, "val": va_out, "train_gt": _gt(train, tr_skip, mode, fits),
                        "val_gt": _gt(val, va_skip, "gt", _labels_fit(val, teacher, self.loss))}
        self.out_dim = teacher.output_dim
        self.distill_settings = {
            "teacher": teacher.source, "teacher_id": teacher.identity, "loss": self.loss,
            "temperature": float(cfg.temperature if cfg.temperature is not None else 4.0),
            "alpha": float(cfg.alpha if cfg.alpha is not None else (0.9 if self.loss == "kd" else 0.5)),
            "labels": mode, "normalize": bool(cfg.normalize), "teacher_cache": self.cached,
            "val_data": str(cfg.val_data) if cfg.val_data is not None else None}
        names = list(teacher.class_names) if self.loss != "embedding" else []
        skipped = [train.describe(i) for i in tr_skip] + [val.describe(i) for i in va_skip]
        root = Path(str(sources[0]))
        if len(tr_images) == 0:
            raise ValueError(f"{root}: no readable image")
        self.run_data = DistillRunData(root, names, tr_images, va_images, size, skipped=skipped)
        return self.run_data

    def _prepare(self, images: ImageSet, size: int, teacher: Teacher, out: Path | None, cfg: Any, split: str,
                 need: bool) -> tuple[TensorSplit, torch.Tensor | None, list[int]]:
        """Decode ``images`` at the student's size and (``need``) the teacher's outputs for them, from
        the cache file where it has them; unreadable images are left out."""
        cache = _read_cache(out, teacher.identity) if need else {}
        rows = [cache.get(k) for k in images.keys]
        missing = need and any(r is None for r in rows)
        views = [View(size)] + ([teacher.view] if missing else [])
        n = len(images)
        student = torch.zeros((n, 3, size, size), dtype=torch.uint8)
        outputs = torch.zeros((n, teacher.output_dim)) if need else None
        ok = torch.zeros(n, dtype=torch.bool)
        bar = _bar(cfg, n, f"{split} images" + (" + teacher" if missing else ""))
        t0 = time.perf_counter()
        for lo, views_out, good in iter_decoded(images, views):
            hi = lo + good.shape[0]
            student[lo:hi] = views_out[0]
            ok[lo:hi] = good
            if outputs is not None:
                todo = [j for j in range(hi - lo) if rows[lo + j] is None and bool(good[j])]
                if todo:
                    outputs[[lo + j for j in todo]] = teacher.run_uint8(views_out[1][todo]).cpu()
                for j in range(hi - lo):
                    if rows[lo + j] is not None:
                        outputs[lo + j] = rows[lo + j]
            bar.update(hi - lo)
        bar.close()
        if missing:
            self.teacher_seconds += time.perf_counter() - t0
            fresh = {k: outputs[i] for i, k in enumerate(images.keys) if bool(ok[i])}  # type: ignore[index]
            _write_cache(out, teacher.identity, {**cache, **fresh})
            _say(cfg, f"teacher {Path(teacher.source).name}: {int(ok.sum())} {split} images in "
                      f"{time.perf_counter() - t0:.1f} s ({sum(r is not None for r in rows)} from the cache)")
        keep = ok.nonzero().squeeze(1)
        skipped = (~ok).nonzero().squeeze(1).tolist()
        split_data = TensorSplit(student[keep], torch.arange(len(keep)), [images.describe(i) for i in skipped])
        return split_data, (outputs[keep] if outputs is not None else None), skipped

    def resolve_model(self, cfg: Any, data: Any) -> tuple[MobileNetConfig, Any, dict[str, Any], int, bool]:
        assert self.teacher is not None
        size = int(data.native_size)
        init_state = None
        if cfg.init is not None:
            base, sd, info = read_weights(cfg.init)
            init_state = (sd, info)
        else:
            base = cfg.model or MobileNetConfig()
            if cfg.width is not None:
                base = base.replace(width_multiplier=cfg.width)
        cifar_stem = bool(cfg.cifar_stem if cfg.cifar_stem is not None else size < 64)
        num_classes = self.out_dim  # embedding: a learned projection, even when the widths match (init_head)
        config = base.replace(resolution=max(32, size), num_classes=num_classes, cifar_stem=cifar_stem)
        pre = {"mean": list(self.teacher.preprocess["mean"]), "std": list(self.teacher.preprocess["std"])}
        return config, init_state, pre, size, cifar_stem

    def setup(self, settings: Any) -> None:
        d = settings.distill or self.distill_settings
        self.temperature, self.alpha = float(d["temperature"]), float(d["alpha"])
        self.normalize = bool(d["normalize"])
        self.preprocess = settings.preprocess
        self._device_targets: dict[str, torch.Tensor | None] = {}

    def _t(self, key: str, device: torch.device) -> torch.Tensor | None:
        got = self._device_targets.get(key)
        if got is None and self.targets.get(key) is not None:
            got = self._device_targets[key] = self.targets[key].to(device)  # type: ignore[union-attr]
        return got

    def _teacher_out(self, x: torch.Tensor, idx: torch.Tensor, split: str) -> torch.Tensor:
        if split == "val" or self.cached:
            return self._t(split, x.device)[idx]  # type: ignore[index]
        assert self.teacher is not None  # no cache: the teacher sees the student's augmented batch
        mean = torch.tensor(self.preprocess["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["std"], device=x.device).view(1, 3, 1, 1)
        return self.teacher((x.float() * std + mean).clamp(0, 1)).to(x.device)

    def _gt(self, split: str, idx: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        t = self._t(f"{split}_gt", device)
        return None if t is None else t[idx]

    # ---------------------------------------------------------------- the step (subclasses: _losses, metrics)

    def train_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        x, idx, _ = batch
        out = model(x)
        teacher = self._teacher_out(x, idx, "train")
        gt = self._gt("train", idx, x.device) if self.label_mode != "teacher" else None
        losses = self._losses(out, teacher, gt)
        self._count(sums, out.detach().float(), teacher, gt, losses.detach(), train=True)
        return {"loss": losses.mean(), "output": out}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Batch, sums: Sums) -> dict[str, torch.Tensor]:
        x, idx, _ = batch
        out = model(x).float()
        teacher = self._teacher_out(x, idx, "val")
        gt = self._gt("val", idx, x.device) if self.label_mode != "teacher" else None
        losses = self._losses(out, teacher, gt)
        self._count(sums, out, teacher, self._gt("val", idx, x.device), losses, train=False)
        return {"loss": losses, "output": out}

    def _losses(self, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _count(self, sums: Sums, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None,
               losses: torch.Tensor, train: bool) -> None:
        raise NotImplementedError


def _space(e: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Embeddings in the space the loss compares them in."""
    return F.normalize(e, dim=1) if normalize else e


def _has_val(source: Any) -> bool:
    try:
        return open_images(source, "val", required=False) is not None
    except ValueError:
        return False


def _subset(images: ImageSet, n: int, seed: int) -> list[int]:
    if images.labels is not None:
        return balanced_subset(images.labels.tolist(), n, seed)
    if n >= len(images):
        return list(range(len(images)))
    return sorted(torch.randperm(len(images), generator=seeded_generator(seed, "subset")).tolist()[:n])


def _labels_fit(images: ImageSet, teacher: Teacher, loss: str) -> bool:
    if loss == "kd":
        return images.labels is not None and list(images.class_names) == list(teacher.class_names)
    if loss == "multilabel":
        return images.multilabels is not None and list(images.class_names) == list(teacher.class_names)
    return False


def _gt(images: ImageSet, skipped: list[int], mode: str, fits: bool) -> torch.Tensor | None:
    """The ground truth of the readable images, when it is used (``mode`` not "teacher") and fits."""
    if mode == "teacher" or not fits:
        return None
    keep = np.setdiff1d(np.arange(len(images)), np.asarray(skipped, np.int64))
    if images.labels is not None:
        return torch.from_numpy(images.labels[keep]).long()
    return torch.from_numpy(images.multilabels[keep]).float()  # type: ignore[index]


def _read_cache(out: Path | None, identity: str) -> dict[str, torch.Tensor]:
    if out is None or not (out / CACHE_FILE).is_file():
        return {}
    try:
        obj = torch.load(out / CACHE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (a damaged cache is recomputed, never trusted)
        return {}
    if obj.get("teacher") != identity:
        return {}
    return dict(zip(obj["keys"], obj["outputs"]))


def _write_cache(out: Path | None, identity: str, rows: dict[str, torch.Tensor]) -> None:
    if out is None or not rows:
        return
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows)
    payload = {"teacher": identity, "keys": keys, "outputs": torch.stack([rows[k] for k in keys])}
    atomic_write(out / CACHE_FILE, lambda tmp: torch.save(payload, tmp))


class _Bar:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar(cfg: Any, total: int, what: str) -> _Bar:
    if not getattr(cfg, "progress", True) or total < 512:
        return _Bar(None)
    from tqdm.auto import tqdm

    return _Bar(tqdm(total=total, desc=what, unit="img", leave=False, file=sys.stderr, dynamic_ncols=True))


# ----------------------------------------------------------------------------- the three losses

class LogitDistillationTask(DistillationTask):
    """Logit KD (Hinton): ``val_agreement`` (top-1 agreement with the teacher, %) decides ``best.pt``;
    ``val_top1`` (%) is reported when the validation images have labels over the teacher's classes."""

    name = loss = "kd"
    train_sums = ("loss_sum", "agree", "seen")
    val_sums = ("loss_sum", "agree", "top1", "labelled", "seen")
    best_metric = "val_agreement"
    higher_is_better = True
    log_keys = ("train_loss", "train_agreement", "val_loss", "val_agreement", "val_top1")
    summary_keys = ("val_agreement", "val_top1", "val_loss", "train_loss")

    def _losses(self, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        return kd_loss(out, teacher, self.temperature, gt, self.alpha)

    def _count(self, sums: Sums, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None,
               losses: torch.Tensor, train: bool) -> None:
        n = float(out.shape[0])
        if train:
            sums.add(torch.stack([losses.double().sum(), agreement_count(out, teacher),
                                  torch.tensor(n, dtype=torch.float64, device=out.device)]))
            return
        top1 = topk_correct(out, gt, (1,))[0] if gt is not None else torch.zeros((), dtype=torch.float64,
                                                                                  device=out.device)
        sums.add(torch.stack([losses.double().sum(), agreement_count(out, teacher), top1.to(out.device),
                              torch.tensor(n if gt is not None else 0.0, dtype=torch.float64, device=out.device),
                              torch.tensor(n, dtype=torch.float64, device=out.device)]))

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["seen"], 1.0)
        return {"train_loss": sums["loss_sum"] / n, "train_agreement": 100.0 * sums["agree"] / n}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["seen"], 1.0)
        out = {"val_loss": sums["loss_sum"] / n, "val_agreement": 100.0 * sums["agree"] / n, "val_images": int(n)}
        if sums["labelled"] > 0:
            out["val_top1"] = 100.0 * sums["top1"] / sums["labelled"]
        return out


class EmbeddingDistillationTask(DistillationTask):
    """Embedding distillation (the paper's mobile FaceNet): ``val_cosine`` (mean cosine similarity to
    the teacher's embedding on held-out images) decides ``best.pt``. The student's classifier is the
    learned linear projection to the teacher's dimension, always (also where the widths match, as the
    paper's students count an embedding layer): its bias starts at the teacher's mean training
    embedding, so the first steps learn how images differ, not the offset every embedding shares (a
    student without it spent short runs learning that offset and collapsed to a constant)."""

    name = loss = "embedding"
    train_sums = ("loss_sum", "cos", "seen", "ccos")
    val_sums = ("loss_sum", "cos", "seen", "ccos")
    best_metric = "val_cosine"
    higher_is_better = True
    log_keys = ("train_loss", "train_cosine", "val_loss", "val_cosine", "val_centered_cosine")
    summary_keys = ("val_cosine", "val_centered_cosine", "val_loss", "train_loss")

    def setup(self, settings: Any) -> None:
        super().setup(settings)
        targets = next((t for t in (self.targets.get("train"), self.targets.get("val")) if t is not None), None)
        self.center = None if targets is None else _space(targets.float(), self.normalize).mean(0)

    def init_head(self, net: nn.Module) -> None:
        head = getattr(net, "classifier", None)
        if isinstance(head, nn.Linear) and head.bias is not None and self.center is not None:
            with torch.no_grad():
                head.bias.copy_(self.center)

    def save_weights(self, path: Any, module: nn.Module, extra: dict[str, Any]) -> bool:
        """Our checkpoint format, marked as an embedding model (``predict`` prints embeddings, not labels)."""
        save_checkpoint(path, module, **extra, output="embedding")
        return True

    def _losses(self, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        return embedding_loss(out, teacher, self.normalize)

    def _count(self, sums: Sums, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None,
               losses: torch.Tensor, train: bool) -> None:
        # centered: the cosine of both embeddings' offsets from the teacher's mean, which a student
        # that learned only the mean scores 0 at (the plain cosine of the mean alone is ~0.8 here)
        c = self.center.to(out.device) if self.center is not None else torch.zeros_like(teacher[0])
        s, t = _space(out, self.normalize), _space(teacher.float(), self.normalize)
        sums.add(torch.stack([losses.double().sum(), cosine_sum(out, teacher),
                              torch.tensor(float(out.shape[0]), dtype=torch.float64, device=out.device),
                              cosine_sum(s - c, t - c)]))

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["seen"], 1.0)
        return {"train_loss": sums["loss_sum"] / n, "train_cosine": sums["cos"] / n}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["seen"], 1.0)
        return {"val_loss": sums["loss_sum"] / n, "val_cosine": sums["cos"] / n,
                "val_centered_cosine": sums["ccos"] / n, "val_images": int(n)}


class MultiLabelTask(DistillationTask):
    """Multi-label (the paper's face attributes): sigmoid outputs, BCE against the teacher's scores
    and/or the ground truth; ``val_map`` (mean AP over classes, scikit-learn) decides ``best.pt``.
    It is measured against the validation ground truth when there is one, else against the
    teacher's scores thresholded at 0.5; ``val_teacher_map`` is the teacher's own on the same images.
    The classifier's biases start at each class's prior (the logit of its mean training target, as
    RetinaNet and our SSD heads do), so the first steps do not go to pushing 80 sigmoids from 0.5
    down to the few percent of images that show each class."""

    name = loss = "multilabel"
    train_sums = ("loss_sum", "seen")
    val_sums = ("loss_sum", "seen")
    best_metric = "val_map"
    higher_is_better = True
    log_keys = ("train_loss", "val_loss", "val_map", "val_teacher_map")
    summary_keys = ("val_map", "val_teacher_map", "val_loss", "train_loss")

    def setup(self, settings: Any) -> None:
        super().setup(settings)
        self._scores: list[torch.Tensor] = []
        self._truth: list[torch.Tensor] = []
        self._teacher_scores: list[torch.Tensor] = []

    def init_head(self, net: nn.Module) -> None:
        head = getattr(net, "classifier", None)
        used = {"gt": ("train_gt",), "teacher": ("train",), "both": ("train", "train_gt")}[self.label_mode]
        means = [self.targets[k].float().mean(0) for k in used if self.targets.get(k) is not None]  # type: ignore
        if isinstance(head, nn.Linear) and head.bias is not None and means:
            p = (means[0] if len(means) == 1 else (1 - self.alpha) * means[1] + self.alpha * means[0])
            with torch.no_grad():
                head.bias.copy_(torch.logit(p.clamp(1e-3, 1 - 1e-3)))

    def _losses(self, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None) -> torch.Tensor:
        if self.label_mode == "gt":
            return multilabel_loss(out, None, gt, self.alpha)
        return multilabel_loss(out, teacher, gt if self.label_mode == "both" else None, self.alpha)

    def _count(self, sums: Sums, out: torch.Tensor, teacher: torch.Tensor, gt: torch.Tensor | None,
               losses: torch.Tensor, train: bool) -> None:
        sums.add(torch.stack([losses.double().sum(),
                              torch.tensor(float(out.shape[0]), dtype=torch.float64, device=out.device)]))
        if not train:
            self._scores.append(out.sigmoid().cpu())
            self._teacher_scores.append(teacher.cpu())
            self._truth.append((gt if gt is not None else (teacher >= 0.5).float()).cpu())

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"train_loss": sums["loss_sum"] / max(sums["seen"], 1.0)}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        scores, teacher, truth = (_gathered(torch.cat(x)) if x else torch.zeros(0, self.out_dim)
                                  for x in (self._scores, self._teacher_scores, self._truth))
        self._scores, self._teacher_scores, self._truth = [], [], []
        n = max(sums["seen"], 1.0)
        ok = truth.shape[0] > 0 and bool((truth > 0.5).any())
        # no positive label at all (a tiny validation set): 0, not NaN (which would read as divergence)
        return {"val_loss": sums["loss_sum"] / n,
                "val_map": mean_average_precision(scores, truth) if ok else 0.0,
                "val_teacher_map": mean_average_precision(teacher, truth) if ok else 0.0,
                "val_images": int(n)}


def _gathered(t: torch.Tensor) -> torch.Tensor:
    """All processes' rows (one process: ``t``)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


#: ``mobilenets distill --loss`` → its task
DISTILL_LOSSES = {"kd": LogitDistillationTask, "embedding": EmbeddingDistillationTask, "multilabel": MultiLabelTask}
