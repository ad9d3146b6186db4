"""Exported files are models too: run a file that ``mobilenets export`` wrote in its own runtime.

:func:`load_exported` opens an ONNX, OpenVINO, TFLite, TorchScript, PT2 or ExecuTorch export in the
runtime that verified it (:data:`~mobilenets.deploy.formats.REGISTRY`: onnxruntime, openvino, LiteRT,
torch, ExecuTorch) and returns an
:class:`ExportedModel`: an ``nn.Module`` with a :class:`~mobilenets.models.MobileNetV1`'s face
(``config``, ``resolution``, ``num_classes``, ``pretrained_cfg``), so that
:class:`~mobilenets.inference.Classifier`, :func:`~mobilenets.inference.evaluate_imagenet_folder`
and :func:`~mobilenets.inference.evaluate_dataset` run it exactly as they run the PyTorch model,
with the same preprocessing, labels and output keys. The config, preprocessing, input size and
class names come from the metadata ``export`` stores in the file (:func:`file_metadata`), so an
int8 file is measured as it will be deployed::

    model = load_exported("m_int8.tflite")
    Classifier(model).predict(["cat.jpg"])

Google's own TFLite files are weights (read into PyTorch by :func:`mobilenets.load_pretrained`),
not exports: :func:`exported_format` tells the two apart by the metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import MobileNetConfig
from ..models import PretrainedInfo
from .formats import REGISTRY, format_for_path, get_format
from .formats.base import METADATA_KEY
from .runtime import open_runtime

__all__ = ["ExportedModel", "exported_format", "load_exported", "read_export_metadata"]

# Formats whose files export writes metadata into (the others: torch-only containers).
_READABLE = tuple(name for name, f in REGISTRY.items() if f.read_metadata is not None)


def exported_format(path: str | os.PathLike) -> str | None:
    """The format of a file ``mobilenets export`` wrote (``"onnx"``, ``"openvino"``,
    ``"tflite"``, ``"torchscript"``, ``"pt2"``, ``"executorch"``), or ``None`` for a weights file (ours,
    Google's TFLite or Keras files, timm's, ...) or anything else. ONNX and OpenVINO files are exports by
    their suffix; a TFLite file only when it carries export metadata (Google's TFLite files are
    weights); a torch zip when it holds TorchScript code or an exported program; an ExecuTorch
    program (``.pte``) by its flatbuffer identifier."""
    path = Path(path)
    if not path.is_file():
        return None
    name = format_for_path(path)
    if name in ("onnx", "openvino"):
        return name
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[4:8] == b"TFL3":
        from .formats.tflite_writer import read_tflite_metadata

        try:
            entries = read_tflite_metadata(path.read_bytes())
        except (ValueError, ImportError):
            return None
        return "tflite" if METADATA_KEY in entries or "mobilenets_config" in entries else None
    if head[4:6] == b"ET" and head[6:8].isdigit():  # ExecuTorch's file identifier, "ET" + schema version
        return "executorch"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any(n.split("/", 1)[-1].startswith("code/") for n in names):
            return "torchscript"
        if any(n.split("/", 1)[-1].startswith("models/") for n in names):
            return "pt2"
    return None


def read_export_metadata(path: str | os.PathLike, format: str) -> dict[str, Any]:
    """The metadata ``export`` stored in the file; a one-line ``ValueError`` when it has none."""
    fmt = get_format(format)
    if fmt.read_metadata is None:
        raise ValueError(f"{path}: a {format} export runs in {fmt.runtime}, but mobilenets stores no metadata "
                         f"(classes, preprocessing) in {format} files; to predict or evaluate, export to one of: "
                         f"{', '.join(_READABLE)}")
    text = fmt.read_metadata(str(path))
    if text is None:
        raise ValueError(f"{path}: a {format} file without mobilenets' metadata (it was not written by "
                         "`mobilenets export`, or by an older version): the preprocessing and classes are "
                         "unknown; export it again with `mobilenets export`")
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict) or "config" not in meta:
            raise ValueError("no config")
        return meta
    except ValueError:
        raise ValueError(f"{path}: its mobilenets metadata is not readable; export it again") from None


class ExportedModel(nn.Module):
    """An exported file run in its runtime, with a :class:`~mobilenets.models.MobileNetV1`'s face.

    ``forward`` takes ``(N, C, R, R)`` float images (any N; the file's static batch is handled)
    and returns the file's float32 output as a tensor: logits, or embeddings for a file without
    a classifier. ``runtime`` names the runtime and its version; ``int8``: the file is quantized.
    """

    def __init__(self, path: str | os.PathLike, format: str, runner: Any, metadata: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.format, self.runner = str(path), format, runner
        size = int(metadata.get("input_size") or metadata["config"]["resolution"])
        self.config = MobileNetConfig.from_dict(metadata["config"]).replace(resolution=size)
        self.int8 = bool(metadata.get("int8"))
        quantization = metadata.get("input_quantization")
        self.pretrained_cfg = PretrainedInfo(
            format=f"{format} export", path=self.path, config=self.config,
            preprocess=dict(metadata.get("preprocess") or {}), class_names=metadata.get("class_names"),
            has_background_class=bool(metadata.get("has_background_class")),
            quantized=quantization is not None,
            input_quantization=(float(quantization[0]), int(quantization[1])) if quantization else None,
            input_size=size, extra={"runtime": runner.name, "int8": self.int8, "source": metadata.get("source")})

    @property
    def runtime(self) -> str:
        return str(self.runner.name)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, r = self.config.in_chans, self.config.resolution
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (c, r, r):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.path} takes images of shape (N, {c}, {r}, {r}) (its input size is fixed "
                             f"when exported), got {got}")
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self.runner.run_all(array), dtype=np.float32))

    def extra_repr(self) -> str:
        return f"{self.path!r}, format={self.format}, runtime={self.runtime!r}, config={self.config}"


def load_exported(path: str | os.PathLike, *, format: str | None = None, resolution: int | None = None,
                  threads: int | None = None, device: str = "cpu") -> ExportedModel:
    """Open a file written by ``mobilenets export`` in its runtime (see the module docstring).

    ``format``: default :func:`exported_format`'s answer. ``resolution``: what the caller expects;
    an export's input size is fixed, so another one is a one-line ``ValueError``. A file without
    the metadata export writes (another tool's, or an older version's) is refused: its
    preprocessing and classes would be guesses.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    format = format or exported_format(path)
    if format is None:
        raise ValueError(f"{path}: not a file written by `mobilenets export` (ONNX, OpenVINO or TFLite with "
                         "mobilenets' metadata); weights files load with mobilenets.load_pretrained")
    metadata = read_export_metadata(path, format)
    if metadata.get("kind", "mobilenets-classifier") != "mobilenets-classifier":
        raise ValueError(f"{path}: an exported {metadata.get('kind')}, not a classifier")
    size = int(metadata.get("input_size") or metadata["config"]["resolution"])
    if resolution is not None and resolution != size:
        raise ValueError(f"{path}: the file's input size is fixed at {size} px (set when it was exported); "
                         f"--resolution {resolution} needs another export (`mobilenets export --resolution "
                         f"{resolution}`)")
    runner = open_runtime(path, format, threads=threads, precision="int8" if metadata.get("int8") else "fp32",
                          device=device)
    return ExportedModel(path, format, runner, metadata)
