"""ONNX: ``torch.onnx.export`` (dynamo) of the BN-folded model, run and verified in ONNX Runtime.

int8 is ONNX Runtime's post-training static quantization in QDQ form (so both ONNX Runtime
and OpenVINO run it as int8): per-channel symmetric weights after bias correction (for the
grid the file stores), uint8 activations. The settings depend on the CPU that makes the file
(:func:`ort_int8_settings`): ONNX Runtime documents that its U8S8 kernels can saturate on
x86 CPUs without VNNI; there the weights are stored as uint8 too (U8U8, no saturation).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._utils import error_line
from ...quant import correct_bias_for_int8
from .. import cpu
from ..runner import Runner
from ..support import need, quiet
from .base import METADATA_KEY, Format, batch_dim, calibration_chunks

__all__ = ["FORMAT", "embed_onnx", "open_onnx", "ort_int8_settings", "ort_session_options", "read_onnx_metadata",
           "write_onnx", "write_onnx_int8"]


def write_onnx(model: nn.Module, example: torch.Tensor, path: str, batch: int | str) -> None:
    need("onnxscript", "onnxscript", "ONNX export")
    dim = batch_dim(batch)
    with quiet():
        program = torch.onnx.export(model, (example,), dynamo=True, external_data=False, verbose=False,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: dim},) if dim is not None else None)
        program.save(path, external_data=False)


def write_onnx_tmp(model: nn.Module, example: torch.Tensor, batch: int | str, tmpdir: str) -> str:
    """An fp32 ONNX file of ``model`` in ``tmpdir`` (the input of the int8 and OpenVINO paths)."""
    path = os.path.join(tmpdir, "fp32.onnx")
    write_onnx(model, example, path, batch)
    return path


def ort_int8_settings(features: cpu.CpuFeatures | None = None) -> dict[str, Any]:
    """``onnxruntime.quantization.quantize_static`` settings for a CPU (default: this one).

    U8S8 (uint8 activations, int8 weights, MinMax) is the fast path of VNNI / AMX CPUs and exact
    there. Without VNNI (AVX2 or AVX-512 only, e.g. AMD Zen 2-3, Intel before Cascade Lake) ONNX
    Runtime multiplies u8×s8 pairs with ``vpmaddubsw``, whose int16 sums saturate. Its documented
    remedies were measured on an AVX2 EPYC with Google's 0.5-160 weights (100 ImageNet samples,
    Google's uint8 file: 73% top-1): U8S8 61% / 79% agreement with fp32, ``reduce_range`` (7-bit
    weights) 70–71% / 82–84%, U8U8 with symmetric weights, bias correction on the uint8 grid and
    Percentile calibration, chosen here. ``weight_grid`` is the grid for bias correction.

    ``s8_convs="stride2_depthwise"``: the four stride-2 depthwise convs keep int8 weights (U8S8)
    without VNNI too. ONNX Runtime's U8U8 kernel for the first of them (TF SAME pads [0, 0, 1, 1])
    is slow: 18.6 of the 28 ms of a 1.0-224 file. A depthwise conv sums no adjacent channels, and
    ONNX Runtime's U8S8 depthwise kernel is exact on AVX2, saturated inputs included
    (``tests/deploy/test_formats.py``). Measured on an AVX2 EPYC (2026-12-03, the test's calibration
    and five seeded draws; the README's AVX2 section): 72.3% mean top-1 and 96–97 of 100 agreeing
    with fp32, where those convs in fp32 (the previous setting) gave 71.5% / 95–98, at the same speed.
    Quant types are given by name (``QuantType[name]``) so that this needs no onnxruntime to call.
    """
    features = features if features is not None else cpu.cpu_features()
    if features.vnni:
        return {"activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": False, "per_channel": True,
                "calibrate_method": "MinMax", "weight_grid": "s8", "s8_convs": None,
                "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False}}
    return {"activation_type": "QUInt8", "weight_type": "QUInt8", "reduce_range": False, "per_channel": True,
            "calibrate_method": "Percentile", "weight_grid": "u8", "s8_convs": "stride2_depthwise",
            "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False}}


def _is_stride2_depthwise(groups: int, channels_per_group: int, strides: tuple[int, ...]) -> bool:
    """The one definition, for PyTorch modules and ONNX nodes alike."""
    return groups > 1 and channels_per_group == 1 and tuple(strides) == (2, 2)


def _stride2_depthwise_module(conv: nn.Conv2d) -> bool:
    return _is_stride2_depthwise(conv.groups, conv.in_channels // conv.groups, conv.stride)


def _stride2_depthwise_weights(onnx_path: str) -> list[str]:
    """The weight initializers of the fp32 file's stride-2 depthwise Conv nodes (weights [C, 1, k, k])."""
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    weight_shape = {t.name: list(t.dims) for t in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in weight_shape:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if _is_stride2_depthwise(attrs.get("group", 1), weight_shape[node.input[1]][1], attrs.get("strides", (1, 1))):
            names.append(node.input[1])
    return names


def _int8_toolchain() -> str:
    settings = ort_int8_settings()
    weights = "int8" if settings["weight_type"] == "QInt8" else "uint8 (U8U8: this CPU has no VNNI)"
    s8 = ", int8 weights in the stride-2 depthwise convs (U8S8, exact there)" if settings["s8_convs"] else ""
    return (f"onnxruntime.quantization QDQ: per-channel symmetric {weights} weights (bias-corrected){s8}, "
            f"uint8 activations, {settings['calibrate_method']} calibration")


def write_onnx_int8(model: nn.Module, example: torch.Tensor, path: str, batch: int | str,
                    calibration: np.ndarray, *, calibrate_method: str | None = None) -> None:
    """``calibrate_method`` overrides the CPU's choice (detectors use MinMax: Percentile's
    histograms of every activation of a 300-px SSD take minutes)."""
    need("onnxruntime", "onnxruntime", "int8 ONNX export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    chunks = calibration_chunks(calibration, example.shape[0] if batch != "dynamic" else 1)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(chunks)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x}

    settings = ort_int8_settings()
    if calibrate_method is not None:
        settings = {**settings, "calibrate_method": calibrate_method}
    s8_convs = settings["s8_convs"] == "stride2_depthwise"

    def grid(conv: nn.Conv2d) -> str:
        return "s8" if s8_convs and _stride2_depthwise_module(conv) else settings["weight_grid"]

    model = correct_bias_for_int8(model, calibration, weight_grid=grid)
    with tempfile.TemporaryDirectory() as tmpdir, quiet():
        fp32 = write_onnx_tmp(model, example, batch, tmpdir)
        extra = dict(settings["extra_options"])
        if s8_convs:  # per-tensor overrides of the weight type (one dict: the same for every channel)
            extra["TensorQuantOverrides"] = {w: [{"axis": 0, "quant_type": QuantType.QInt8, "symmetric": True}]
                                             for w in _stride2_depthwise_weights(fp32)}
        quantize_static(fp32, path, Reader(), quant_format=QuantFormat.QDQ, per_channel=settings["per_channel"],
                        activation_type=QuantType[settings["activation_type"]],
                        weight_type=QuantType[settings["weight_type"]], reduce_range=settings["reduce_range"],
                        calibrate_method=CalibrationMethod[settings["calibrate_method"]], extra_options=extra)


def ort_session_options(threads: int | None) -> Any:
    """ONNX Runtime options for single-stream latency: all graph optimizations, fixed threads."""
    ort = need("onnxruntime", "onnxruntime", "running ONNX files")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def open_onnx(path: str, *, threads: int | None = None, precision: str = "fp32", device: str = "cpu") -> Runner:
    """An ONNX Runtime session on ``path`` (CUDA first when ``device="cuda"``); ``precision`` is the file's."""
    ort = need("onnxruntime", "onnxruntime", "running ONNX files")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    sess = ort.InferenceSession(path, ort_session_options(threads), providers=providers)
    inp = sess.get_inputs()[0]
    out_name = sess.get_outputs()[0].name
    static = inp.shape[0] if isinstance(inp.shape[0], int) else None
    return Runner("onnxruntime " + ort.__version__, lambda x: sess.run([out_name], {inp.name: x})[0], static)


def embed_onnx(path: str, text: str) -> None:
    """Store ``text`` as the model's ``metadata_props[METADATA_KEY]`` (ONNX's key/value metadata)."""
    onnx = need("onnx", "onnx", "ONNX export")
    model = onnx.load(path)
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=text)
    onnx.save(model, path)


def read_onnx_metadata(path: str) -> str | None:
    """``metadata_props[METADATA_KEY]`` of an ONNX file, or None (read by ONNX Runtime, which runs it)."""
    ort = need("onnxruntime", "onnxruntime", "running ONNX files")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        meta = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as e:  # noqa: BLE001 (onnxruntime's own exception types: a file it cannot read)
        raise ValueError(f"{path}: not an ONNX model ONNX Runtime can read ({error_line(e)})") from None
    return meta.custom_metadata_map.get(METADATA_KEY)


FORMAT = Format(
    name="onnx", suffixes=(".onnx",), runtime="onnxruntime", runtime_module="onnxruntime",
    runtime_package="onnxruntime", write=write_onnx, open=open_onnx,
    toolchain="torch.onnx.export (dynamo), BN folded",
    write_int8=write_onnx_int8, int8_toolchain=_int8_toolchain, embed=embed_onnx, read_metadata=read_onnx_metadata,
)
