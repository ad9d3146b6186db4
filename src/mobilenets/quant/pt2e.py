"""PyTorch's PT2E quantization (torchao) for the x86 inductor backend: post-training int8 of an
exported program (the ``pt2`` format's int8 path) and the PT2E QAT flow from Python."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ['x86_quantizer', 'prepare_qat', 'convert_qat', 'pt2e_quantize']


def x86_quantizer(is_qat: bool) -> Any:
    try:
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError:
        raise ValueError("quantization-aware training needs torchao (PyTorch's PT2E quantization): "
                         "pip install torchao") from None
    # Per-channel weights: per-tensor scales collapse the depthwise layers, whose channels
    # differ in range by orders of magnitude.
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=is_qat))


def prepare_qat(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Insert fake-quantization (int8, per-channel weights) for quantization-aware training.

    Uses PyTorch's PT2E flow (``torchao``): the model is captured with ``torch.export`` and
    observers/fake-quant are inserted where :func:`mobilenets.export` will quantize, so the
    network learns to live with int8 rounding. Train the returned module as usual (BN is still
    trained; it is folded at :func:`convert_qat`), then call :func:`convert_qat`.
    The returned ``GraphModule`` has the input shape of ``example_input`` baked in except
    for the batch dimension.
    """
    quantizer = x86_quantizer(is_qat=True)  # first: a one-line error when torchao is missing
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    if example_input is None:
        config = getattr(model, "config", None)
        r = getattr(config, "resolution", 224)
        c = getattr(config, "in_chans", 3)
        example_input = torch.randn(2, c, r, r)
    batch = torch.export.Dim("batch", min=1, max=4096)
    was_training = model.training
    model.train()
    graph = torch.export.export(model, (example_input,), dynamic_shapes=({0: batch},)).module()
    model.train(was_training)
    prepared = prepare_qat_pt2e(graph, quantizer)
    prepared.qat_config = getattr(model, "config", None)  # type: ignore[assignment]
    return prepared


def convert_qat(prepared: nn.Module) -> nn.Module:
    """The int8 inference model from a QAT-trained :func:`prepare_qat` module (eval mode)."""
    from torchao.quantization.pt2e import (
        allow_exported_model_train_eval,
        move_exported_model_to_eval,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)  # folding: 10× slower, same file after export
    move_exported_model_to_eval(converted)
    allow_exported_model_train_eval(converted)  # so .eval() (export() calls it) is not an error
    if getattr(prepared, "qat_config", None) is not None:
        converted.config = prepared.qat_config  # type: ignore[assignment]  # export() reads ρ from it
    return converted



def pt2e_quantize(model: nn.Module, example: torch.Tensor, batch: int | str, calibration: np.ndarray) -> nn.Module:
    """An int8 copy of ``model`` by PT2E static quantization, calibrated on ``calibration`` (NCHW float)."""
    quantizer = x86_quantizer(is_qat=False)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dim = torch.export.Dim("batch", min=1, max=4096) if batch == "dynamic" else None
    graph = torch.export.export(model, (example,), dynamic_shapes=({0: dim},) if dim is not None else None).module()
    prepared = prepare_pt2e(graph, quantizer)
    step = example.shape[0] if batch != "dynamic" else 16
    with torch.no_grad():
        for i in range(0, calibration.shape[0], step):
            chunk = torch.from_numpy(calibration[i:i + step])
            if batch != "dynamic" and chunk.shape[0] != step:
                continue
            prepared(chunk)
    return convert_pt2e(prepared)
