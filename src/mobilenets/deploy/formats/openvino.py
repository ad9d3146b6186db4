"""OpenVINO IR (``NAME.xml`` + ``NAME.bin``): converted from our ONNX export, fp32 weights; int8 by NNCF."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._utils import error_line
from .. import cpu
from ..runner import Runner
from ..support import need, quiet
from .base import METADATA_KEY, Format, calibration_chunks
from .onnx import write_onnx_tmp

__all__ = ["FORMAT", "OVERFLOW_FP32_RATE", "OVERFLOW_IMAGES", "conv_precisions", "embed_openvino", "nncf_settings",
           "open_openvino", "openvino_config", "overflowing_convs", "read_openvino_metadata", "write_openvino",
           "write_openvino_int8"]

_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: outside the quantized ops


def write_openvino(model: nn.Module, example: torch.Tensor, path: str, batch: int | str,
                   calibration: np.ndarray | None = None) -> None:
    ov = need("openvino", "openvino", "OpenVINO export")
    with tempfile.TemporaryDirectory() as tmpdir:
        ov_model = ov.convert_model(write_onnx_tmp(model, example, batch, tmpdir))
        if calibration is not None:
            ov_model = nncf_quantize(ov_model, calibration, example.shape[0] if batch != "dynamic" else 1)
        ov.save_model(ov_model, path, compress_to_fp16=False)


def write_openvino_int8(model: nn.Module, example: torch.Tensor, path: str, batch: int | str,
                        calibration: np.ndarray) -> None:
    write_openvino(model, example, path, batch, calibration)


# Without VNNI: a 1x1 conv whose u8·s8 product pairs overflow int16 on more than this share of its
# calibration pairs stays fp32. On Google's 0.5-160 weights the four convs after the first measured
# 93–630 per million and the rest 45 or fewer; keeping the four in fp32 agreed with fp32 on 95–97 of
# the 100 samples in all six calibration draws tried, adding the 45-per-million one did not help.
OVERFLOW_FP32_RATE = 50e-6
# Images the overflow count runs on: enough for a per-million rate (10^7–10^8 pairs per layer). It
# costs about 1 s at 0.5-160 and 11 s at 1.0-224 on 2 cores; where convs are kept, NNCF then runs
# a second time, so an export without VNNI calibrates twice.
OVERFLOW_IMAGES = 16


def nncf_settings(features: cpu.CpuFeatures | None = None) -> dict[str, Any]:
    """NNCF settings for the CPU that makes the file (default: this one).

    With VNNI: NNCF's defaults (overflow fix on the first conv only: 7-bit weights where the signed
    image comes in), exact in OpenVINO's VNNI kernels. Without VNNI, OpenVINO's int8 convs multiply
    u8 activations by s8 weights in pairs summed in int16 (AVX2's ``vpmaddubsw``), which saturates
    where ReLU6-clipped activations meet large weights. The 1x1 convs where that happens on the
    calibration images (:func:`overflowing_convs`, above :data:`OVERFLOW_FP32_RATE`) stay fp32; the
    rest keep 8-bit weights (``fp32_convs="overflowing_1x1"``, named as ONNX Runtime's settings
    name theirs). Measured under QEMU's AVX2 EPYC (Milan) on Google's 0.5-160 weights over six
    calibration draws (Google's file 73%): top-1 72% in every draw, 95–97 of the 100 agreeing with
    fp32 (``benchmarks/int8_emulated_avx2.py``). Rejected, same draws: NNCF's
    ``overflow_fix=ENABLE`` (7-bit weights everywhere) with the classifier in fp32, the previous
    choice, 91–95 agreeing; NNCF's defaults 92–94; the activations on half the u8 range 91–95;
    7-bit weights on only the five convs that overflow most, 94–95. Earlier, on the real AVX2
    EPYC: about 30 more NNCF settings (93 at best) and accuracy control (95 at 70% top-1)."""
    features = features if features is not None else cpu.cpu_features()
    return {"fp32_convs": None if features.vnni else "overflowing_1x1"}


def _int8_weights(conv: Any) -> np.ndarray | None:
    """A quantized conv's int8 weights ``(out, in, kh, kw)``: NNCF stores Constant(i8) → Convert → Multiply."""
    node = conv.input_value(1).get_node()
    for _ in range(3):
        if node.get_type_name() == "Constant":
            data = node.get_data()
            return data if data.dtype == np.int8 else None
        if node.get_input_size() == 0:
            return None
        node = node.input_value(0).get_node()
    return None


def overflowing_convs(quantized: Any, calibration: np.ndarray, batch: int) -> dict[str, float]:
    """Each 1x1 conv of an NNCF-quantized model → the share of its u8·s8 product pairs (adjacent
    input channels, as AVX2's ``vpmaddubsw`` pairs them) whose sum leaves int16, on the quantized
    graph's own activation codes for the first :data:`OVERFLOW_IMAGES` or so calibration images.

    The sums are exact integers. The codes come from this CPU's run of the quantized graph, so on a
    CPU without VNNI they include the upstream layers' own saturation, as that CPU will run them.
    Counted: Convolutions with 1x1 kernels, an even number of input channels and unsigned
    activations (the classifier's MatMul and k×k convs are not)."""
    ov = need("openvino", "openvino", "OpenVINO export")
    model = quantized.clone()
    layers = []
    for conv in model.get_ordered_ops():
        if conv.get_type_name() != "Convolution":
            continue
        fq, w = conv.input_value(0).get_node(), _int8_weights(conv)
        if fq.get_type_name() != "FakeQuantize" or w is None or w.shape[2:] != (1, 1) or w.shape[1] % 2:
            continue
        consts = [fq.input_value(i).get_node() for i in (3, 4)]
        if any(c.get_type_name() != "Constant" for c in consts):
            continue
        lo, hi = (float(np.ravel(c.get_data())[0]) for c in consts)
        if lo != 0 or hi <= 0:  # signed activations: not the u8 path this counts
            continue
        pairs = w[:, :, 0, 0].astype(np.int32).reshape(w.shape[0], -1, 2)
        layers.append((conv.get_friendly_name(), fq.output(0), pairs, (int(fq.get_attributes()["levels"]) - 1) / hi))
    if not layers:
        return {}
    ports = {}  # one new model output per quantizer (two convs may share one), named as OpenVINO names it
    for _, out, _, _ in layers:
        key = (out.get_node().get_friendly_name(), out.get_index())
        if key not in ports:
            ports[key] = model.add_outputs([out])[0].get_any_name()
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = [compiled.output(ports[(out.get_node().get_friendly_name(), out.get_index())]) for _, out, _, _ in layers]
    request = compiled.create_infer_request()
    over, total = np.zeros(len(layers)), np.zeros(len(layers))
    chunks = calibration_chunks(calibration[:min(len(calibration), -(-OVERFLOW_IMAGES // batch) * batch)], batch)
    if not chunks:
        raise ValueError(f"overflowing_convs: {len(calibration)} calibration images do not fill one batch of {batch}")
    for chunk in chunks:
        result = request.infer({0: chunk})
        for k, (_, _, pairs, to_code) in enumerate(layers):
            codes = np.rint(result[outputs[k]] * to_code).astype(np.int32)  # (n, in, h, w), 0..255
            codes = codes.reshape(codes.shape[0], pairs.shape[1], 2, -1)
            for image in codes:
                for o in range(0, pairs.shape[0], 32):  # 32 output channels at a time: bounded memory
                    wp = pairs[o:o + 32]
                    sums = wp[:, :, 0, None] * image[None, :, 0] + wp[:, :, 1, None] * image[None, :, 1]
                    over[k] += np.count_nonzero((sums > 32767) | (sums < -32768))
                    total[k] += sums.size
    return {name: float(over[k] / max(total[k], 1)) for k, (name, _, _, _) in enumerate(layers)}


def nncf_quantize(ov_model: Any, calibration: np.ndarray, batch: int) -> Any:
    nncf = need("nncf", "nncf", "int8 OpenVINO export")
    samples = calibration_chunks(calibration, batch)
    if not samples:
        raise ValueError(f"int8 OpenVINO export: {len(calibration)} calibration images do not fill one batch of "
                         f"{batch}; give at least {batch} or export with --batch 1")

    def quantize(fp32: list[str]) -> Any:
        scope = {"ignored_scope": nncf.IgnoredScope(names=fp32)} if fp32 else {}
        with quiet(), contextlib.redirect_stderr(io.StringIO()):
            nncf.set_log_level(logging.ERROR)
            # Full bias correction (not the fast variant): measured on the official 0.5-160 weights it
            # lifts top-1 agreement with fp32 from 95% to 97% on a VNNI Xeon, LiteRT's own figure on that file.
            return nncf.quantize(ov_model.clone(), nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
                                 subset_size=len(samples), fast_bias_correction=False, **scope)

    quantized = quantize([])
    if nncf_settings()["fp32_convs"] == "overflowing_1x1":
        rates = overflowing_convs(quantized, calibration, batch)
        fp32 = [name for name, rate in rates.items() if rate > OVERFLOW_FP32_RATE]
        if fp32:
            quantized = quantize(fp32)
    return quantized


def _int8_toolchain() -> str:
    fp32 = (f", the 1x1 convs whose u8·s8 pairs overflow int16 on over {OVERFLOW_FP32_RATE * 1e6:.0f} per million "
            "calibration pairs in fp32 (this CPU has no VNNI)" if nncf_settings()["fp32_convs"] else "")
    return ("NNCF post-training quantization (OpenVINO backend): per-channel symmetric int8 weights, "
            f"symmetric 8-bit activations, MinMax ranges, bias correction{fp32}")


def openvino_config(threads: int | None, precision: str) -> dict[str, Any]:
    """OpenVINO CPU options for single-stream latency at the given inference precision."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                              "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def open_openvino(path: str, *, threads: int | None = None, precision: str = "fp32", device: str = "cpu") -> Runner:
    """``path`` compiled for the CPU; ``precision="fp32"`` forces f32 (OpenVINO otherwise picks bf16
    on CPUs that have it)."""
    ov = need("openvino", "openvino", "running OpenVINO files")
    core = ov.Core()
    model = core.read_model(path)
    dim = model.inputs[0].get_partial_shape()[0]
    static = dim.get_length() if dim.is_static else None
    compiled = core.compile_model(model, "CPU", openvino_config(threads, precision))
    if precision == "bf16":
        _check_runs_bf16(compiled, path)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x}, share_inputs=True, share_outputs=True)[0]
    return Runner("openvino " + ov.__version__.split("-")[0], run, static)


def conv_precisions(compiled: Any) -> list[str]:
    """The precision each convolution of a compiled model really runs in (``"f32"``, ``"bf16"``,
    ``"u8"``, ...), in graph order, read from OpenVINO's compiled graph (its hints are only hints)."""
    precisions = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and "runtimePrecision" in info and info["layerType"].astype(str) == "Convolution":
            precisions.append(info["runtimePrecision"].astype(str))
    return precisions


def _check_runs_bf16(compiled: Any, path: str) -> None:
    """Refuse a bf16 request that OpenVINO quietly compiled as f32: the convolutions' runtime
    precision says what will really run."""
    precisions = conv_precisions(compiled)
    if precisions and "bf16" not in precisions:
        raise ValueError(f"{path}: OpenVINO compiled it as {precisions[0]}, not bf16, on this CPU; "
                         "benchmark fp32 or int8 here")


def embed_openvino(path: str, text: str) -> None:
    """Store ``text`` in the IR's ``rt_info`` under METADATA_KEY (the .xml and its .bin are rewritten)."""
    ov = need("openvino", "openvino", "OpenVINO export")
    model = ov.Core().read_model(path)
    model.set_rt_info(text, [METADATA_KEY])
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=folder) as tmpdir:  # beside it: the renames stay on one file system
        xml = os.path.join(tmpdir, "model.xml")
        ov.save_model(model, xml, compress_to_fp16=False)
        del model
        os.replace(os.path.join(tmpdir, "model.bin"), os.path.splitext(path)[0] + ".bin")
        os.replace(xml, path)


def read_openvino_metadata(path: str) -> str | None:
    """The IR's ``rt_info[METADATA_KEY]``, or None."""
    ov = need("openvino", "openvino", "running OpenVINO files")
    try:
        model = ov.Core().read_model(path)
    except Exception as e:  # noqa: BLE001 (OpenVINO's own exception types: a file it cannot read)
        raise ValueError(f"{path}: not an OpenVINO model OpenVINO can read ({error_line(e)})") from None
    return model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None


FORMAT = Format(
    name="openvino", suffixes=(".xml",), runtime="openvino", runtime_module="openvino", runtime_package="openvino",
    write=write_openvino, open=open_openvino,
    toolchain="torch.onnx.export → openvino.convert_model, BN folded, fp32 weights",
    write_int8=write_openvino_int8,
    int8_toolchain=_int8_toolchain,
    bf16=True, path_rule="an OpenVINO model is written as NAME.xml (+ NAME.bin); give a .xml path",
    embed=embed_openvino, read_metadata=read_openvino_metadata,
)
