"""Load an exported file in its runtime, set up for low single-stream latency.

:func:`open_runtime` dispatches through the format registry
(:data:`mobilenets.deploy.formats.REGISTRY`); each format's module holds its opener and
its runtime's settings (:func:`ort_session_options`, :func:`openvino_config`).
"""

from __future__ import annotations

import importlib.util
import os

from .formats import get_format, runtime_module
from .formats.onnx import ort_session_options
from .formats.openvino import openvino_config
from .runner import Runner

__all__ = ["Runner", "open_runtime", "openvino_config", "ort_session_options", "runtime_available"]


def open_runtime(path: str | os.PathLike, format: str, *, threads: int | None = None,
                 precision: str = "fp32", device: str = "cpu") -> Runner:
    """Load an exported file in its runtime, set up for low single-stream latency.

    ``precision``: ``"fp32"`` forces full precision (OpenVINO otherwise picks bf16 on CPUs
    that have it); ``"bf16"`` asks for bf16 where the runtime supports it; ``"int8"`` is for
    files that are already quantized (computation outside the quantized ops in fp32).
    """
    return get_format(format).open(str(path), threads=threads, precision=precision, device=device)


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime`` (one of :data:`~mobilenets.deploy.RUNTIMES`) is installed."""
    try:
        return importlib.util.find_spec(runtime_module(runtime)) is not None
    except ImportError:  # a dotted name ("executorch.runtime") whose parent package is missing
        return False
