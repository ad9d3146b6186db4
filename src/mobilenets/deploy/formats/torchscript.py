"""TorchScript: ``torch.jit.trace`` + ``freeze`` of the BN-folded model, run by ``torch.jit.load``."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..runner import Runner, torch_call
from ..support import quiet
from .base import METADATA_KEY, Format, Verify, read_zip_metadata

__all__ = ["FORMAT", "embed_torchscript", "open_torchscript", "write_torchscript"]


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


def embed_torchscript(path: str, text: str) -> None:
    """Store ``text`` as the archive's extra file METADATA_KEY (saved again with it)."""
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.load(path, map_location="cpu"), path, _extra_files={METADATA_KEY: text})


FORMAT = Format(
    name="torchscript", suffixes=(".pt", ".torchscript", ".ts", ".jit"), runtime="torch", runtime_module="torch",
    runtime_package="torch", write=write_torchscript, open=open_torchscript,
    toolchain="torch.jit.trace + freeze, BN folded", verify=Verify(qat_exact=True), bf16=True,
    embed=embed_torchscript, read_metadata=read_zip_metadata,
)
