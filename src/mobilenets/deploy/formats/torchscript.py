"""TorchScript: ``torch.jit.trace`` + ``freeze`` of the BN-folded model, run by ``torch.jit.load``."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..runner import Runner, torch_call
from ..support import quiet
from .base import Format, Verify

__all__ = ["FORMAT", "open_torchscript", "write_torchscript"]


def write_torchscript(model: nn.Module, example: torch.Tensor, path: str, batch: int | str) -> None:
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        torch.jit.save(frozen, path)


def open_torchscript(path: str, *, threads: int | None = None, precision: str = "fp32", device: str = "cpu") -> Runner:
    with warnings.catch_warnings():  # "torch.jit is deprecated": the format is still asked for
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location=device).eval()
    return Runner("torch.jit " + torch.__version__, torch_call(module, device), None)


FORMAT = Format(
    name="torchscript", suffixes=(".pt", ".torchscript", ".ts", ".jit"), runtime="torch", runtime_module="torch",
    runtime_package="torch", write=write_torchscript, open=open_torchscript,
    toolchain="torch.jit.trace + freeze, BN folded", verify=Verify(qat_exact=True), bf16=True,
)
