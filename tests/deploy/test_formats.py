"""The format registry (one entry per format, the lists derived from it), CPU features, and the
per-CPU ONNX Runtime int8 settings."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from cpu_kinds import AVX2_EPYC, XEON_AMX

import mobilenets.deploy.cpu as cpu_mod
from mobilenets import deploy
from mobilenets.deploy.cpu import CpuFeatures
from mobilenets.deploy.formats import REGISTRY, format_for_path, format_of_runtime, get_format, runtime_package
from mobilenets.deploy.formats.onnx import ort_int8_settings

# ----------------------------------------------------------------------------- registry

def test_lists_are_derived_from_the_registry():
    assert deploy.FORMATS == tuple(REGISTRY) == ("onnx", "openvino", "torchscript", "pt2", "tflite", "executorch")
    assert deploy.INT8_FORMATS == tuple(n for n, f in REGISTRY.items() if f.write_int8 is not None)
    assert deploy.INT8_FORMATS == ("onnx", "openvino", "pt2", "tflite")
    assert deploy.RUNTIMES == ("torch", "onnxruntime", "openvino", "litert", "executorch")
    assert set(deploy.RUNTIMES) == {"torch"} | {f.runtime for f in REGISTRY.values()}
    from mobilenets.deploy import bench

    assert bench.RUNTIMES is deploy.RUNTIMES  # bench and the CLI read the same tuple


def test_every_entry_is_complete():
    for name, fmt in REGISTRY.items():
        assert fmt.name == name and fmt.suffixes and all(s.startswith(".") for s in fmt.suffixes)
        assert callable(fmt.write) and callable(fmt.open)
        assert fmt.toolchain and (fmt.write_int8 is None) == (fmt.int8_toolchain is None)
        assert fmt.describe(fmt.int8)
        assert 0 < fmt.verify.tolerance < 1e-3 and 0 < fmt.verify.min_cosine <= 1 and 0 < fmt.verify.min_agreement <= 1
        assert format_for_path("model" + fmt.suffix) == name
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["onnx"].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("path, fmt", [
    ("m.onnx", "onnx"), ("M.XML", "openvino"), ("m.pt", "torchscript"), ("m.ts", "torchscript"),
    ("m.jit", "torchscript"), ("m.torchscript", "torchscript"), ("m.pt2", "pt2"), ("m.tflite", "tflite"),
    ("m.pte", "executorch"),
    ("m.bin", None), ("m", None),
])
def test_format_for_path(path, fmt):
    assert format_for_path(path) == fmt


def test_runtime_lookups():
    assert format_of_runtime("torch") is None  # timed eagerly, not from a file
    assert format_of_runtime("litert").name == "tflite" and runtime_package("litert") == "ai-edge-litert"
    assert format_of_runtime("onnxruntime").name == "onnx"
    assert format_of_runtime("executorch").name == "executorch" and runtime_package("executorch") == "executorch"
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        format_of_runtime("tensorrt")
    with pytest.raises(ValueError, match="unknown export format 'keras'; choose one of: onnx, openvino"):
        get_format("keras")


# ----------------------------------------------------------------------------- CPU features

def test_cpu_features_of_this_machine():
    f = deploy.cpu_features()
    assert f.cores >= 1 and f.brand and f.source in ("py-cpuinfo", "torch.backends.cpu")
    assert f.bf16 == (f.avx512_bf16 or f.amx) and f.vnni == (f.avx512_vnni or f.avx_vnni)
    assert deploy.machine_signature() == f.signature() and f.brand in f.signature()
    assert "\n" not in f.summary() and f.summary().startswith("CPU: ")


def test_cpu_features_without_py_cpuinfo(monkeypatch):
    """The fallback reads cpuid through torch, so it sees what py-cpuinfo sees on this CPU, whichever
    kind it is (VNNI, BF16 and AMX included: the int8 and bf16 settings are chosen from them)."""
    import torch

    with_cpuinfo = cpu_mod.cpu_features()
    monkeypatch.setitem(sys.modules, "cpuinfo", None)  # import fails as if not installed
    cpu_mod.cpu_features.cache_clear()
    try:
        f = cpu_mod.cpu_features()
    finally:
        cpu_mod.cpu_features.cache_clear()
    assert f.source == "torch.backends.cpu"
    assert f.avx2 == (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))
    if with_cpuinfo.source == "py-cpuinfo":
        for name in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"):
            assert getattr(f, name) == getattr(with_cpuinfo, name), name


def test_flag_spellings():
    # /proc/cpuinfo writes avx512_vnni and amx_tile, cpuid-based tools avx512vnni
    f = CpuFeatures.from_flags("GenuineIntel", "x", 4, {"avx2", "avx512f", "avx512vnni", "avx512_bf16", "amx_tile"},
                            "test")
    assert f.flags() == ["avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"]
    assert f.vnni and f.bf16
    assert "avx2+avx512+avx512_vnni+avx512_bf16+amx" in f.signature()
    assert "bf16 not accelerated" in AVX2_EPYC.summary() and "int8 without VNNI" in AVX2_EPYC.summary()


# ----------------------------------------------------------------------------- ONNX Runtime int8 per CPU

def test_ort_int8_settings_depend_on_vnni():
    with_vnni, without = ort_int8_settings(XEON_AMX), ort_int8_settings(AVX2_EPYC)
    # VNNI: U8S8, exact there. Without: U8U8 (no u8·s8 saturation), bias-corrected on the uint8 grid
    assert with_vnni["weight_type"] == "QInt8" and with_vnni["weight_grid"] == "s8"
    assert without["weight_type"] == "QUInt8" and without["weight_grid"] == "u8"
    assert without["s8_convs"] == "stride2_depthwise" and with_vnni["s8_convs"] is None
    for s in (with_vnni, without):
        assert s["activation_type"] == "QUInt8" and s["per_channel"] and not s["reduce_range"]
        assert s["extra_options"]["WeightSymmetric"] is True
    avx_vnni_only = dataclasses.replace(AVX2_EPYC, avx_vnni=True)  # Alder Lake: VNNI without AVX-512
    assert ort_int8_settings(avx_vnni_only)["weight_type"] == "QInt8"


@pytest.mark.parametrize("features", ["vnni", "avx2"])
def test_u8u8_int8_onnx_gives_the_stride2_depthwise_convs_int8_weights(tmp_path, monkeypatch, features):
    """Without VNNI every conv is int8, with uint8 weights except the four stride-2 depthwise convs,
    whose weights are int8 (ONNX Runtime's U8U8 kernel for the first of them took 1.5× the whole fp32
    model; its U8S8 depthwise kernel is fast and exact). With VNNI all weights are int8."""
    pytest.importorskip("onnxruntime")
    import onnx
    import torch

    import mobilenets

    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: AVX2_EPYC if features == "avx2" else XEON_AMX)
    torch.manual_seed(0)
    model = mobilenets.mobilenet_v1(0.25, resolution=64, num_classes=10)
    calib = torch.randn(16, 3, 64, 64).clamp(-2, 2)
    report = deploy.export(model, "onnx", tmp_path / "q.onnx", int8=True, calibration=calib, calibration_images=8,
                           min_agreement=0.0)
    graph = onnx.load(report.path).graph
    producer = {o: n for n in graph.node for o in n.output}
    stored = {t.name: t.data_type for t in graph.initializer}
    weights = []  # (stride-2 depthwise?, stored weight type) per conv
    for node in graph.node:
        if node.op_type == "Conv":
            dq = producer.get(node.input[1])
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name} kept float weights"
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            s2dw = attrs.get("group", 1) > 1 and list(attrs.get("strides", [1, 1])) == [2, 2]
            weights.append((s2dw, onnx.TensorProto.DataType.Name(stored[dq.input[0]])))
    assert sum(s2dw for s2dw, _ in weights) == 4 and len(weights) == 27  # the first conv, 13 depthwise, 13 pointwise
    for s2dw, dtype in weights:
        assert dtype == ("INT8" if s2dw or features == "vnni" else "UINT8")
    assert ("stride-2 depthwise convs (U8S8" in report.toolchain) == (features == "avx2")


def _qdq_conv(weight_type: str, depthwise: bool):
    """One QDQ conv on 64 channels whose inputs and weights sit at the ends of their ranges (u8 codes
    near 255, weights near ±127): adjacent-channel pairs of u8·s8 products overflow int16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 64
    shape = (c, 1, 3, 3) if depthwise else (c, c, 1, 1)
    codes = rng.choice([127, -127, 126, 100], size=shape)
    if weight_type == "s8":
        w, zero = codes.astype(np.int8), np.zeros(c, np.int8)
    else:  # the same weights on the uint8 grid: zero point 128
        w, zero = (codes + 128).astype(np.uint8), np.full(c, 128, np.uint8)
    init = [numpy_helper.from_array(np.array(1 / 255, np.float32), "xs"),
            numpy_helper.from_array(np.array(0, np.uint8), "xz"),
            numpy_helper.from_array(np.full(c, 0.01, np.float32), "ws"), numpy_helper.from_array(zero, "wz"),
            numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
            numpy_helper.from_array(np.array(0, np.uint8), "yz")]
    conv = (dict(group=c, strides=[2, 2], pads=[0, 0, 1, 1], kernel_shape=[3, 3]) if depthwise  # TF SAME
            else dict(group=1, strides=[1, 1], pads=[0, 0, 0, 0], kernel_shape=[1, 1]))
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["yf"], **conv),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, (1, c, 16, 16))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), rng.choice([255, 254, 200, 0], size=(1, c, 16, 16)).astype(np.uint8)


@pytest.mark.parametrize("depthwise", [True, False], ids=["depthwise", "1x1"])
def test_onnxruntime_u8s8_depthwise_is_exact_where_1x1_saturates(depthwise):
    """Why the stride-2 depthwise convs may keep int8 weights without VNNI: ONNX Runtime's U8S8
    depthwise kernel (a QLinearConv after fusion) gives the U8U8 kernel's codes exactly, saturated
    inputs included; its U8S8 1x1 kernel does so only where the CPU has VNNI (``vpmaddubsw`` sums
    pairs in int16 otherwise)."""
    ort = pytest.importorskip("onnxruntime")

    def run(weight_type: str) -> np.ndarray:
        model, x = _qdq_conv(weight_type, depthwise)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    differ = float((np.abs(run("s8") - run("u8")) > 1e-6).mean())
    if depthwise or cpu_mod.cpu_features().vnni:
        assert differ == 0.0
    else:
        assert differ > 0.01, "U8S8 1x1 convs were expected to saturate on a CPU without VNNI"


def test_ort_int8_settings_default_to_this_cpu(monkeypatch):
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: AVX2_EPYC)
    assert ort_int8_settings()["weight_type"] == "QUInt8"
    assert "U8U8" in REGISTRY["onnx"].describe(True)
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: XEON_AMX)
    assert ort_int8_settings()["weight_type"] == "QInt8"
    assert "U8U8" not in REGISTRY["onnx"].describe(True) and "per-channel" in REGISTRY["onnx"].describe(True)


def test_nncf_settings_depend_on_vnni(monkeypatch):
    from mobilenets.deploy.formats.openvino import nncf_settings

    # VNNI: NNCF's defaults, exact there. Without: the 1x1 convs whose u8·s8 pairs overflow int16 stay fp32
    assert nncf_settings(XEON_AMX) == {"fp32_convs": None}
    assert nncf_settings(AVX2_EPYC) == {"fp32_convs": "overflowing_1x1"}
    assert nncf_settings(dataclasses.replace(AVX2_EPYC, avx_vnni=True)) == {"fp32_convs": None}
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: AVX2_EPYC)
    assert "overflow int16 on over 50 per million calibration pairs in fp32" in REGISTRY["openvino"].describe(True)
    monkeypatch.setattr(cpu_mod, "cpu_features", lambda: XEON_AMX)
    assert "overflow" not in REGISTRY["openvino"].describe(True)
