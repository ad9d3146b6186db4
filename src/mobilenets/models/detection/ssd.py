"""SSD with a MobileNet V1 body, laid out as the TF Object Detection API's ``ssd_mobilenet_v1_coco``:
torchvision's :class:`~torchvision.models.detection.SSD` (matcher, box coder, NMS, transform) with
the TF layout's pieces: the body cut at Conv2d_11/13 plus four extra layers
(:mod:`.backbone`), TF's multiple-grid anchors (:mod:`.anchors`), 1×1 box predictors (``head="ssd"``)
or SSDLite's 3×3 depthwise + 1×1 (``head="ssdlite"``), and **sigmoid** class scores (TF trains
SSD MobileNet with a sigmoid loss; index 0 is "background" and is never reported).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.ssd import (
    SSD,
    SSDScoringHead,  # noqa: E402
)
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import boxes as box_ops

from ...config import MobileNetConfig
from ..mobilenet_v1 import MobileNetV1
from .anchors import SSDAnchorGenerator
from .backbone import MobileNetV1SSDBackbone, freeze_batchnorm

__all__ = ["SSDMobileNetV1", "ssd_mobilenet_v1", "HEADS", "TF_SSD_MEAN_STD"]

HEADS = ("ssd", "ssdlite")
TF_SSD_MEAN_STD = ([0.5] * 3, [0.5] * 3)  # TF OD API: 2·x/255 − 1, for images given in [0, 1]


class _ConvHead(nn.Module):
    """Box and class predictors as single convolutions per map (the TF layout uses 1×1)."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int, kernel: int = 1) -> None:
        super().__init__()
        pad = kernel // 2

        def convs(columns: int) -> nn.ModuleList:
            return nn.ModuleList(nn.Conv2d(c, a * columns, kernel, padding=pad) for c, a in zip(in_channels, num_anchors))

        self.regression_head = SSDScoringHead(convs(4), 4)
        self.classification_head = SSDScoringHead(convs(num_classes), num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


class SSDMobileNetV1(SSD):
    """torchvision's SSD with sigmoid scores and TF's hard-negative mining of the sigmoid loss.

    ``forward(images)`` (a list of ``(3, H, W)`` tensors in [0, 1]) works as torchvision's:
    losses in training, ``[{"boxes", "scores", "labels"}]`` in pixels of each input otherwise.
    :meth:`forward_raw` is the exportable part: a preprocessed batch → box encodings and class
    logits for every anchor (what a TFLite file's last CONCATENATIONs hold)."""

    def __init__(self, backbone: MobileNetV1SSDBackbone, num_classes: int, *, resolution: int = 300,
                 head: str = "ssd", image_mean: list[float] | None = None, image_std: list[float] | None = None,
                 score_thresh: float = 1e-8, nms_thresh: float = 0.6, detections_per_img: int = 100,
                 topk_candidates: int = 100, **kwargs: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"unknown SSD head {head!r}; choose one of: {', '.join(HEADS)}")
        anchors = SSDAnchorGenerator()
        num_anchors = anchors.num_anchors_per_location()
        if head == "ssd":
            box_head: nn.Module = _ConvHead(backbone.out_channels, num_anchors, num_classes)
        else:
            box_head = SSDLiteHead(backbone.out_channels, num_anchors, num_classes,
                                   norm_layer=lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.03))
        mean, std = TF_SSD_MEAN_STD
        super().__init__(backbone, anchors, (resolution, resolution), num_classes,
                         image_mean=image_mean or mean, image_std=image_std or std, head=box_head,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         topk_candidates=topk_candidates, **kwargs)
        self.head_kind = head
        self.num_classes = num_classes
        self.resolution = resolution
        self.config = backbone.config

    # ------------------------------------------------------------------ the exportable graph

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, R, R)`` normalized input → ``(box encodings (N, A, 4), class logits (N, A, C))``;
        box encodings are torchvision's ``(dx, dy, dw, dh)`` with weights (10, 10, 5, 5)."""
        out = self.head(list(self.backbone(x).values()))
        return out["bbox_regression"], out["cls_logits"]

    cost_forward = forward_raw  # what mobilenets.cost counts: backbone + predictors, no NMS

    def grid_sizes(self, resolution: int | None = None) -> list[tuple[int, int]]:
        """The six feature maps' sizes for a square input of ``resolution`` (19, 10, 5, 3, 2, 1 at 300)."""
        r = resolution or self.resolution
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                maps = self.backbone(torch.zeros(1, 3, r, r, device=self._device())).values()
        finally:
            self.train(was)
        return [tuple(m.shape[-2:]) for m in maps]

    def anchors_xyxy(self, resolution: int | None = None) -> torch.Tensor:
        """The anchors in pixels ``(x1, y1, x2, y2)`` for a square input of ``resolution``."""
        r = resolution or self.resolution
        c = self.anchor_generator.cxcywh(self.grid_sizes(r)).to(self._device()) * r
        return torch.cat([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2], 1)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ sigmoid scores

    def postprocess_detections(self, head_outputs: dict[str, torch.Tensor], image_anchors: list[torch.Tensor],
                               image_shapes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        scores_all = torch.sigmoid(head_outputs["cls_logits"])
        detections = []
        for codes, scores, anchors, shape in zip(head_outputs["bbox_regression"], scores_all, image_anchors,
                                                 image_shapes):
            boxes = box_ops.clip_boxes_to_image(self.box_coder.decode_single(codes, anchors), shape)
            fg = scores[:, 1:]  # column 0 is background
            keep = fg > self.score_thresh
            anchor_idx, label_idx = keep.nonzero(as_tuple=True)
            cand_scores = fg[anchor_idx, label_idx]
            cand_labels = label_idx + 1
            # TF's per-class cap (max_detections_per_class) before NMS, then NMS per class
            order = cand_scores.argsort(descending=True)
            anchor_idx, cand_scores, cand_labels = anchor_idx[order], cand_scores[order], cand_labels[order]
            ranks = _rank_within(cand_labels)
            top = ranks < self.topk_candidates
            anchor_idx, cand_scores, cand_labels = anchor_idx[top], cand_scores[top], cand_labels[top]
            cand_boxes = boxes[anchor_idx]
            kept = box_ops.batched_nms(cand_boxes, cand_scores, cand_labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]})
        return detections

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Smooth-L1 on matched anchors and a per-anchor sigmoid loss (background column included)
        with hard-negative mining at 3 negatives per positive, both over the number of matches, as
        ``ssd_mobilenet_v1_coco`` trains (weighted_sigmoid + hard_example_miner)."""
        codes, logits = head_outputs["bbox_regression"], head_outputs["cls_logits"]
        num_classes = logits.shape[-1]
        box_losses, cls_losses, positives = [], [], []
        for t, code, logit, anc, idx in zip(targets, codes, logits, anchors, matched_idxs):
            fg = idx >= 0
            gt = t["boxes"][idx[fg]]
            box_losses.append(F.smooth_l1_loss(code[fg], self.box_coder.encode_single(gt, anc[fg]), reduction="sum",
                                               beta=1.0))
            labels = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
            labels[fg] = t["labels"][idx[fg]]
            target = F.one_hot(labels, num_classes).to(logit.dtype)
            per_anchor = F.binary_cross_entropy_with_logits(logit, target, reduction="none").sum(1)
            cls_losses.append(per_anchor)
            positives.append(fg)
        cls_loss = torch.stack(cls_losses)
        fg = torch.stack(positives)
        num_neg = self.neg_to_pos_ratio * fg.sum(1, keepdim=True)
        neg_loss = cls_loss.detach().clone()
        neg_loss[fg] = -float("inf")
        _, order = neg_loss.sort(1, descending=True)
        hard_neg = order.sort(1)[1] < num_neg
        n = max(1, int(fg.sum()))
        return {"bbox_regression": torch.stack(box_losses).sum() / n,
                "classification": (cls_loss[fg].sum() + cls_loss[hard_neg].sum()) / n}


def _rank_within(labels: torch.Tensor) -> torch.Tensor:
    """Rank of each element among the earlier elements with the same label (input already sorted by score)."""
    if labels.numel() == 0:
        return labels
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    pos = torch.arange(labels.numel(), device=labels.device)
    group_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
    ranks = torch.empty_like(pos)
    ranks[order] = pos - group_start
    return ranks


def ssd_mobilenet_v1(width_multiplier: float = 1.0, num_classes: int = 91, *, resolution: int = 300,
                     head: str = "ssd", tf_padding: bool = False, activation: str = "relu6",
                     backbone: MobileNetV1 | None = None, freeze_bn: bool | None = None,
                     **kwargs: Any) -> SSDMobileNetV1:
    """SSD MobileNet V1 as ``ssd_mobilenet_v1_coco`` (91 classes = background + COCO's 90 ids).

    ``backbone``: a classifier to take the body from (any model :func:`mobilenets.load_pretrained`
    returns, e.g. Google's 1.0-224 embedding extractor); its α, padding and activation win.
    ``freeze_bn``: keep the body's BatchNorm fixed while training (default: when the body comes
    from folded weights, a TFLite file, whose BNs are identities carrying the bias)."""
    if backbone is None:
        backbone = MobileNetV1(MobileNetConfig(width_multiplier=width_multiplier, resolution=max(32, resolution),
                                               num_classes=0, tf_padding=tf_padding, activation=activation,
                                               bn_eps=1e-3))
        folded = False
    else:
        if not isinstance(backbone, MobileNetV1):
            raise ValueError(f"backbone must be a MobileNetV1 (e.g. from mobilenets.load_pretrained), got "
                             f"{type(backbone).__name__}")
        info = getattr(backbone, "pretrained_cfg", None)
        folded = getattr(info, "format", None) == "tflite"
    body = MobileNetV1SSDBackbone(backbone)
    model = SSDMobileNetV1(body, num_classes, resolution=resolution, head=head, **kwargs)
    if freeze_bn if freeze_bn is not None else folded:
        freeze_batchnorm(body)
    return model
