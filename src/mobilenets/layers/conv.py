"""The blocks MobileNet V1 is made of: conv → BN → ReLU, the depthwise separable pair, and a
conv with TensorFlow's "SAME" padding (Google's weights need it). No model is imported here:
models, detection heads and exports all build from these."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSame", "ConvBNAct", "DepthwiseSeparable", "make_conv"]


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size.

    At stride 2 on an even input TensorFlow pads 0 before and 1 after; PyTorch's symmetric
    padding would shift every sample by one pixel and TF-trained weights would misfire.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def pad_same(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        """The (before, after) padding of height and width that TF's SAME needs for this input."""
        ph = self._same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = self._same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return ph, pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            # A trace is specialised to its input size anyway; the padding for that size is
            # exactly what it should record, so the tracer's warning about it is noise.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                ph, pw = self.pad_same(x)
                ph, pw = (int(ph[0]), int(ph[1])), (int(pw[0]), int(pw[1]))
        else:
            ph, pw = self.pad_same(x)
        if any(ph) or any(pw):
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


def make_conv(cin: int, cout: int, kernel: int, stride: int, dilation: int, groups: int,
               tf_padding: bool) -> nn.Conv2d:
    if tf_padding and stride > 1:
        return Conv2dSame(cin, cout, kernel, stride=stride, dilation=dilation, groups=groups, bias=False)
    # Symmetric padding equals TF "SAME" at stride 1 for odd kernels.
    padding = (kernel - 1) // 2 * dilation
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=False)


class ConvBNAct(nn.Sequential):
    """conv → BatchNorm → ReLU (or ReLU6): the unit every layer of Table 1 is made of."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, *, activation: str = "relu", tf_padding: bool = False,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = make_conv(cin, cout, kernel, stride, dilation, groups, tf_padding)
        self.bn = nn.BatchNorm2d(cout, eps=bn_eps)
        self.act = nn.ReLU6(inplace=True) if activation == "relu6" else nn.ReLU(inplace=True)


class DepthwiseSeparable(nn.Sequential):
    """3×3 depthwise conv (one filter per channel) then 1×1 pointwise conv (mixes channels).

    Costs ``D_K²·M·D_F² + M·N·D_F²`` Mult-Adds instead of a full conv's ``D_K²·M·N·D_F²``:
    8–9× less for 3×3 kernels (the paper's equation 5).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 *, activation: str = "relu", tf_padding: bool = False, bn_eps: float = 1e-5) -> None:
        super().__init__()
        common = dict(activation=activation, tf_padding=tf_padding, bn_eps=bn_eps)
        self.dw = ConvBNAct(cin, cin, kernel, stride, dilation, groups=cin, **common)
        self.pw = ConvBNAct(cin, cout, 1, **common)
