"""A loaded export as a function of NumPy arrays: the common face of every runtime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Runner", "torch_call"]


class Runner:
    """A loaded export: ``runner(x)`` maps a float32 NCHW array to float32 logits.

    ``layout`` is the file's own input layout (``"NHWC"`` for TFLite); ``prepare(x)`` converts
    an NCHW batch to it once, so a timing loop can feed the file directly (``runner(x)`` also
    accepts the prepared array).
    """

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray], batch: int | None,
                 layout: str = "NCHW") -> None:
        self.name = name
        self.fn = fn
        self.batch = batch  # static batch of the file, or None when dynamic
        self.layout = layout

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """``x`` (NCHW) in the file's input layout."""
        if self.layout == "NHWC":
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)

    def run_all(self, x: np.ndarray) -> np.ndarray:
        """Outputs for any number of samples (chunked / padded to the file's static batch)."""
        if self.batch is None:
            return np.array(self.fn(x), copy=True)
        out = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            n = chunk.shape[0]
            if n < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            out.append(np.array(self.fn(np.ascontiguousarray(chunk)), copy=True)[:n])
        return np.concatenate(out)


def torch_call(module: Callable[[torch.Tensor], torch.Tensor], device: str) -> Callable[[np.ndarray], np.ndarray]:
    """``module`` as a NumPy → NumPy function (inference mode, float32 logits on the CPU)."""
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return run
