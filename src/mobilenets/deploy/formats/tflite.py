"""TFLite: mobilenets' own flatbuffer writer (:mod:`.tflite_writer`, NHWC input), run by LiteRT;
int8 by LiteRT's post-training quantizer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...quant import correct_bias_for_int8
from ..cpu import usable_cores
from ..runner import Runner
from ..support import need
from .base import METADATA_KEY, Format
from .tflite_writer import embed_tflite_metadata, model_to_tflite, nchw_to_nhwc, quantize_tflite, read_tflite_metadata

__all__ = ["FORMAT", "embed_tflite", "open_tflite", "read_tflite", "write_tflite", "write_tflite_int8"]


def write_tflite(model: nn.Module, example: torch.Tensor, path: str, batch: int | str) -> None:
    with open(path, "wb") as f:
        f.write(model_to_tflite(model, batch=None if batch == "dynamic" else int(example.shape[0]),
                                resolution=int(example.shape[-1])))


def write_tflite_int8(model: nn.Module, example: torch.Tensor, path: str, batch: int | str,
                      calibration: np.ndarray) -> None:
    step = int(example.shape[0])
    model = correct_bias_for_int8(model, calibration)
    float_file = model_to_tflite(model, batch=None if batch == "dynamic" else step, resolution=int(example.shape[-1]))
    chunks = (nchw_to_nhwc(calibration[i:i + step]) for i in range(0, calibration.shape[0] - step + 1, step))
    with open(path, "wb") as f:
        f.write(quantize_tflite(float_file, chunks))


def open_tflite(path: str, *, threads: int | None = None, precision: str = "fp32", device: str = "cpu") -> Runner:
    """A LiteRT interpreter (XNNPACK) on ``path``; accepts NCHW or the file's NHWC input."""
    litert = need("ai_edge_litert.interpreter", "ai-edge-litert", "running TFLite files")
    version = getattr(need("ai_edge_litert", "ai-edge-litert", "running TFLite files"), "__version__", "")
    interp = litert.Interpreter(model_path=path, num_threads=threads or usable_cores())
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    dynamic = int(inp["shape_signature"][0]) == -1
    current = [tuple(int(d) for d in inp["shape"])]

    def run(x: np.ndarray) -> np.ndarray:
        shape = current[0]
        if x.ndim == 4 and x.shape[1:] != shape[1:] and (x.shape[2], x.shape[3], x.shape[1]) == shape[1:]:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NCHW (PyTorch) → NHWC (TFLite)
        if dynamic and x.shape[0] != shape[0]:
            interp.resize_tensor_input(inp["index"], list(x.shape))
            interp.allocate_tensors()
            current[0] = tuple(x.shape)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])
    return Runner(f"ai-edge-litert {version}".strip(), run, None if dynamic else int(inp["shape"][0]), layout="NHWC")


def embed_tflite(path: str, text: str) -> None:
    """Store ``text`` as the flatbuffer's metadata entry METADATA_KEY (LiteRT ignores it when running)."""
    with open(path, "rb") as f:
        buf = f.read()
    with open(path, "wb") as f:
        f.write(embed_tflite_metadata(buf, {METADATA_KEY: text}))


def read_tflite(path: str) -> str | None:
    """The metadata entry METADATA_KEY of a TFLite file, or None (Google's files have none)."""
    with open(path, "rb") as f:
        return read_tflite_metadata(f.read()).get(METADATA_KEY)


FORMAT = Format(
    name="tflite", suffixes=(".tflite",), runtime="litert", runtime_module="ai_edge_litert",
    runtime_package="ai-edge-litert", write=write_tflite, open=open_tflite,
    toolchain="mobilenets' TFLite writer (deploy.formats.tflite_writer), BN folded, NHWC input",
    write_int8=write_tflite_int8, embed=embed_tflite, read_metadata=read_tflite,
    int8_toolchain=lambda: ("LiteRT post-training quantizer (ai-edge-litert calibration wrapper): per-channel "
                            "symmetric int8 weights (bias-corrected), int8 activations, MinMax calibration, "
                            "float32 I/O"),
)
