"""Teachers for distillation: a frozen network with its own input, and what kind of output it gives.

A :class:`Teacher` runs in eval mode without gradients on its **own** view of each image: its
resolution, its central crop and resize arithmetic, its normalization, and, for a quantized
TFLite file, the uint8 input grid its quantization expects (so the student may run at another
resolution and normalization). Its output is one of three kinds, which decides the losses it
can teach (:data:`FITS`):

* ``logits``: a classifier (Google's TFLite classifiers, Keras files, our checkpoints);
* ``embedding``: a network without a classifier (Google's 1.0-224 embedding extractor), or a
  classifier's pooled features when the loss is ``embedding``;
* ``multilabel``: per-image class scores in [0, 1]; from a detector (Google's SSD or ours),
  the highest sigmoid score of each of COCO's 80 classes over all anchors.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import IMAGENET_PREPROCESS, coco_category_names
from ..data.detection import COCO80_TO_91
from ..data.images import View
from ..quant import fuse
from ..weights import is_detector_file, load_detector, load_pretrained

__all__ = ["FITS", "KINDS", "Teacher", "load_teacher"]

KINDS = ("logits", "embedding", "multilabel")
#: the teacher output kinds each distillation loss can learn from
FITS = {"kd": ("logits",), "embedding": ("embedding", "logits"), "multilabel": ("multilabel",)}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        path = next((path / c for c in ("best.pt", "checkpoint.pt") if (path / c).is_file()), path)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class _Features(nn.Module):
    """A classifier's pooled body features: its embedding."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net.pool(self.net.forward_features(x)), 1)


class _DetectorScores(nn.Module):
    """A detector's per-image class scores: the highest sigmoid score of each COCO-80 class over
    all anchors (the detector's class index is the COCO category id)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("columns", torch.tensor(COCO80_TO_91), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, logits = self.detector.forward_raw(x)
        return logits[..., self.columns].amax(dim=1).sigmoid()


def _module_identity(module: nn.Module) -> str:
    """A module's identity is its weights."""
    h = hashlib.sha256(type(module).__name__.encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).to(torch.float32).numpy().tobytes()[:1 << 16])
    return f"module:{h.hexdigest()[:16]}"


@dataclass
class Teacher:
    """A frozen network, how it sees an image, and what it outputs.

    ``preprocess``: ``{"mean", "std", "crop", "resize"}`` of its input; ``input_quantization``:
    ``(scale, zero_point)`` of a quantized file's uint8 input (the normalized input is rounded
    to that grid, as the file's own input would be). ``identity``: names the teacher in the
    cache of its outputs (a file's hash, its view and kind)."""

    module: nn.Module
    kind: str
    input_size: int
    preprocess: dict[str, Any] = field(default_factory=lambda: dict(IMAGENET_PREPROCESS))
    input_quantization: tuple[float, int] | None = None
    class_names: list[str] = field(default_factory=list)
    source: str = "module"
    identity: str = ""
    output_dim: int = 0
    calls: int = 0  # images the teacher has been run on (the cache keeps this at one per image)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown teacher output kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        identity = self.identity or _module_identity(self.module)  # of the weights as given
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None
               for m in self.module.modules()):
            raise ValueError(f"teacher {self.source}: it has a BatchNorm without running statistics "
                             "(track_running_stats=False), which normalizes by the batch, so its output for an "
                             "image would depend on the rest of the batch and could not be cached per image; "
                             "give a teacher whose BatchNorms keep running statistics")
        # A frozen copy (the caller's module is left as it is), BatchNorms folded: a quarter of its pass.
        self.module = fuse(self.module)
        self.module.to(memory_format=torch.channels_last)  # 1.6x faster convolutions on a CPU, the same outputs
        if not self.output_dim:
            with torch.no_grad():
                self.output_dim = int(self.module(torch.zeros(1, 3, self.input_size, self.input_size)).shape[1])
        self.identity = hashlib.sha256(f"{identity}|{self.kind}|{self.view}|{self.preprocess}|"
                                       f"{self.input_quantization}".encode()).hexdigest()[:16]

    @property
    def view(self) -> View:
        return View(self.input_size, float(self.preprocess.get("crop", 1.0) or 1.0),
                    "tf_legacy_bilinear" if self.preprocess.get("resize") == "tf_legacy_bilinear" else "bilinear")

    def to(self, device: torch.device | str) -> Teacher:
        self.module.to(device)
        return self

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], (N, 3, S, S) → the teacher's input (resized to its size if need be)."""
        if x01.shape[-1] != self.input_size or x01.shape[-2] != self.input_size:
            x01 = nn.functional.interpolate(x01, size=(self.input_size, self.input_size), mode="bilinear",
                                            antialias=True, align_corners=False)
        mean = torch.tensor(self.preprocess["mean"], device=x01.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["std"], device=x01.device, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x01.float() - mean) / std
        if self.input_quantization is not None:
            scale, zp = self.input_quantization
            x = (torch.clamp(torch.round(x / scale + zp), 0, 255) - zp) * scale
        return x

    @torch.no_grad()
    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        """Outputs (N, D) float32 for pixels in [0, 1]."""
        self.calls += int(x01.shape[0])
        device = next(self.module.parameters()).device
        x = self.normalize(x01.to(device)).contiguous(memory_format=torch.channels_last)
        return self.module(x).float()

    def run_uint8(self, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
        """Outputs for uint8 images already in the teacher's view, in batches."""
        outs = [self(images[i:i + batch].float().div(255)) for i in range(0, images.shape[0], batch)]
        return torch.cat(outs) if outs else torch.zeros(0, self.output_dim)


def load_teacher(teacher: str | os.PathLike | nn.Module | Teacher, *, loss: str | None = None,
                 kind: str | None = None, input_size: int | None = None,
                 preprocess: dict[str, Any] | None = None) -> Teacher:
    """A :class:`Teacher` from a weights file (anything :func:`mobilenets.load_pretrained` or
    :func:`mobilenets.load_detector` reads, or a run directory) or an ``nn.Module`` (then give
    ``kind``, ``input_size`` and ``preprocess``). With ``loss``, a teacher whose output does not
    fit it is refused with one line (an embedding extractor cannot teach ``kd``)."""
    if isinstance(teacher, Teacher):
        t = teacher
    elif isinstance(teacher, nn.Module):
        if kind is None:
            raise ValueError("a teacher given as an nn.Module needs its output kind: kind='logits', 'embedding' "
                             "or 'multilabel'")
        t = Teacher(teacher, kind, int(input_size or 224), dict(preprocess or IMAGENET_PREPROCESS))
    else:
        t = _from_file(Path(teacher), loss)
    if loss is not None and t.kind not in FITS[loss]:
        what = {"embedding": "an embedding (no classifier)", "logits": "class logits",
                "multilabel": "per-image multi-label scores"}[t.kind]
        fits = {"logits": "kd or embedding", "embedding": "embedding", "multilabel": "multilabel"}[t.kind]
        raise ValueError(f"teacher {t.source} outputs {what}, which --loss {loss} cannot learn from; use --loss {fits}")
    if loss == "embedding" and t.kind == "logits":
        t = _embedding_of(t)
    return t


def _from_file(path: Path, loss: str | None) -> Teacher:
    if not path.exists():
        raise ValueError(f"--teacher {path}: no such file or run directory")
    identity = f"{path.name}:{_file_digest(path)}"
    if is_detector_file(path):
        det = load_detector(path)
        mean = list(det.transform.image_mean)
        std = list(det.transform.image_std)
        info = getattr(det, "pretrained_cfg", None)
        quant = getattr(info, "input_quantization", None)
        return Teacher(_DetectorScores(det), "multilabel", int(det.resolution),
                       {"mean": mean, "std": std, "crop": 1.0, "resize": "bilinear"}, quant, [coco_category_names()[c] for c in COCO80_TO_91],
                       str(path), identity)
    try:
        net = load_pretrained(path)
    except ValueError as e:
        raise ValueError(f"--teacher {path}: not a model this library can load ({e})") from None
    info = net.pretrained_cfg
    pre = dict(info.preprocess or IMAGENET_PREPROCESS)
    size = int(info.input_size or net.config.resolution)
    names = list(info.class_names or [])
    kind = "embedding" if net.config.num_classes == 0 else "logits"
    if kind == "logits" and not names:
        names = [str(i) for i in range(net.config.num_classes)]
    quant = info.input_quantization if info.quantized else None
    return Teacher(net, kind, size, pre, quant, names, str(path), identity)


def _embedding_of(t: Teacher) -> Teacher:
    """A classifier teacher's pooled features (for the embedding loss)."""
    return Teacher(_Features(t.module), "embedding", t.input_size, t.preprocess, t.input_quantization,
                   [], t.source, t.identity + ":features")
