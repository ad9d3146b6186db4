"""Faster R-CNN with a MobileNet V1 body, as the paper's Table 13 used it (TF Object Detection API
layout): the region proposal network on Conv2d_11_pointwise (stride 16), 14×14 RoIAlign crops of
that map, and Conv2d_12–13 applied to each crop as the box head (then average pooling and the box
classifier). 300 proposals per image in training and test and 64 RoIs per image for the box
head's loss, TF's ``first_stage_max_proposals`` and ``second_stage_batch_size``. Built from torchvision's :class:`FasterRCNN`, :class:`AnchorGenerator`,
:class:`RPNHead` and :class:`MultiScaleRoIAlign`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from ...config import MobileNetConfig
from ..mobilenet_v1 import MobileNetV1

__all__ = ["RPN_ANCHOR_SIZES", "RPN_ASPECT_RATIOS", "FasterRCNNMobileNetV1", "faster_rcnn_mobilenet_v1"]

RPN_ANCHOR_SIZES = (64, 128, 256, 512)  # TF: base 256 × scales 0.25, 0.5, 1, 2 at stride 16
RPN_ASPECT_RATIOS = (0.5, 1.0, 2.0)
CROP_SIZE = 14  # TF's initial_crop_size
PROPOSALS = 300  # TF's first_stage_max_proposals (training and test)
BOX_BATCH = 64  # TF's second_stage_batch_size: RoIs sampled per image for the box head's loss


class _Stride16(nn.Module):
    """Conv2d_0 … Conv2d_11_pointwise: the map the RPN and the crops read."""

    def __init__(self, body: MobileNetV1) -> None:
        super().__init__()
        self.features = body.features[:12]
        self.out_channels = body.config.depth(512)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.features(x))])


class _CropHead(nn.Module):
    """Conv2d_12 (stride 2) and Conv2d_13 on each 14×14 crop, then global average pooling."""

    def __init__(self, body: MobileNetV1) -> None:
        super().__init__()
        self.features = body.features[12:]
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(crops)), 1)


class FasterRCNNMobileNetV1(FasterRCNN):
    """torchvision's FasterRCNN with the MobileNet V1 pieces above; ``cost_forward`` runs what one
    image costs at test time (body, RPN, the box head on ``PROPOSALS`` crops)."""

    def __init__(self, body: MobileNetV1, num_classes: int, *, min_size: int = 600, **kwargs: Any) -> None:
        backbone = _Stride16(body)
        head = _CropHead(body)
        super().__init__(
            backbone, num_classes=None,
            rpn_anchor_generator=AnchorGenerator((RPN_ANCHOR_SIZES,), (RPN_ASPECT_RATIOS,)),
            box_roi_pool=MultiScaleRoIAlign(["0"], CROP_SIZE, sampling_ratio=2),
            box_head=head, box_predictor=FastRCNNPredictor(body.config.depth(1024), num_classes),
            min_size=min_size, max_size=round(min_size * 1024 / 600),
            image_mean=[0.5] * 3, image_std=[0.5] * 3,
            rpn_pre_nms_top_n_test=kwargs.pop("rpn_pre_nms_top_n_test", 6000),
            rpn_post_nms_top_n_test=kwargs.pop("rpn_post_nms_top_n_test", PROPOSALS),
            # TF's training settings too (torchvision's defaults, 2000 proposals and 512 RoIs, cost 8× more)
            rpn_post_nms_top_n_train=kwargs.pop("rpn_post_nms_top_n_train", PROPOSALS),
            box_batch_size_per_image=kwargs.pop("box_batch_size_per_image", BOX_BATCH),
            box_detections_per_img=kwargs.pop("box_detections_per_img", 100), **kwargs)
        self.config = body.config
        self.num_classes = num_classes
        self.resolution = min_size

    def cost_forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(x)["0"]
        self.rpn.head([fmap])
        crops = torch.zeros(PROPOSALS, fmap.shape[1], CROP_SIZE, CROP_SIZE, dtype=x.dtype, device=x.device)
        return self.roi_heads.box_predictor(self.roi_heads.box_head(crops))[0]


def faster_rcnn_mobilenet_v1(width_multiplier: float = 1.0, num_classes: int = 91, *, min_size: int = 600,
                             tf_padding: bool = False, activation: str = "relu6",
                             backbone: MobileNetV1 | None = None, **kwargs: Any) -> FasterRCNNMobileNetV1:
    """Faster R-CNN MobileNet V1 (91 classes = background + COCO's 90 ids); ``min_size`` 300 or 600
    as in the paper's Table 13. ``backbone``: a classifier whose body to use (its α wins)."""
    if backbone is None:
        backbone = MobileNetV1(MobileNetConfig(width_multiplier=width_multiplier, num_classes=0,
                                               tf_padding=tf_padding, activation=activation, bn_eps=1e-3))
    elif not isinstance(backbone, MobileNetV1):
        raise ValueError(f"backbone must be a MobileNetV1, got {type(backbone).__name__}")
    return FasterRCNNMobileNetV1(backbone, num_classes, min_size=min_size, **kwargs)
