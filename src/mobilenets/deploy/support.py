"""Small helpers the deployment modules share: optional backends and quiet exporters."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["need", "quiet"]

# "" is the root logger: onnxruntime.quantization logs its advice there.
_CHATTY_LOGGERS = ("", "torch.onnx", "torch.export", "nncf", "onnxscript", "torch._dynamo")


def need(module: str, package: str, why: str) -> Any:
    """Import an optional backend, or raise a one-line ``ValueError`` naming the package."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{why} needs the {package} package: pip install {package}") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporters' progress chatter (stdout, warnings, INFO logs); errors still raise."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
