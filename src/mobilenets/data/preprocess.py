"""Image loading and the exact preprocessing Google's MobileNet V1 models were evaluated with.

TF-slim evaluates these models with ``inception_preprocessing.preprocess_for_eval``:
``tf.image.central_crop(0.875)``, then TF1's *legacy* bilinear resize
(``align_corners=False, half_pixel_centers=False``: source pixel = destination pixel ×
in/out, no half-pixel offset) to the model's resolution, then scaling to [-1, 1]. PIL's or
torchvision's bilinear resize samples at half-pixel centres and antialiases; fed to the
0.25-128 model that costs 3.5 points of top-1 on the sample images, so we reproduce the
TensorFlow arithmetic here, in float32, in the same order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "to_rgb8",
    "load_image",
    "central_crop",
    "resize_bilinear_legacy",
    "tf_slim_preprocess",
    "quantize_input",
    "list_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB (grayscale, RGBA, CMYK and palette images converted).

    Raises ``ValueError`` with a one-line message for a file that is not a readable image.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb8(img)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image PIL can read (JPEG, PNG, BMP, ...)") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable or truncated image ({e})") from None


def to_rgb8(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB. High-bit-depth images are scaled to 8 bits, not clipped:
    PIL's own ``convert("RGB")`` of a 16-bit PNG (mode ``I;16``) saturates every value above
    255 and turns the picture white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            top = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        elif img.mode.startswith("I;16"):
            top = 65535.0
        else:  # 32-bit integer: a 16-bit image (PNG) unless its values say otherwise
            peak = float(a.max()) if a.size else 0.0
            top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        a = np.clip(np.nan_to_num(a) * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def central_crop(image: np.ndarray, fraction: float = 0.875) -> np.ndarray:
    """``tf.image.central_crop`` on an HWC array: keep the central ``fraction`` of each side."""
    h, w = image.shape[:2]
    top = int((h - h * fraction) / 2)
    left = int((w - w * fraction) / 2)
    return image[top:h - top, left:w - left]


def resize_bilinear_legacy(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False, half_pixel_centers=False)`` on (..., H, W) float32.

    Source coordinate = destination × (in / out), computed in float32 as TensorFlow does;
    interpolation top-left → top-right, then top → bottom, also as TensorFlow orders it.
    """
    in_h, in_w = image.shape[-2:]

    def axis(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        src = torch.arange(out_size, dtype=torch.float32) * scale
        lo = torch.floor(src).to(torch.long)
        hi = torch.clamp(lo + 1, max=in_size - 1)
        return lo, hi, src - lo.to(torch.float32)

    y0, y1, dy = axis(height, in_h)
    x0, x1, dx = axis(width, in_w)
    image = image.to(torch.float32)
    top, bottom = image[..., y0, :], image[..., y1, :]
    tl, tr, bl, br = top[..., x0], top[..., x1], bottom[..., x0], bottom[..., x1]
    top_row = tl + (tr - tl) * dx
    bottom_row = bl + (br - bl) * dx
    return top_row + (bottom_row - top_row) * dy[:, None]


def tf_slim_preprocess(image: Image.Image | np.ndarray, resolution: int, central_fraction: float = 0.875,
                       mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                       std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> torch.Tensor:
    """TF-slim's eval preprocessing: a (3, R, R) float32 tensor, ``(x - mean) / std`` of pixels
    in [0, 1]; the default mean and std give TF-slim's [-1, 1]."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    array = central_crop(array, central_fraction) if central_fraction < 1.0 else array
    chw = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).to(torch.float32) / 255.0
    resized = resize_bilinear_legacy(chw, resolution, resolution)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (resized - m) / s


def quantize_input(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The uint8 tensor a quantized model's input parameters imply for float input ``x``."""
    return torch.clamp(torch.round(x / scale + zero_point), 0, 255).to(torch.uint8)


def dequantize_input(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The float values a uint8 input stands for."""
    return (q.to(torch.float32) - zero_point) * scale


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand directories into the image files they hold (sorted); files pass through."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out


# How each source of weights expects its inputs (``model.pretrained_cfg.preprocess``).
TF_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop": 0.875, "resize": "tf_legacy_bilinear"}


IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop": 0.875,
                       "resize": "tf_legacy_bilinear"}
