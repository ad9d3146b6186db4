"""The export formats: one module each, and :data:`REGISTRY`, the one place that lists them.

Each format module defines a :class:`Format` entry (``FORMAT``): its fp32 and int8 writers,
its runtime's opener, its verification settings, its file suffixes, the runtime that
runs it, and how mobilenets' metadata (config, preprocessing, classes) is stored in and read
from its files (``embed`` / ``read_metadata``: exported files run as models, see
:mod:`mobilenets.deploy.exported`). Everything else (``export``, ``open_runtime``, ``bench``, ``select`` and the CLI's
choices) reads the lists below, derived from the registry:

============  ===================  ==============  ===============================
format        file                 runtime         int8 (post-training, static)
============  ===================  ==============  ===============================
onnx          ``.onnx``            onnxruntime     onnxruntime.quantization, QDQ
openvino      ``.xml`` + ``.bin``  openvino        NNCF
torchscript   ``.pt``              torch           (not supported)
pt2           ``.pt2``             torch           PT2E (torchao), x86 quantizer
tflite        ``.tflite``          litert          LiteRT's calibrator/quantizer
executorch    ``.pte``             executorch      (not supported: fp32, XNNPACK)
============  ===================  ==============  ===============================

ExecuTorch is optional: :mod:`.executorch` imports it only when a ``.pte`` is written or run.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import executorch, onnx, openvino, pt2, tflite, torchscript
from .base import Format, Verify

__all__ = [
    "EAGER_RUNTIME",
    "FORMATS",
    "INT8_FORMATS",
    "REGISTRY",
    "RUNTIMES",
    "Format",
    "Verify",
    "format_for_path",
    "format_of_runtime",
    "get_format",
    "runtime_module",
    "runtime_package",
]

REGISTRY: dict[str, Format] = {f.name: f for f in (onnx.FORMAT, openvino.FORMAT, torchscript.FORMAT, pt2.FORMAT,
                                                   tflite.FORMAT, executorch.FORMAT)}
FORMATS: tuple[str, ...] = tuple(REGISTRY)
INT8_FORMATS: tuple[str, ...] = tuple(name for name, f in REGISTRY.items() if f.int8)
# PyTorch itself: bench times the eager (or compiled) model, not a file; torchscript and pt2 run in it.
EAGER_RUNTIME = "torch"
RUNTIMES: tuple[str, ...] = tuple(dict.fromkeys((EAGER_RUNTIME, *(f.runtime for f in REGISTRY.values()))))


def get_format(name: str) -> Format:
    """The registry entry of ``name``; a one-line ``ValueError`` for an unknown format."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown export format {name!r}; choose one of: {', '.join(FORMATS)}") from None


def format_for_path(path: str | os.PathLike) -> str | None:
    """The format a file name suggests (``model.onnx`` → ``"onnx"``), or ``None``."""
    suffix = Path(path).suffix.lower()
    return next((f.name for f in REGISTRY.values() if suffix in f.suffixes), None)


def format_of_runtime(runtime: str) -> Format | None:
    """The format ``bench`` exports to time ``runtime``: the one format it runs, or ``None`` for
    :data:`EAGER_RUNTIME` (timed on the model itself)."""
    return None if runtime == EAGER_RUNTIME else _first(runtime)


def _first(runtime: str) -> Format:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return next(f for f in REGISTRY.values() if f.runtime == runtime)


def runtime_module(runtime: str) -> str:
    """The import name of ``runtime`` (to tell whether it is installed)."""
    return _first(runtime).runtime_module


def runtime_package(runtime: str) -> str:
    """The pip package of ``runtime``."""
    return _first(runtime).runtime_package
