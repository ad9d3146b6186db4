"""PT2: a ``torch.export`` program of the BN-folded model; int8 by PT2E (torchao's x86 quantizer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...quant import pt2e_quantize
from ..runner import Runner, torch_call
from ..support import quiet
from .base import METADATA_KEY, Format, Verify, batch_dim, read_zip_metadata

__all__ = ["FORMAT", "embed_pt2", "export_program", "open_pt2", "write_pt2", "write_pt2_int8"]


def export_program(model: nn.Module, example: torch.Tensor, batch: int | str) -> Any:
    dim = batch_dim(batch)
    return torch.export.export(model, (example,), dynamic_shapes=({0: dim},) if dim is not None else None)


def write_pt2(model: nn.Module, example: torch.Tensor, path: str, batch: int | str) -> None:
    with quiet():
        torch.export.save(export_program(model, example, batch), path)


def write_pt2_int8(model: nn.Module, example: torch.Tensor, path: str, batch: int | str,
                   calibration: np.ndarray) -> None:
    with quiet():
        quantized = pt2e_quantize(model, example, batch, calibration)
        torch.export.save(export_program(quantized, example, batch), path)


def _static_batch(ep: Any) -> int | None:
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            node = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
            dim = node.meta["val"].shape[0]
            return int(dim) if isinstance(dim, int) else None
    return None


def open_pt2(path: str, *, threads: int | None = None, precision: str = "fp32", device: str = "cpu") -> Runner:
    ep = torch.export.load(path)
    return Runner("torch.export " + torch.__version__, torch_call(ep.module(), device), _static_batch(ep))


def embed_pt2(path: str, text: str) -> None:
    """Store ``text`` as the archive's extra file METADATA_KEY (saved again with it)."""
    with quiet():
        torch.export.save(torch.export.load(path), path, extra_files={METADATA_KEY: text})


FORMAT = Format(
    name="pt2", suffixes=(".pt2",), runtime="torch", runtime_module="torch", runtime_package="torch",
    write=write_pt2, open=open_pt2, toolchain="torch.export, BN folded",
    write_int8=write_pt2_int8,
    int8_toolchain=lambda: "PT2E (torchao) X86InductorQuantizer: per-channel int8 weights, uint8 activations",
    verify=Verify(qat_exact=True), bf16=True, embed=embed_pt2, read_metadata=read_zip_metadata,
)
