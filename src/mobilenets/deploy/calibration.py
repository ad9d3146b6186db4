"""Real inputs for int8 calibration, and a held-out part of them to verify the int8 file on."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import IMAGE_EXTENSIONS, list_images, load_image, tf_slim_preprocess
from ..inference import Classifier
from ..models import MobileNetV1

__all__ = ["HELD_OUT_MAX", "in_chans", "load_calibration", "preprocessor"]

HELD_OUT_MAX = 64  # inputs kept back from calibration to verify on


def in_chans(model: nn.Module) -> int:
    """The model's input channels (its config's, else its first convolution's, else 3)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "in_chans"):
        return int(config.in_chans)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def preprocessor(model: nn.Module, resolution: int) -> Callable[[Path], torch.Tensor]:
    """Image file → input tensor, the way the model's weights expect (TF-slim for Google's files)."""
    if isinstance(model, MobileNetV1):
        classifier = Classifier(model)
        classifier.resolution = resolution
        return classifier.preprocess
    return lambda p: tf_slim_preprocess(load_image(p), resolution)


def load_calibration(source: Any, model: nn.Module, resolution: int, count: int,
                     *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Calibration inputs and, when the source has more, held-out inputs to verify on.

    ``source``: a folder of images (searched recursively; a deterministic random sample of
    ``count`` is taken, so a class-sorted folder is not calibrated on one class), a list of
    image files, a ``.npy`` / ``.pt`` file or an array/tensor of preprocessed inputs
    ``(N, C, R, R)``. Returns ``(calibration, held_out_or_None, description)``.
    """
    c = in_chans(model)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"{path}: calibration folder or file not found")
        if path.is_file() and path.suffix.lower() in (".npy", ".pt", ".pth"):
            data = np.load(path) if path.suffix.lower() == ".npy" else torch.load(path, weights_only=True)
            return _split_tensor(torch.as_tensor(data), c, resolution, count, str(path))
        if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{path}: not a calibration source; give a folder of images, image files, "
                             "or a .npy/.pt array of shape (N, C, R, R)")
        files = list_images([path])
        if not files:
            raise ValueError(f"{path}: no images found for calibration (JPEG/PNG/... files, searched recursively)")
        description = f"{len(files)} images in {path}" if path.is_dir() else str(path)
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        return _split_tensor(torch.as_tensor(source), c, resolution, count, "given tensor")
    elif isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        files = list_images(source)
        description = f"{len(files)} given images"
    else:
        raise ValueError("calibration must be a folder of images, a list of image files, or an array of "
                         f"inputs (N, C, R, R); got {type(source).__name__}")
    files = list(files)
    random.Random(seed).shuffle(files)
    preprocess = preprocessor(model, resolution)
    # Unreadable images are skipped and counted (as predict and train do); the sample stays the
    # first `count` readable ones of the seeded order, the held-out part the next ones.
    inputs: list[torch.Tensor] = []
    unreadable = 0
    for p in files:
        if len(inputs) == count + HELD_OUT_MAX:
            break
        try:
            inputs.append(preprocess(p))
        except ValueError:
            unreadable += 1
    if not inputs:
        raise ValueError(f"{source}: none of the {len(files)} calibration images could be read")
    calib = torch.stack(inputs[:count])
    held = torch.stack(inputs[count:]) if len(inputs) > count else None
    how = f"random {calib.shape[0]} of {description}, seed {seed}" + (
        f"; {unreadable} unreadable skipped" if unreadable else "")
    return calib, held, how


def _split_tensor(x: torch.Tensor, c: int, r: int, count: int, name: str
                  ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    if x.dim() != 4 or x.shape[1] != c or x.shape[2] != r or x.shape[3] != r:
        raise ValueError(f"{name}: calibration inputs must have shape (N, {c}, {r}, {r}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: no calibration inputs (N = 0)")
    x = x.to(torch.float32)
    held = x[count:count + HELD_OUT_MAX] if x.shape[0] > count else None
    return x[:count], held, f"first {min(count, x.shape[0])} of {x.shape[0]} inputs from {name}"
