"""SSD with a MobileNet V1 body, laid out as the TF Object Detection API's ``ssd_mobilenet_v1_coco``:
torchvision's :class:`~torchvision.models.detection.SSD` (matcher, box coder, NMS, transform) with
the TF layout's pieces: the body cut at Conv2d_11/13 plus four extra layers
(:mod:`.backbone`), TF's multiple-grid anchors (:mod:`.anchors`), 1×1 box predictors (``head="ssd"``)
or SSDLite's 3×3 depthwise + 1×1 (``head="ssdlite"``), and **sigmoid** class scores (TF trains
SSD MobileNet with a sigmoid loss; index 0 is "background" and is never reported).

Decoding + NMS (:meth:`SSDMobileNetV1.detections_from_scores`), ``nms_mode``:

- ``"multiclass"`` (default): per-class NMS (torchvision's ``batched_nms``) over the best
  ``pre_nms_top_n`` (anchor, class) pairs scoring above ``score_thresh``, with the per-class cap of
  ``topk_candidates``; only those anchors are decoded. NMS is greedy in score order, so a box's fate
  depends only on higher-scored boxes: when at least ``detections_per_img`` survive, the result is
  the one over every candidate; when fewer survive and more candidates exist the pool grows (×4)
  and NMS runs again. Same detections as ``"exact"`` (up to the order of tied scores), at a fraction
  of the cost (the 90 per-class NMS runs over up to 9,000 boxes are what made ``"exact"`` slow).
- ``"exact"``: the reference: every candidate above ``score_thresh`` (each class capped at
  ``topk_candidates``) into ``batched_nms``.
- ``"fast"``: ``TFLite_Detection_PostProcess`` with ``use_regular_nms=false`` (what Google's file
  runs): each anchor's best class only, the best ``pre_nms_top_n`` anchors, one class-agnostic NMS.
  Cheapest; it drops an anchor's second class and lets boxes of different classes suppress each
  other, so it scores lower mAP.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.ssd import (
    SSD,
    SSDScoringHead,
)
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import boxes as box_ops

from ...config import MobileNetConfig
from ..mobilenet_v1 import MobileNetV1
from .anchors import SSDAnchorGenerator
from .backbone import MobileNetV1SSDBackbone, freeze_batchnorm

__all__ = ["HEADS", "NMS_MODES", "TF_SSD_MEAN_STD", "SSDMobileNetV1", "ssd_mobilenet_v1"]

HEADS = ("ssd", "ssdlite")
NMS_MODES = ("multiclass", "exact", "fast")
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
        _prior_class_bias(self.classification_head.module_list)

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
                 topk_candidates: int = 100, nms_mode: str = "multiclass", pre_nms_top_n: int = 1000,
                 **kwargs: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"unknown SSD head {head!r}; choose one of: {', '.join(HEADS)}")
        if nms_mode not in NMS_MODES:
            raise ValueError(f"unknown nms_mode {nms_mode!r}; choose one of: {', '.join(NMS_MODES)}")
        anchors = SSDAnchorGenerator()
        num_anchors = anchors.num_anchors_per_location()
        if head == "ssd":
            box_head: nn.Module = _ConvHead(backbone.out_channels, num_anchors, num_classes)
        else:
            box_head = SSDLiteHead(backbone.out_channels, num_anchors, num_classes,
                                   norm_layer=lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.03))
        _prior_class_bias(box_head.classification_head.module_list)
        mean, std = TF_SSD_MEAN_STD
        super().__init__(backbone, anchors, (resolution, resolution), num_classes,
                         image_mean=image_mean or mean, image_std=image_std or std, head=box_head,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         topk_candidates=topk_candidates, **kwargs)
        self.head_kind = head
        self.nms_mode = nms_mode
        self.pre_nms_top_n = pre_nms_top_n
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
        return [self.detections_from_scores(codes, scores, anchors, shape)
                for codes, scores, anchors, shape in zip(head_outputs["bbox_regression"], scores_all, image_anchors,
                                                         image_shapes)]

    def detections_from_scores(self, codes: torch.Tensor, scores: torch.Tensor, anchors: torch.Tensor,
                               shape: tuple[int, int], *, mode: str | None = None) -> dict[str, torch.Tensor]:
        """One image's detections from its box encodings ``(A, 4)`` and class **probabilities**
        ``(A, C)`` (sigmoid applied; column 0 is background), anchors ``(A, 4)`` in pixels of an
        input of ``shape``: ``{"boxes", "scores", "labels"}``, at most ``detections_per_img``, best
        first. ``mode``: one of :data:`NMS_MODES` (default: the model's ``nms_mode``)."""
        mode = mode or self.nms_mode
        if mode not in NMS_MODES:
            raise ValueError(f"unknown nms_mode {mode!r}; choose one of: {', '.join(NMS_MODES)}")
        fg = scores[:, 1:]
        if mode == "exact":
            keep = fg > self.score_thresh
            anchor_idx, label_idx = keep.nonzero(as_tuple=True)
            return self._nms(codes, anchors, shape, anchor_idx, label_idx, fg[anchor_idx, label_idx])
        if mode == "fast":
            best, label_idx = fg.max(1)
            anchor_idx = (best > self.score_thresh).nonzero(as_tuple=True)[0]
            top = best[anchor_idx].topk(min(self.pre_nms_top_n, anchor_idx.numel())).indices
            anchor_idx = anchor_idx[top]
            return self._nms(codes, anchors, shape, anchor_idx, label_idx[anchor_idx], best[anchor_idx],
                             class_agnostic=True)
        flat = fg.reshape(-1)
        above = int((flat > self.score_thresh).sum())
        k = min(self.pre_nms_top_n, above)
        while True:
            cand_scores, flat_idx = flat.topk(k)
            out = self._nms(codes, anchors, shape, flat_idx // fg.shape[1], flat_idx % fg.shape[1], cand_scores)
            if k == above or len(out["scores"]) >= self.detections_per_img:
                return out
            k = min(above, 4 * k)  # too few survived: the exact answer may need lower-scored candidates

    def _nms(self, codes: torch.Tensor, anchors: torch.Tensor, shape: tuple[int, int], anchor_idx: torch.Tensor,
             label_idx: torch.Tensor, cand_scores: torch.Tensor, *, class_agnostic: bool = False
             ) -> dict[str, torch.Tensor]:
        """The per-class cap (each class's best ``topk_candidates``, as torchvision's SSD caps before
        NMS), then NMS (per class unless ``class_agnostic``) over these candidates; only their
        anchors are decoded."""
        cand_labels = label_idx + 1
        order = cand_scores.argsort(descending=True)
        anchor_idx, cand_scores, cand_labels = anchor_idx[order], cand_scores[order], cand_labels[order]
        if not class_agnostic:
            top = _rank_within(cand_labels) < self.topk_candidates
            anchor_idx, cand_scores, cand_labels = anchor_idx[top], cand_scores[top], cand_labels[top]
        boxes = box_ops.clip_boxes_to_image(self.box_coder.decode_single(codes[anchor_idx], anchors[anchor_idx]),
                                            shape)
        if class_agnostic:
            kept = box_ops.nms(boxes, cand_scores, self.nms_thresh)
        else:
            kept = box_ops.batched_nms(boxes, cand_scores, cand_labels, self.nms_thresh)
        kept = kept[: self.detections_per_img]
        return {"boxes": boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]}

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


CLASS_PRIOR = 0.01  # initial sigmoid score of every class: a class logit bias of -4.6


def _prior_class_bias(module_list: nn.ModuleList) -> None:
    """Start every class logit at ``logit(CLASS_PRIOR)`` (the last convolution of each predictor):
    with a sigmoid loss over 91 classes a zero bias scores 0.5 everywhere, and the first steps only
    unlearn that (the loss starts ~60× higher). RetinaNet's prior (Lin et al. 2017); the TF OD API
    sets it with ``class_prediction_bias_init: -4.6`` (its RetinaNet-style SSD FPN configs)."""
    value = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)
    for predictor in module_list:
        last = [m for m in predictor.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.constant_(last.bias, value)


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
