"""Loading and saving detectors: Google's TFLite SSD files (read by :mod:`.tflite_ssd`) and our own
detector checkpoints (the builder's options + the state dict, so the file rebuilds its model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import atomic_write, error_line
from ..models import PretrainedInfo
from .tflite_graph import read_tflite_graph
from .tflite_ssd import is_tflite_ssd, read_tflite_ssd

__all__ = ["DETECTOR_FORMAT", "is_detector_file", "load_detector", "save_detector"]

DETECTOR_FORMAT = "mobilenets-detector"


def _builders() -> dict[str, Any]:
    # imported on use: torchvision's detection stack costs seconds at start-up, and only detectors need it
    from ..models.detection import faster_rcnn_mobilenet_v1, ssd_mobilenet_v1

    return {"ssd": ssd_mobilenet_v1, "faster_rcnn": faster_rcnn_mobilenet_v1}


def save_detector(path: str | os.PathLike, model: nn.Module, *, arch: str, build: dict[str, Any],
                  **extra: Any) -> None:
    """Save a detector so that :func:`load_detector` rebuilds it: ``arch`` ("ssd" or "faster_rcnn")
    and the keyword arguments it was built with, plus anything in ``extra`` (written atomically)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": DETECTOR_FORMAT, "arch": arch, "build": build, "model": state, **extra}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def is_detector_file(path: str | os.PathLike) -> bool:
    """Whether a file (or run directory) holds a detector: a TFLite graph ending in SSD
    post-processing, or our detector checkpoint. Cheap: reads the graph or the pickle's header."""
    path = Path(path)
    if path.is_dir():
        path = next((path / c for c in ("best.pt", "checkpoint.pt") if (path / c).is_file()), path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        try:
            return is_tflite_ssd(read_tflite_graph(path))
        except ValueError:
            return False
    try:
        payload = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file: not our detector
        return False
    return isinstance(payload, dict) and payload.get("format") == DETECTOR_FORMAT


def load_detector(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """A detector from Google's TFLite SSD MobileNet V1 file or our detector checkpoint (eval mode).

    The model carries ``pretrained_cfg``, a :class:`~mobilenets.models.PretrainedInfo` (format, path,
    input quantization; in ``extra`` for TFLite files the file's anchors, ``anchor_max_diff`` against
    our generator's and the activation ranges)."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("best.pt", "checkpoint.pt"):
            if (path / candidate).is_file():
                return load_detector(path / candidate, device=device)
        raise ValueError(f"{path}: a directory without best.pt or checkpoint.pt; give a detector file or a run")
    if not path.is_file():
        raise ValueError(f"{path}: no such detector file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        from ..models.detection import freeze_batchnorm

        build, state, info = read_tflite_ssd(path)
        model = _builders()["ssd"](**build)
        freeze_batchnorm(model.backbone, extras=True)  # every BN of the file is a folded identity
        arch = "ssd"
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
            raise ValueError(f"{path}: not a detector file ({error_line(e, 80)})") from None
        if not isinstance(payload, dict) or payload.get("format") != DETECTOR_FORMAT:
            raise ValueError(f"{path}: not a detector checkpoint of mobilenets (a classifier? use load_pretrained)")
        arch, build, state = payload["arch"], dict(payload["build"]), payload["model"]
        if arch not in _builders():
            raise ValueError(f"{path}: unknown detector architecture {arch!r}")
        model = _builders()[arch](**build)
        info = {"format": DETECTOR_FORMAT, "path": str(path), "class_names": payload.get("class_names")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the {arch} detector (missing {missing[:2]}, "
                         f"unexpected {unexpected[:2]})")
    if "anchors" in info and arch == "ssd":
        ours = model.anchor_generator.cxcywh(model.grid_sizes())
        info["anchor_max_diff"] = float((ours[:, [1, 0, 3, 2]] - torch.as_tensor(info["anchors"])).abs().max())
    info.update(arch=arch, build=build)
    model.pretrained_cfg = PretrainedInfo.from_reader(info)  # type: ignore[attr-defined]
    return model.to(device).eval()

