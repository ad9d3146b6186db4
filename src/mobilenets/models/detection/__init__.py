"""Detectors with a MobileNet V1 body (the paper's §4.6, Table 13): SSD and Faster R-CNN, built from
torchvision's detection components."""

from .anchors import SSD_ASPECT_RATIOS, SSDAnchorGenerator, ssd_box_specs
from .backbone import SSD_EXTRA_DEPTHS, MobileNetV1SSDBackbone, freeze_batchnorm
from .faster_rcnn import FasterRCNNMobileNetV1, faster_rcnn_mobilenet_v1
from .ssd import HEADS, NMS_MODES, TF_SSD_MEAN_STD, SSDMobileNetV1, ssd_mobilenet_v1

__all__ = ["HEADS", "NMS_MODES", "SSD_ASPECT_RATIOS", "SSD_EXTRA_DEPTHS", "TF_SSD_MEAN_STD", "FasterRCNNMobileNetV1",
           "MobileNetV1SSDBackbone", "SSDAnchorGenerator", "SSDMobileNetV1", "faster_rcnn_mobilenet_v1",
           "freeze_batchnorm", "ssd_box_specs", "ssd_mobilenet_v1"]
