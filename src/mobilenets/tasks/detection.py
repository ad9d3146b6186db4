"""Object detection through the training engine: SSD / SSDLite / Faster R-CNN with a MobileNet V1 body.

:class:`DetectionTask` supplies what differs from classification through the :class:`~.base.Task`
hooks: its data (a COCO or YOLO folder, :func:`mobilenets.data.detection.open_detection_data`; batches
are ``(list of images in [0, 1], list of targets)``), its model (:func:`ssd_mobilenet_v1` or
:func:`faster_rcnn_mobilenet_v1`, from ``--width``, a detector file or a classifier file given as
``init``) and its weights file (:func:`mobilenets.weights.save_detector`'s format, so a run's
``best.pt`` and ``checkpoint.pt`` load with :func:`mobilenets.weights.load_detector`). Validation runs
the detector in eval mode on the val split and computes COCO mAP (:func:`.coco_eval.coco_map`);
``val_map`` (mAP@[.5:.95], a fraction) decides ``best.pt``.

``freeze_backbone``: the MobileNet body is frozen and its two feature maps per image
(Conv2d_11 and Conv2d_13 pointwise) are computed once, without augmentation, and kept on the
device; only the extra layers and the box predictors train. This is what makes CPU training practical.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import mix_seed
from ..config import MobileNetConfig
from ..data import epoch_permutation
from ..data.detection import DetectionDataset, DetectionIndex, open_detection_data
from ..data.labels import coco_category_names
from ..weights import is_detector_file, load_detector, load_pretrained, save_detector
from .base import Task
from .coco_eval import coco_map
from .metrics import Sums

__all__ = ["DETECTION_ARCHS", "DetectionModel", "DetectionRunData", "DetectionTask"]


def _detection() -> Any:
    """:mod:`mobilenets.models.detection`, imported on first use: it loads torchvision's detection
    stack (seconds), which classification runs and the CLI's start-up do not need."""
    from ..models import detection

    return detection


DETECTION_ARCHS = ("ssd", "ssdlite", "faster_rcnn")
_DEFAULT_RESOLUTION = {"ssd": 300, "ssdlite": 300, "faster_rcnn": 300}


@dataclass
class DetectionRunData:
    """A detection run's splits, with the fields the engine reads of a run's data."""

    root: Path
    train: DetectionIndex
    val: DetectionIndex
    mode: str  # "cached" (frozen body, maps kept on the device) or "images"
    class_names: list[str] = field(default_factory=coco_category_names)
    native_size: int | None = None
    skipped: list[str] = field(default_factory=list)


class DetectionModel(nn.Module):
    """The detector (``.detector``), callable on images (``list`` of ``(3, R, R)`` in [0, 1]) as
    torchvision's detectors are, or for SSD on the cached body maps (a ``tuple`` of the Conv2d_11
    and Conv2d_13 maps): extra layers, predictors, anchors, then the loss (training) or detections.
    Its state dict is the detector's, so checkpoints hold the detector's keys."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: Any, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        if isinstance(inputs, tuple):
            return self._from_maps(inputs, targets)
        return self.detector(list(inputs), targets)

    def _from_maps(self, maps: tuple[torch.Tensor, ...], targets: list[dict[str, torch.Tensor]] | None) -> Any:
        from torchvision.models.detection.image_list import ImageList
        from torchvision.ops import boxes as box_ops

        d = self.detector
        feats = list(maps)
        x = feats[-1]
        for extra in d.backbone.extras:
            x = extra(x)
            feats.append(x)
        head = d.head(feats)
        n, r = feats[0].shape[0], int(d.resolution)
        images = ImageList(feats[0].new_zeros(()).expand(n, 3, r, r), [(r, r)] * n)
        anchors = d.anchor_generator(images, feats)
        if targets is None:
            return d.postprocess_detections(head, anchors, [(r, r)] * n)
        matched = []
        for a, t in zip(anchors, targets):
            if t["boxes"].numel() == 0:
                matched.append(torch.full((a.size(0),), -1, dtype=torch.int64, device=a.device))
            else:
                matched.append(d.proposal_matcher(box_ops.box_iou(t["boxes"], a)))
        return d.compute_loss(targets, head, anchors, matched)

    def body_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two body maps of a normalized batch (what :meth:`forward` takes when cached)."""
        out: list[torch.Tensor] = []
        h = x
        features = self.detector.backbone.features
        for i, layer in enumerate(features):
            h = layer(h)
            if i in (11, len(features) - 1):
                out.append(h)
        return out[0], out[1]

    def cost_forward(self, x: torch.Tensor) -> Any:
        return self.detector.cost_forward(x)

    # the detector's keys, so that a checkpoint is a detector file
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.detector.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        return self.detector.load_state_dict(state_dict, strict=strict, assign=assign)


def _collate(batch: list[Any]) -> list[Any]:
    return batch


def _scaled_boxes(sample: Any, r: int) -> torch.Tensor:
    scale = np.array([r / sample.width, r / sample.height] * 2, np.float32)
    return torch.from_numpy(sample.boxes * scale).reshape(-1, 4)


class DetectionBatches:
    """A detection run's batches on the device (the engine's ``DeviceData`` interface): per step this
    process's micro-batches ``(images or cached maps, targets)``; the order of an epoch is a pure
    function of ``(seed, epoch)``, the augmentation of ``(seed, epoch, image)``."""

    def __init__(self, task: DetectionTask, data: DetectionRunData, s: Any, dist: Any, device: torch.device) -> None:
        self.task, self.data, self.s, self.dist, self.device = task, data, s, dist, device
        self.r = int(s.input_size)
        self.eval_batch = max(8, min(64, 2 * s.world_batch))
        self.cached = data.mode == "cached"
        self._maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def skipped(self) -> list[str]:
        return self.data.skipped

    def _targets(self, index: DetectionIndex, ids: list[int]) -> list[dict[str, Any]]:
        out = []
        for i in ids:
            smp = index.samples[i]
            out.append({"boxes": _scaled_boxes(smp, self.r).to(self.device),
                        "labels": torch.from_numpy(smp.labels.copy()).to(self.device), "index": i})
        return out

    def _images(self, ds: DetectionDataset, ids: list[int]) -> list[torch.Tensor]:
        return [ds[i][0].to(self.device).float().div_(255) for i in ids]

    def maps(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The body's two maps of every image of ``split``, computed once (frozen body, no augmentation)."""
        if split not in self._maps:
            model = self.task.model
            index = self.data.train if split == "train" else self.data.val
            ds = DetectionDataset(index, self.r, train=False)
            was = model.training
            model.eval()
            parts: list[tuple[torch.Tensor, torch.Tensor]] = []
            try:
                with torch.no_grad():
                    for i in range(0, len(index), 16):
                        x = self.task.normalize(self._images(ds, list(range(i, min(len(index), i + 16)))))
                        parts.append(model.body_maps(x))
            finally:
                model.train(was)
            self._maps[split] = (torch.cat([p[0] for p in parts]).contiguous(),
                                 torch.cat([p[1] for p in parts]).contiguous())
        return self._maps[split]

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[int, list[Any]]]:
        s, d = self.s, self.dist
        B, K, per = s.batch_size, s.accum_steps, s.world_batch
        m = per // K
        perm = epoch_permutation(len(self.data.train), s.seed, epoch).tolist()
        mine = [perm[step * B + d.rank * per + j * m: step * B + d.rank * per + (j + 1) * m]
                for step in range(start, s.steps_per_epoch) for j in range(K)]
        if self.cached:
            maps = self.maps("train")
            for n, step in enumerate(range(start, s.steps_per_epoch)):
                micro = []
                for ids in mine[n * K:(n + 1) * K]:
                    idx = torch.tensor(ids, device=self.device)
                    micro.append(((maps[0][idx], maps[1][idx]), self._targets(self.data.train, ids)))
                yield step, micro
            return
        ds = DetectionDataset(self.data.train, self.r, train=True, seed=s.seed)
        ds.set_epoch(epoch)
        flat = [i for ids in mine for i in ids]
        kw: dict[str, Any] = {"num_workers": s.workers, "collate_fn": _collate}
        loader = iter(torch.utils.data.DataLoader(ds, batch_size=m, sampler=flat, **kw))
        for step in range(start, s.steps_per_epoch):
            micro = []
            for _ in range(K):
                items = next(loader)
                images = [x.to(self.device).float().div_(255) for x, _ in items]
                targets = [{"boxes": t["boxes"].float().reshape(-1, 4).to(self.device),
                            "labels": t["labels"].to(self.device)} for _, t in items]
                micro.append((images, targets))
            yield step, micro

    def val_batches(self) -> Iterator[Any]:
        n, d = len(self.data.val), self.dist
        per = -(-n // d.world)
        lo, hi = d.rank * per, min(n, (d.rank + 1) * per)
        ds = None if self.cached else DetectionDataset(self.data.val, self.r, train=False)
        for i in range(lo, hi, self.eval_batch):
            ids = list(range(i, min(hi, i + self.eval_batch)))
            targets = self._targets(self.data.val, ids)
            if self.cached:
                maps = self.maps("val")
                yield (maps[0][i:i + len(ids)], maps[1][i:i + len(ids)]), targets
            else:
                yield self._images(ds, ids), targets

    def calibration_batches(self, n: int = 512, batch: int = 128) -> Iterator[torch.Tensor]:
        return iter(())


class DetectionTask(Task):
    """Detection: the detector's own losses (SSD: smooth-L1 + sigmoid with hard-negative mining;
    Faster R-CNN: RPN + box head), COCO mAP on the val split.

    ``arch``: ``ssd``, ``ssdlite`` or ``faster_rcnn`` (default: the run's ``arch`` option, else ``ssd``);
    ``freeze_backbone``: train with the body frozen and its maps cached (default: the run's option);
    ``val_split``: the split to evaluate on ("train": the training images, e.g. to check overfitting;
    a dataset without a val split is evaluated on its training images too)."""

    name = "detection"
    train_sums = ("loss_sum", "box_sum", "cls_sum", "steps", "seen")
    val_sums = ("images",)
    best_metric = "val_map"
    higher_is_better = True
    log_keys = ("train_loss", "val_map", "val_map50")
    summary_keys = ("val_map", "val_map50", "val_map75", "train_loss")
    default_recipe = "ssd_tf"

    def __init__(self, arch: str | None = None, freeze_backbone: bool | None = None, val_split: str = "val") -> None:
        if arch is not None and arch not in DETECTION_ARCHS:
            raise ValueError(f"unknown detection architecture {arch!r}; choose one of: {', '.join(DETECTION_ARCHS)}")
        self.arch, self.freeze_backbone, self.val_split = arch, freeze_backbone, val_split
        self.model: DetectionModel | None = None
        self._loaded: nn.Module | None = None
        self._predictions: list[tuple[int, dict[str, np.ndarray]]] = []

    # ------------------------------------------------------------------ the engine's hooks

    def configure(self, cfg: Any) -> None:
        arch = self.arch or getattr(cfg, "arch", None) or "ssd"
        if arch not in DETECTION_ARCHS:
            raise ValueError(f"unknown detection architecture {arch!r}; choose one of: {', '.join(DETECTION_ARCHS)}")
        self.arch = arch
        freeze = self.freeze_backbone if self.freeze_backbone is not None else bool(getattr(cfg, "freeze_backbone",
                                                                                             False))
        if freeze and arch == "faster_rcnn":
            raise ValueError("--freeze-backbone (cached body maps) is for --arch ssd or ssdlite")
        self.freeze_backbone = freeze

    def load_data(self, cfg: Any, dist: Any) -> DetectionRunData:
        self.configure(cfg)
        train = open_detection_data(cfg.data, "train")
        try:
            val: DetectionIndex | None = open_detection_data(cfg.data, self.val_split) if self.val_split != "train" \
                else None
        except ValueError:
            val = None  # COCO128 ships one split: evaluate on the training images
        if val is not None and [v.path for v in val.samples] == [t.path for t in train.samples]:
            val = None  # the same images (COCO128's val is its train2017): evaluate on the training subset
        if cfg.subset:
            train = train.subset(cfg.subset)
        if val is None:
            val = train
        if cfg.val_subset:
            val = val.subset(cfg.val_subset)
        self.val_samples = val.samples
        return DetectionRunData(train.root, train, val, "cached" if self.freeze_backbone else "images")

    def resolve_model(self, cfg: Any, data: Any) -> tuple[Any, None, dict[str, Any], int, bool]:
        """(the body's MobileNetConfig, no classifier init, preprocessing, input size, no small stem)."""
        self.configure(cfg)
        r = cfg.input_size or cfg.resolution or _DEFAULT_RESOLUTION[self.arch]
        if self.arch != "faster_rcnn" and r < 64:
            raise ValueError(f"SSD needs an input of at least 64 px, got {r}")
        self._loaded, self.build = self._initial(cfg, int(r))
        config: MobileNetConfig = self._loaded.config
        mean, std = _detection().TF_SSD_MEAN_STD
        return config, None, {"mean": mean, "std": std}, int(r), False

    def _initial(self, cfg: Any, r: int) -> tuple[nn.Module, dict[str, Any]]:
        """The detector to start from and the builder's options that rebuild it."""
        head = "ssdlite" if self.arch == "ssdlite" else "ssd"
        torch.manual_seed(mix_seed(int(cfg.seed), "init"))  # new layers: the same for every session of a run
        if cfg.init is not None and is_detector_file(cfg.init):
            src = load_detector(cfg.init)
            kind = getattr(src, "head_kind", None) or "faster_rcnn"
            if kind != self.arch:
                raise ValueError(f"{cfg.init}: holds a {kind} detector but --arch {self.arch} was given")
            c = src.config
            if cfg.width is not None and abs(cfg.width - c.width_multiplier) > 1e-6:
                raise ValueError(f"{cfg.init}: holds α={c.width_multiplier:g} weights but --width {cfg.width:g} "
                                 "was given; drop --width")
            common = {"width_multiplier": c.width_multiplier, "num_classes": src.num_classes,
                      "tf_padding": c.tf_padding, "activation": c.activation}
            if self.arch == "faster_rcnn":
                build = {**common, "min_size": r}
                model = _detection().faster_rcnn_mobilenet_v1(**build)
            else:
                build = {**common, "resolution": r, "head": head}
                model = _detection().ssd_mobilenet_v1(**build)
                if src.backbone.frozen_bn:
                    _detection().freeze_batchnorm(model.backbone, extras=src.backbone.frozen_extras_bn)
            model.load_state_dict(src.state_dict())
            return model, build
        body = None
        if cfg.init is not None:
            body = load_pretrained(cfg.init)
            if cfg.width is not None and abs(cfg.width - body.config.width_multiplier) > 1e-6:
                raise ValueError(f"{cfg.init}: holds α={body.config.width_multiplier:g} weights but --width "
                                 f"{cfg.width:g} was given; drop --width")
            body.classifier = nn.Identity() if hasattr(body, "classifier") else None
        c = body.config if body is not None else None
        width = c.width_multiplier if c is not None else (cfg.width if cfg.width is not None else 1.0)
        common = {"width_multiplier": width, "num_classes": 91,
                  "tf_padding": bool(c.tf_padding) if c is not None else False,
                  "activation": c.activation if c is not None else "relu6"}
        if self.arch == "faster_rcnn":
            build = {**common, "min_size": r}
            return _detection().faster_rcnn_mobilenet_v1(**build, backbone=body), build
        build = {**common, "resolution": r, "head": head}
        return _detection().ssd_mobilenet_v1(**build, backbone=body), build

    def build_model(self, settings: Any, device: torch.device) -> DetectionModel:
        """The run's model (with the ``init`` weights); with ``freeze_backbone`` the body is frozen."""
        torch.manual_seed(int(settings.seed))
        det = self._loaded  # resolve_model read the init file
        if det is None:
            raise RuntimeError("DetectionTask.build_model before resolve_model")
        self._loaded = None
        if self.freeze_backbone:
            _detection().freeze_batchnorm(det.backbone)
            for p in det.backbone.features.parameters():
                p.requires_grad_(False)
        self.model = DetectionModel(det).to(device)
        return self.model

    def train_head(self, net: nn.Module) -> nn.Module | None:
        """The new part (``--freeze-epochs`` trains only it): the box predictors and the extra layers."""
        d = net.detector
        return nn.ModuleList([d.head, d.backbone.extras]) if hasattr(d, "head") else d.roi_heads

    def save_weights(self, path: Any, module: nn.Module, extra: dict[str, Any]) -> bool:
        arch = "faster_rcnn" if self.arch == "faster_rcnn" else "ssd"
        det = module.detector if isinstance(module, DetectionModel) else module
        save_detector(path, det, arch=arch, build=dict(self.build), task="detection", **extra)
        return True

    def device_data(self, data: Any, settings: Any, dist: Any, device: torch.device) -> DetectionBatches:
        return DetectionBatches(self, data, settings, dist, device)

    def setup(self, settings: Any) -> None:
        self.resolution = int(settings.input_size)

    # ------------------------------------------------------------------ steps and metrics

    def normalize(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Images in [0, 1] → the detector's normalized batch (as its transform does)."""
        x = torch.stack(images)
        return (x - 0.5) / 0.5

    def train_step(self, model: nn.Module, batch: Any, sums: Sums) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        losses = model(inputs, targets)
        loss = sum(v.float() for v in losses.values())
        box = losses.get("bbox_regression", losses.get("loss_box_reg"))
        sums["loss_sum"] += loss.detach()
        sums["box_sum"] += box.detach().float() if box is not None else 0.0
        sums["cls_sum"] += (loss - box).detach() if box is not None else loss.detach()
        sums["steps"] += 1
        sums["seen"] += len(targets)
        return {"loss": loss, "output": losses}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Any, sums: Sums) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        detections = model(inputs)
        r = self.resolution
        for t, det in zip(targets, detections):
            smp = self.val_samples[t["index"]]
            scale = torch.tensor([smp.width / r, smp.height / r] * 2, device=det["boxes"].device)
            self._predictions.append((t["index"], {"boxes": (det["boxes"].float() * scale).cpu().numpy(),
                                                   "scores": det["scores"].float().cpu().numpy(),
                                                   "labels": det["labels"].cpu().numpy()}))
        sums["images"] += len(targets)
        return {"loss": torch.zeros(()), "output": detections}

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        steps = max(sums["steps"], 1.0)
        return {"train_loss": sums["loss_sum"] / steps, "train_box_loss": sums["box_sum"] / steps,
                "train_cls_loss": sums["cls_sum"] / steps}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        preds, self._predictions = self._predictions, []
        import torch.distributed as tdist

        if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
            gathered: list[Any] = [None] * tdist.get_world_size()
            tdist.all_gather_object(gathered, preds)
            preds = [p for part in gathered for p in part]
        by_index = dict(preds)
        order = sorted(by_index)
        m = coco_map([by_index[i] for i in order], [self.val_samples[i] for i in order])
        return {f"val_{k}": float(v) for k, v in m.items() if k != "images"} | {"val_images": int(sums["images"])}

    def progress(self, sums: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{self.train_metrics(sums)['train_loss']:.3f}"}

