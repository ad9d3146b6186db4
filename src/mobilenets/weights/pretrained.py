"""Load any MobileNet V1 weights file into our model, and save ours safely.

:func:`load_pretrained` recognizes a file by its content, never its name:

========================  =========================================  ==========================
first bytes               format                                     reader
========================  =========================================  ==========================
``....TFL3``              TFLite (Google's float / uint8 models)     :mod:`.convert.tflite`
``\\x89HDF``               Keras ``MobileNet`` ``.h5`` / ``.weights.h5``  :mod:`.convert.keras`
``PK`` or pickle          ``torch.save`` (ours, a plain state dict,  :func:`torch.load`
                          timm's ``mobilenetv1_100``)
8-byte length + ``{``     ``.safetensors`` (ours, plain, timm's)     :mod:`safetensors`
========================  =========================================  ==========================

Whatever the source, the result is a :class:`~mobilenets.models.MobileNetV1` whose config
(α, ρ, classes, activation, padding, BN epsilon) was read from the file, loaded strictly;
any mismatch is a one-line ``ValueError`` and nothing half-loaded is returned.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._utils import atomic_write, error_line
from ..config import MobileNetConfig
from ..data.preprocess import IMAGENET_PREPROCESS, TF_PREPROCESS
from ..models import MobileNetV1, PretrainedInfo, pretrained_cfg
from .keras import load_keras
from .tflite import load_tflite

__all__ = [
    "load_pretrained", "read_weights", "save_checkpoint", "atomic_write", "state_dict_config",
    "TF_PREPROCESS", "IMAGENET_PREPROCESS",
]

# How inputs must be prepared for a model: TF-slim's ([-1, 1]) or torchvision's ImageNet statistics.

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise ValueError(f"{path}: file is empty or truncated ({len(head)} bytes); not a weights file")
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(b"PK\x03\x04"):
        try:  # a Keras 3 ``.keras`` archive holds model.weights.h5; torch.save zips do not
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" in archive.namelist():
                    return "keras"
        except zipfile.BadZipFile:
            pass
        return "torch"
    if head[:1] == b"\x80":
        return "torch"
    (n,) = struct.unpack("<Q", head[:8])
    if 2 <= n < 100_000_000 and head[8:9] == b"{":
        return "safetensors"
    raise ValueError(
        f"{path}: not a weights file this library reads (TFLite, Keras .h5, PyTorch .pt/.pth, .safetensors)")


def save_checkpoint(path: str | os.PathLike, model: MobileNetV1, **extra: Any) -> None:
    """Save a model (and anything else: optimizer state, epoch, ...) so that
    :func:`load_pretrained` rebuilds it exactly. ``.safetensors`` stores weights and config only."""
    path = Path(path)
    config = model.config.to_dict()
    info = pretrained_cfg(model)
    preprocess = extra.get("preprocess", info.preprocess if info is not None and info.preprocess else IMAGENET_PREPROCESS)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {"format": "mobilenets", "config": json.dumps(config),
                "preprocess": json.dumps(preprocess)}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
        return
    payload = {"format": "mobilenets", "config": config, "model": state, **extra, "preprocess": preprocess}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


# ----------------------------------------------------------------------------- state dicts

_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|conv_pw|bn1|bn2)\.(.+)$")


def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``mobilenetv1_*`` keys → ours (timm groups blocks by stage; we number them 1..13)."""
    order: list[tuple[int, int]] = sorted({(int(m[1]), int(m[2])) for k in sd if (m := _TIMM_BLOCK.match(k))})
    index = {pair: i + 1 for i, pair in enumerate(order)}
    part = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "pw.conv", "bn2": "pw.bn"}
    out = {}
    for k, v in sd.items():
        if k.startswith("conv_stem."):
            out["features.0.conv." + k[len("conv_stem."):]] = v
        elif k.startswith("bn1."):
            out["features.0.bn." + k[len("bn1."):]] = v
        elif m := _TIMM_BLOCK.match(k):
            out[f"features.{index[(int(m[1]), int(m[2]))]}.{part[m[3]]}.{m[4]}"] = v
        elif k.startswith("classifier."):
            out[k] = v
        else:
            raise ValueError(f"unexpected tensor {k!r} in a timm mobilenetv1 state dict")
    return out


def state_dict_config(sd: dict[str, torch.Tensor], name: str = "state dict") -> MobileNetConfig:
    """Infer α, variant, classes and input channels from the tensor shapes of our state dict."""
    stem = sd.get("features.0.conv.weight")
    if stem is None or stem.dim() != 4:
        raise ValueError(f"{name}: not a MobileNet V1 state dict (no features.0.conv.weight)")
    layers = {int(m[1]) for k in sd if (m := re.match(r"^features\.(\d+)\.", k))}
    n_layers = max(layers) + 1
    if "features.1.dw.conv.weight" in sd:
        variant = "separable" if n_layers == 14 else "shallow" if n_layers == 9 else None
    else:
        variant = "conv" if n_layers == 14 else None
    if variant is None:
        raise ValueError(f"{name}: not a MobileNet V1 state dict ({n_layers} layers; expected 14, or 9 for shallow)")
    last = sd.get(f"features.{n_layers - 1}.{'pw.conv' if variant != 'conv' else 'conv'}.weight")
    if last is None:
        raise ValueError(f"{name}: not a MobileNet V1 state dict (no weights for layer {n_layers - 1})")
    width = last.shape[0] / 1024  # the widest layer gives α most precisely (min_depth aside)
    cls = sd.get("classifier.weight")
    return MobileNetConfig(width_multiplier=width, variant=variant, in_chans=int(stem.shape[1]),
                           num_classes=int(cls.shape[0]) if cls is not None else 0)


def _check_and_load(model: MobileNetV1, sd: dict[str, torch.Tensor], name: str) -> None:
    """Strict load with a one-line message naming the first tensor that does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise ValueError(f"{name}: weights do not fit {model.config.label}: missing tensor {missing[0]} "
                         f"({len(missing)} missing)")
    if unexpected:
        raise ValueError(f"{name}: weights do not fit {model.config.label}: unexpected tensor {unexpected[0]} "
                         f"({len(unexpected)} unexpected)")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(f"{name}: tensor {k} has shape {tuple(sd[k].shape)}, the model "
                             f"({model.config.label}) needs {tuple(v.shape)}")
    model.load_state_dict(sd, strict=True)


def _read_torch(path: Path) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"{path}: truncated or corrupt PyTorch file ({error_line(e, 120)})") from None
    except Exception as e:  # unpickling of foreign objects (weights_only refuses them)
        raise ValueError(f"{path}: not a plain PyTorch weights file ("
                         f"{error_line(e, 120, with_type=True)})") from None
    return _from_mapping(obj, path)


def _from_mapping(obj: Any, path: Path) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict or checkpoint")
    if obj.get("format") == "mobilenets" and "model" in obj:
        config = MobileNetConfig.from_dict(obj["config"])
        info = {"format": "mobilenets", "preprocess": obj.get("preprocess", IMAGENET_PREPROCESS),
                "has_background_class": config.num_classes == 1001}
        for key in ("epoch", "metrics", "class_names", "input_size", "output"):  # output: "embedding" (distilled)
            if key in obj:
                info[key] = obj[key]
        return config, obj["model"], info
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if "conv_stem.weight" in sd:
        sd = _from_timm(sd)
        config = state_dict_config(sd, str(path)).replace(activation="relu6")
        return config, sd, {"format": "timm", "preprocess": IMAGENET_PREPROCESS,
                            "has_background_class": config.num_classes == 1001}
    config = state_dict_config(sd, str(path))
    return config, sd, {"format": "state_dict", "preprocess": IMAGENET_PREPROCESS,
                        "has_background_class": config.num_classes == 1001}


def _read_safetensors(path: Path) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: truncated or corrupt safetensors file ({e})") from None
    if meta.get("format") == "mobilenets":
        obj = {"format": "mobilenets", "config": json.loads(meta["config"]), "model": sd,
               "preprocess": json.loads(meta.get("preprocess", "null")) or IMAGENET_PREPROCESS}
        return _from_mapping(obj, path)
    return _from_mapping(sd, path)


def read_weights(path: str | os.PathLike) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file of any supported format: ``(config, state_dict, info)``."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"give the weights as a file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        for candidate in ("best.pt", "checkpoint.pt"):
            if (path / candidate).is_file():
                return read_weights(path / candidate)
        raise ValueError(f"{path}: a directory without best.pt or checkpoint.pt; give a weights file or a run directory")
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    if path.suffix.lower() in (".onnx", ".xml"):
        raise ValueError(f"{path}: an exported model ({'ONNX' if path.suffix.lower() == '.onnx' else 'OpenVINO'}), "
                         "not weights: run it in its runtime with mobilenets.deploy.load_exported(path), or "
                         "`mobilenets predict/evaluate --weights FILE`")
    kind = _sniff(path)
    if kind == "tflite":
        config, sd, info = load_tflite(path)
        info.setdefault("preprocess", TF_PREPROCESS)
    elif kind == "keras":
        config, sd, info = load_keras(path)
        info.setdefault("preprocess", TF_PREPROCESS)
    elif kind == "torch":
        config, sd, info = _read_torch(path)
    else:
        config, sd, info = _read_safetensors(path)
    info["path"] = str(path)
    return config, sd, info


def load_pretrained(path: str | os.PathLike, *, width_multiplier: float | None = None,
                    resolution: int | None = None, num_classes: int | None = None,
                    device: str | torch.device = "cpu") -> MobileNetV1:
    """Build the right MobileNet for a weights file and load it (eval mode).

    Args:
        path: a TFLite, Keras ``.h5``, PyTorch or safetensors file, or a training run directory.
        width_multiplier / num_classes: what you expect; a file that holds something else is an error.
        resolution: the nominal input size (files that do not record it, like Keras's, default to 224).

    The returned model carries ``model.pretrained_cfg``, a :class:`~mobilenets.models.PretrainedInfo`:
    the format, how to preprocess inputs, whether output 0 is "background", for quantized files the
    input quantization, for a run its classes and training size, for an official model TF-slim's accuracy.
    """
    config, sd, info = read_weights(path)
    if width_multiplier is not None and abs(width_multiplier - config.width_multiplier) > 1e-6:
        raise ValueError(f"{path}: holds α={config.width_multiplier:g} weights, but α={width_multiplier:g} "
                         "was asked for; drop the width option or pick the matching file")
    if num_classes is not None and num_classes != config.num_classes:
        raise ValueError(f"{path}: has {config.num_classes} classes, but {num_classes} were asked for "
                         "(to fine-tune with a new head, use `train --init`)")
    if resolution is not None:
        config = config.replace(resolution=resolution)
    model = MobileNetV1(config)
    _check_and_load(model, sd, str(path))
    model.pretrained_cfg = PretrainedInfo.from_reader(info, config)  # type: ignore[attr-defined]
    return model.to(device).eval()
