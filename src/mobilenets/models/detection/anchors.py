"""The TF Object Detection API's SSD anchors (``create_ssd_anchors``, the "multiple grid anchor
generator" of ``ssd_mobilenet_v1_coco``) as a torchvision :class:`DefaultBoxGenerator`.

Per feature map k of K, the scale is ``s_k = min + (max − min)·k/(K − 1)`` (0.2 … 0.95 for six
maps). Every location gets one box per aspect ratio a (width ``s_k·√a``, height ``s_k/√a``) plus
one of the interpolated scale ``√(s_k·s_{k+1})`` at aspect 1; the lowest map gets only three:
(0.1, 1), (s_0, 2), (s_0, 1/2). Centres sit at ``(i + 0.5)/f``; boxes are not clipped. At 300 px
the six maps are 19, 10, 5, 3, 2, 1 cells a side: 1083 + 600 + 150 + 54 + 24 + 6 = 1917 anchors,
in TensorFlow's order (location-major, then the box list above), so a TFLite file's anchor tensor
can be compared element by element.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

__all__ = ["SSD_ASPECT_RATIOS", "SSDAnchorGenerator", "ssd_box_specs"]

SSD_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def ssd_box_specs(num_layers: int = 6, min_scale: float = 0.2, max_scale: float = 0.95,
                  aspect_ratios: Sequence[float] = SSD_ASPECT_RATIOS, interpolated_scale_aspect_ratio: float = 1.0,
                  reduce_boxes_in_lowest_layer: bool = True) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) of each box per location, per layer, exactly as ``create_ssd_anchors``."""
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
    specs = []
    for layer, (scale, scale_next) in enumerate(itertools.pairwise(scales)):
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        boxes = [(scale, float(a)) for a in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0:
            boxes.append((math.sqrt(scale * scale_next), interpolated_scale_aspect_ratio))
        specs.append(boxes)
    return specs


class SSDAnchorGenerator(DefaultBoxGenerator):
    """:class:`DefaultBoxGenerator` with TensorFlow's box list per layer (see the module doc).

    It keeps torchvision's interface (``forward(image_list, feature_maps)`` → boxes in
    ``(x1, y1, x2, y2)`` pixels per image), so torchvision's :class:`SSD` uses it unchanged."""

    def __init__(self, specs: list[list[tuple[float, float]]] | None = None) -> None:
        self.specs = specs if specs is not None else ssd_box_specs()
        # DefaultBoxGenerator wants aspect ratios per map; ours are in self.specs (wh pairs below).
        super().__init__([[2] for _ in self.specs], clip=False)

    def _generate_wh_pairs(self, num_outputs: int, dtype: torch.dtype = torch.float32,
                           device: torch.device | None = None) -> list[torch.Tensor]:
        device = device if device is not None else torch.device("cpu")
        pairs = []
        for boxes in self.specs:
            wh = [[s * math.sqrt(a), s / math.sqrt(a)] for s, a in boxes]
            pairs.append(torch.as_tensor(wh, dtype=dtype, device=device))
        return pairs

    def num_anchors_per_location(self) -> list[int]:
        return [len(boxes) for boxes in self.specs]

    def cxcywh(self, grid_sizes: Sequence[Sequence[int]]) -> torch.Tensor:
        """All anchors as normalized ``(cx, cy, w, h)`` for these map sizes (TFLite stores ``(cy, cx, h, w)``)."""
        return self._grid_default_boxes([list(g) for g in grid_sizes], [1, 1])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(boxes per location={self.num_anchors_per_location()})"
