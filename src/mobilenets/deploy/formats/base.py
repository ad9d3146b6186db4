"""The registry entry type: everything mobilenets knows about one export format."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..runner import Runner

__all__ = ["METADATA_KEY", "Format", "Int8Writer", "Opener", "Verify", "Writer", "batch_dim", "calibration_chunks",
           "read_zip_metadata"]

# (fused model, example input (static batch), path, batch: int or "dynamic") → writes path
Writer = Callable[[nn.Module, torch.Tensor, str, int | str], None]
# ... + calibration inputs (N, C, R, R) float32
Int8Writer = Callable[[nn.Module, torch.Tensor, str, int | str, np.ndarray], None]
# (path, *, threads, precision, device) → Runner
Opener = Callable[..., Runner]
# The key under which an export stores what a reader needs to run it like the PyTorch model (a JSON
# text: config, preprocessing, class names, input size; see mobilenets.deploy.exported).
METADATA_KEY = "mobilenets"


@dataclass(frozen=True)
class Verify:
    """How an export of this format is checked against PyTorch before it is kept."""

    tolerance: float = 1e-4  # fp32: bound on max |Δ|, relative to the logits' magnitude when that exceeds 1
    min_cosine: float = 0.9  # int8: mean logit cosine with fp32 below this is a broken file, not rounding
    min_agreement: float = 0.9  # int8: top-1 agreement with fp32 on held-out real images, or the export fails
    qat_exact: bool = False  # a QAT model's file runs its fake-quant graph as PyTorch does (checked as fp32)


@dataclass(frozen=True)
class Format:
    """One export format: how it is written (fp32, int8), opened, verified, named and run."""

    name: str
    suffixes: tuple[str, ...]  # the first is the one written; all are recognised by format_for_path
    runtime: str  # the runtime (bench / CLI name) that runs the file
    runtime_module: str  # that runtime's import name, to tell whether it is installed
    runtime_package: str  # ... and its pip name
    write: Writer
    open: Opener
    toolchain: str
    write_int8: Int8Writer | None = None  # None: no int8 export for this format
    int8_toolchain: Callable[[], str] | None = None  # called at export time (it may depend on the CPU)
    verify: Verify = field(default_factory=Verify)
    bf16: bool = False  # the runtime has a bf16 CPU path for this file
    path_rule: str | None = None  # when set, the output must end in one of `suffixes` (this says why)
    embed: Callable[[str, str], None] | None = None  # (path, JSON text): store METADATA_KEY in a written file
    read_metadata: Callable[[str], str | None] | None = None  # path → that text, None when the file has none

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @property
    def int8(self) -> bool:
        return self.write_int8 is not None

    def describe(self, int8: bool) -> str:
        """The toolchain line of an :class:`~mobilenets.deploy.ExportReport`."""
        if int8 and self.int8_toolchain is not None:
            return self.int8_toolchain()
        return self.toolchain


def batch_dim(batch: int | str) -> Any:
    """The exporters' batch dimension: ``None`` (static) or a ``torch.export.Dim``."""
    return torch.export.Dim("batch", min=1, max=4096) if batch == "dynamic" else None


def calibration_chunks(calibration: np.ndarray, step: int) -> list[np.ndarray]:
    """Calibration inputs in contiguous batches of ``step`` (a partial last batch is dropped)."""
    return [np.ascontiguousarray(calibration[i:i + step]) for i in range(0, calibration.shape[0] - step + 1, step)]


def read_zip_metadata(path: str) -> str | None:
    """``extra/METADATA_KEY`` of a torch zip archive (TorchScript's and torch.export's extra files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.split("/", 1)[-1] == f"extra/{METADATA_KEY}"), None)
            return archive.read(name).decode() if name is not None else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError):
        return None
