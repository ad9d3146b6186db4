"""The paper's way of naming a model ("0.75 MobileNet-160"): the one formatter everything uses."""

from __future__ import annotations

__all__ = ["width_label", "model_label"]

_VARIANT_PREFIX = {"separable": "", "conv": "Conv ", "shallow": "Shallow "}


def width_label(width: float) -> str:
    """α as the paper prints it: ``1.0``, ``0.75``, ``0.5``."""
    return f"{width:.1f}" if float(width).is_integer() else f"{width:g}"


def model_label(width: float, resolution: int | str, variant: str = "separable") -> str:
    """``0.75 MobileNet-160``, ``1.0 Conv MobileNet-224``, ``1.0 Shallow MobileNet-224``."""
    return f"{width_label(width)} {_VARIANT_PREFIX[variant]}MobileNet-{resolution}"
