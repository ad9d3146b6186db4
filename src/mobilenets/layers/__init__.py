"""Shared building blocks (import no model)."""

from .conv import Conv2dSame, ConvBNAct, DepthwiseSeparable, make_conv

__all__ = ["Conv2dSame", "ConvBNAct", "DepthwiseSeparable", "make_conv"]
