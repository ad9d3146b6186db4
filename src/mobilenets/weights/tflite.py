"""Read a TFLite MobileNet V1 (float or uint8-quantized TF-slim export) into our model.

Google publishes MobileNet V1 mostly as ``.tflite`` files: classifiers with 1001 outputs
(index 0 is "background") and "embedding extractor" cuts that end at the pooled
``1024·α``-d feature. Nothing about the model is taken from the file name: α, the input
resolution and the number of classes are read from the graph itself, and the graph is
checked, operator by operator, against the paper's Table 1
(:data:`mobilenets.models.MOBILENET_V1_CONV_DEFS`) before a single weight is converted, so
a file either loads completely or fails with a one-line ``ValueError``.

TFLite convolutions have BatchNorm folded into them (a conv with a bias, no BN). Our
layers are conv → BN → act, so the folded bias is carried by the BN as an identity BN with
a shift: ``weight = 1``, ``bias = b``, ``running_mean = 0``, ``running_var = 1 − eps``
(``sqrt(var + eps)`` is then exactly 1 in float32). Quantized tensors are dequantized,
``(q − zero_point) × scale``, per tensor or per channel.

The flatbuffer is read with the ``tflite`` package's generated schema bindings (install
``tflite``); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import MobileNetConfig
from ..models import MOBILENET_V1_CONV_DEFS, Conv, MobileNetV1

__all__ = [
    "TFLITE_IDENTIFIER",
    "TensorInfo",
    "OpInfo",
    "TFLiteGraph",
    "MobileNetV1Layout",
    "is_tflite",
    "read_tflite_graph",
    "dequantize",
    "match_mobilenet_v1",
    "load_tflite",
]

#: The flatbuffer file identifier of TFLite models, stored at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"

# TensorFlow-trained BatchNorm uses eps = 1e-3; the value is irrelevant to the outputs here
# (the BN is an exact identity plus bias) but keeps the config in line with TF weights.
_BN_EPS = 1e-3

_ACTIVATIONS = {"RELU6": "relu6", "RELU": "relu"}
_SHAPE_OPS = ("RESHAPE", "SQUEEZE")
_TYPE_OPS = ("QUANTIZE", "DEQUANTIZE")  # pass-through in a float re-implementation

# numpy dtypes of the TFLite tensor types whose data we can read.
_NUMPY_TYPES = {
    "FLOAT32": "<f4", "FLOAT16": "<f2", "FLOAT64": "<f8", "INT32": "<i4", "INT64": "<i8",
    "INT16": "<i2", "UINT16": "<u2", "INT8": "i1", "UINT8": "u1", "UINT32": "<u4",
}


# --------------------------------------------------------------------------------------
# The parsed file: plain data, independent of the flatbuffer, so it can be checked (and
# mutated in tests) without touching bytes.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph.

    ``data`` is the constant's raw values (stored dtype, stored shape) or ``None`` for an
    activation. ``scale`` / ``zero_point`` are empty when the tensor is not quantized;
    ``axis`` is the quantized dimension for per-channel parameters.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    type: str  # TFLite type name, e.g. "UINT8", "FLOAT32"
    data: np.ndarray | None = field(default=None, repr=False, compare=False)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    axis: int = 0

    @property
    def short_name(self) -> str:
        """The first of the converter's ``;``-joined names (they get very long)."""
        name = self.name.split(";")[0] or f"#{self.index}"
        return name if len(name) <= 90 else "…" + name[-89:]

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclass(frozen=True)
class OpInfo:
    """One operator: its name, tensor indices (``-1`` = absent optional input) and options.

    ``options`` holds what MobileNet needs, decoded: ``stride`` (h, w), ``padding``
    ("SAME"/"VALID"), ``activation`` ("NONE", "RELU6", ...), ``dilation`` (h, w),
    ``depth_multiplier``, ``filter`` (h, w) for pooling.
    """

    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TFLiteGraph:
    """The main subgraph of a TFLite file, in operator order."""

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""
    version: int = 0
    #: Files packed into a zip appended to the flatbuffer (TFLite Model Metadata's
    #: "associated files", e.g. the label list of Google's classifiers).
    associated_files: tuple[str, ...] = ()


def is_tflite(source: str | os.PathLike | bytes) -> bool:
    """Whether a file (or its bytes) carries the TFLite identifier ``TFL3`` at bytes 4..8."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:8])
    else:
        try:
            with open(source, "rb") as f:
                head = f.read(8)
        except OSError:
            return False
    return len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER


class _Corrupt(Exception):
    """Internal: the flatbuffer is inconsistent (reported as truncated/not TFLite)."""


def _enum_names(enum_class: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite_graph(path: str | os.PathLike) -> TFLiteGraph:
    """Parse a ``.tflite`` file's main subgraph with the ``tflite`` schema bindings.

    Raises:
        ValueError: one line, for a missing file, a file that is not TFLite, or one that is
            truncated or corrupt (flatbuffers do not validate themselves, so every read is
            guarded and constant sizes are checked against their shapes).
        ImportError: when the ``tflite`` package is not installed, saying how to install it.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a .tflite file") from None
    if len(buf) < 8 or buf[4:8] != TFLITE_IDENTIFIER:
        what = f"only {len(buf)} bytes" if len(buf) < 8 else f"bytes 4..8 are {buf[4:8]!r}"
        raise ValueError(
            f"{path}: file is truncated or not a TFLite model ({what}, expected the "
            f"identifier {TFLITE_IDENTIFIER!r}); pass a .tflite flatbuffer"
        )
    try:
        import tflite  # noqa: F401  (the schema bindings)
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs the 'tflite' package (flatbuffer schema bindings): "
            "pip install tflite"
        ) from e
    try:
        return dataclasses.replace(_parse(buf), associated_files=_associated_files(buf))
    except _Corrupt as e:
        detail = str(e)
    except Exception as e:  # noqa: BLE001 - garbage offsets fail in struct/numpy/decoding
        detail = f"{type(e).__name__}: {e}".splitlines()[0][:160]
    raise ValueError(
        f"{path}: file is truncated or not a TFLite model ({detail}); "
        "re-download or re-export the .tflite file"
    )


def _associated_files(buf: bytes) -> tuple[str, ...]:
    """Names in the zip archive Model Metadata appends after the flatbuffer, if any."""
    if b"PK\x05\x06" not in buf[-65_600:]:  # no zip end-of-central-directory record
        return ()
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as archive:
            return tuple(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return ()


def _parse(buf: bytes) -> TFLiteGraph:
    import tflite

    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise _Corrupt("the model has no subgraph")
    graph = model.Subgraphs(0)
    type_names = _enum_names(tflite.TensorType)

    # Operator codes: builtin_code replaced the int8 deprecated_builtin_code in schema v3a;
    # older files only fill the latter, newer ones the former (or both).
    op_names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            op_names.append(f"CUSTOM({custom.decode(errors='replace') if custom else '?'})")
        else:
            op_names.append(tflite.BUILTIN_OPCODE2NAME.get(builtin, f"BUILTIN_{builtin}"))

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        type_name = type_names.get(t.Type(), f"TYPE_{t.Type()}")
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        scale: tuple[float, ...] = ()
        zero_point: tuple[int, ...] = ()
        axis = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = tuple(float(s) for s in q.ScaleAsNumpy())
            zero_point = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else ()
            axis = int(q.QuantizedDimension())
        data = _buffer_data(model, buf, t.Buffer(), type_name, shape, i)
        name = (t.Name() or b"").decode("utf-8", errors="replace")
        tensors.append(TensorInfo(i, name, shape, type_name, data, scale, zero_point, axis))

    ops = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if not 0 <= op.OpcodeIndex() < len(op_names):
            raise _Corrupt(f"operator {k} has opcode index {op.OpcodeIndex()} of {len(op_names)}")
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        for x in ins + outs:
            if not -1 <= x < len(tensors):
                raise _Corrupt(f"operator {k} refers to tensor {x} of {len(tensors)}")
        ops.append(OpInfo(k, op_names[op.OpcodeIndex()], ins, outs, _options(op)))

    inputs = tuple(int(x) for x in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outputs = tuple(int(x) for x in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    for x in inputs + outputs:
        if not 0 <= x < len(tensors):
            raise _Corrupt(f"graph input/output refers to tensor {x} of {len(tensors)}")
    description = (model.Description() or b"").decode("utf-8", errors="replace")
    return TFLiteGraph(tuple(tensors), tuple(ops), inputs, outputs, description, int(model.Version()))


def _buffer_data(model: Any, buf: bytes, index: int, type_name: str, shape: tuple[int, ...],
                 tensor: int) -> np.ndarray | None:
    """A tensor's constant data (copied, stored dtype and shape), or None for activations."""
    if index == 0:  # buffer 0 is the empty sentinel every activation points at
        return None
    if not 0 <= index < model.BuffersLength():
        raise _Corrupt(f"tensor {tensor} refers to buffer {index} of {model.BuffersLength()}")
    b = model.Buffers(index)
    if b.DataLength():
        raw = b.DataAsNumpy().tobytes()
    elif b.Offset() > 1:  # data stored after the flatbuffer (models over 2 GB)
        start, size = int(b.Offset()), int(b.Size())
        if start + size > len(buf):
            raise _Corrupt(f"tensor {tensor}'s data lies past the end of the file")
        raw = buf[start:start + size]
    else:
        return None
    dtype = _NUMPY_TYPES.get(type_name)
    if dtype is None:
        return None  # a constant we never need to read (strings, complex, ...)
    count = math.prod(shape)
    if len(raw) != count * np.dtype(dtype).itemsize:
        raise _Corrupt(
            f"tensor {tensor} holds {len(raw)} bytes, its shape {list(shape)} of {type_name} "
            f"needs {count * np.dtype(dtype).itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _options(op: Any) -> dict[str, Any]:
    """Decode the builtin options MobileNet cares about into plain values."""
    import tflite

    kind = op.BuiltinOptionsType()
    table = op.BuiltinOptions()
    acts = _enum_names(tflite.ActivationFunctionType)
    pads = _enum_names(tflite.Padding)
    if table is None:
        return {}
    if kind == tflite.BuiltinOptions.Conv2DOptions:
        o = tflite.Conv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), padding=pads.get(o.Padding(), "?"),
                    activation=acts.get(o.FusedActivationFunction(), "?"),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()))
    if kind == tflite.BuiltinOptions.DepthwiseConv2DOptions:
        o = tflite.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), padding=pads.get(o.Padding(), "?"),
                    activation=acts.get(o.FusedActivationFunction(), "?"),
                    dilation=(o.DilationHFactor(), o.DilationWFactor()),
                    depth_multiplier=o.DepthMultiplier())
    if kind == tflite.BuiltinOptions.Pool2DOptions:
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(stride=(o.StrideH(), o.StrideW()), padding=pads.get(o.Padding(), "?"),
                    activation=acts.get(o.FusedActivationFunction(), "?"),
                    filter=(o.FilterHeight(), o.FilterWidth()))
    if kind == tflite.BuiltinOptions.FullyConnectedOptions:
        o = tflite.FullyConnectedOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(activation=acts.get(o.FusedActivationFunction(), "?"))
    if kind == tflite.BuiltinOptions.SoftmaxOptions:
        o = tflite.SoftmaxOptions()
        o.Init(table.Bytes, table.Pos)
        return dict(beta=float(o.Beta()))
    return {}


def dequantize(tensor: TensorInfo) -> np.ndarray:
    """A constant as float32: ``(q − zero_point) × scale``, per tensor or along ``axis``.

    Float constants are returned as float32 unchanged; int32 biases use the same rule
    (their zero point is 0, so it is ``q × scale``).
    """
    if tensor.data is None:
        raise ValueError(f"tensor {tensor.short_name!r} has no constant data")
    q = tensor.data
    if np.issubdtype(q.dtype, np.floating):
        return q.astype(np.float32)
    if not tensor.scale:
        raise ValueError(
            f"tensor {tensor.short_name!r} is {tensor.type} without quantization parameters"
        )
    scale = np.asarray(tensor.scale, dtype=np.float64)
    zp = np.asarray(tensor.zero_point or (0,), dtype=np.float64)
    if scale.size > 1 or zp.size > 1:
        n = max(scale.size, zp.size)
        if q.ndim == 0 or not 0 <= tensor.axis < q.ndim or q.shape[tensor.axis] != n:
            raise ValueError(
                f"tensor {tensor.short_name!r} has {n} quantization scales, which does not match "
                f"dimension {tensor.axis} of its shape {list(q.shape)}"
            )
        bshape = [1] * q.ndim
        bshape[tensor.axis] = -1
        scale = np.broadcast_to(scale, (n,)).reshape(bshape)
        zp = np.broadcast_to(zp, (n,)).reshape(bshape)
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return ((q.astype(np.float64) - zp) * scale).astype(np.float32)


# --------------------------------------------------------------------------------------
# Structure: map the operator chain onto Table 1, or say exactly where it differs.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One convolution the file must contain, from Table 1."""

    op: str  # "CONV_2D" or "DEPTHWISE_CONV_2D"
    key: str  # our module name, e.g. "features.3.dw"
    name: str  # TF-slim's layer name, e.g. "Conv2d_3_depthwise"
    kernel: int
    stride: int
    channels: int  # Table 1 channels, before α


def _table1_slots() -> list[_Slot]:
    slots = []
    for row, d in enumerate(MOBILENET_V1_CONV_DEFS):
        if isinstance(d, Conv):
            slots.append(_Slot("CONV_2D", f"features.{row}", f"Conv2d_{row}", d.kernel, d.stride,
                               d.channels))
        else:
            slots.append(_Slot("DEPTHWISE_CONV_2D", f"features.{row}.dw", f"Conv2d_{row}_depthwise",
                               d.kernel, d.stride, 0))
            slots.append(_Slot("CONV_2D", f"features.{row}.pw", f"Conv2d_{row}_pointwise", 1, 1,
                               d.channels))
    return slots


@dataclass(frozen=True)
class MobileNetV1Layout:
    """A graph matched to MobileNet V1: the config and, per module, the weight/bias tensors."""

    config: MobileNetConfig
    convs: tuple[tuple[str, int, int], ...]  # (module key, weight tensor, bias tensor or -1)
    logits: tuple[str, int, int] | None  # ("CONV_2D"/"FULLY_CONNECTED", weight, bias or -1)
    ops: tuple[str, ...]  # the operator names, in order
    softmax: bool
    output: int  # the graph output tensor the chain ends at


def match_mobilenet_v1(graph: TFLiteGraph, source: str = "model") -> MobileNetV1Layout:
    """Check that ``graph`` is MobileNet V1 and find α, resolution, classes and activation.

    Walks the operators in order: they must form one chain (each reads the previous one's
    output) of CONV_2D (stride 2), 13 × (DEPTHWISE_CONV_2D, 1×1 CONV_2D) with Table 1's
    strides and TF-slim's channel rule, a global AVERAGE_POOL_2D, then optionally the 1×1
    logits conv (or FULLY_CONNECTED), RESHAPE/SQUEEZE and SOFTMAX. QUANTIZE/DEQUANTIZE are
    type conversions and pass through; DEQUANTIZE of a constant (float16 weights) counts
    as that constant.

    Raises:
        ValueError: one line, ``"<source>: not a MobileNet V1: <what differs>"``.
    """

    def fail(msg: str) -> ValueError:
        return ValueError(f"{source}: not a MobileNet V1: {msg}")

    tensors = graph.tensors

    def shape(i: int) -> tuple[int, ...]:
        return tensors[i].shape

    if len(graph.inputs) != 1:
        raise fail(f"the graph has {len(graph.inputs)} inputs, expected one image input")
    image = tensors[graph.inputs[0]]
    if len(image.shape) != 4 or image.shape[3] != 3 or image.shape[1] != image.shape[2]:
        raise fail(f"input {image.short_name!r} has shape {list(image.shape)}, expected "
                   "[1, size, size, 3] (square RGB, NHWC)")
    resolution = int(image.shape[1])

    # Constants produced by DEQUANTIZE ops (float16 or int8 weights stored compressed).
    const_alias: dict[int, int] = {}
    for op in graph.ops:
        if op.op == "DEQUANTIZE" and op.inputs and tensors[op.inputs[0]].data is not None:
            const_alias[op.outputs[0]] = op.inputs[0]

    # Follow the activation chain, dropping type conversions.
    chain: list[OpInfo] = []
    current = graph.inputs[0]
    for op in graph.ops:
        if op.op == "DEQUANTIZE" and op.outputs and op.outputs[0] in const_alias:
            continue
        if not op.inputs or op.inputs[0] != current or len(op.outputs) != 1:
            read = tensors[op.inputs[0]].short_name if op.inputs and op.inputs[0] >= 0 else "nothing"
            raise fail(f"operator {op.index} ({op.op}) reads {read!r}, not the previous layer's "
                       f"output {tensors[current].short_name!r}: the graph is not a plain chain")
        current = op.outputs[0]
        if op.op not in _TYPE_OPS:
            chain.append(op)
    if current not in graph.outputs:
        raise fail(f"the chain of operators ends at {tensors[current].short_name!r}, "
                   "which is not a graph output")

    def const(op: OpInfo, pos: int, what: str, *, required: bool = True) -> int:
        """Index of the constant tensor at input ``pos`` of ``op`` (-1 if optional and absent)."""
        if pos >= len(op.inputs) or op.inputs[pos] < 0:
            if required:
                raise fail(f"operator {op.index} ({op.op}) has no {what}")
            return -1
        i = const_alias.get(op.inputs[pos], op.inputs[pos])
        if tensors[i].data is None:
            raise fail(f"operator {op.index} ({op.op}) computes its {what} at run time; "
                       "expected a constant")
        return i

    # 1. Op types and strides along Table 1 (before channels: α comes from the first conv).
    slots = _table1_slots()
    acts = set()
    for slot, op in zip(slots, chain):
        where = f"operator {op.index} ({op.op}, {slot.name})"
        if op.op != slot.op:
            raise fail(f"operator {op.index} is {op.op}, expected {slot.op} ({slot.name})")
        o = op.options
        if tuple(o.get("stride", ())) != (slot.stride, slot.stride):
            raise fail(f"{where} has stride {_fmt(o.get('stride'))}, expected {slot.stride}")
        if tuple(o.get("dilation", (1, 1))) != (1, 1):
            raise fail(f"{where} has dilation {_fmt(o.get('dilation'))}, expected 1")
        if slot.kernel > 1 and o.get("padding") != "SAME":
            raise fail(f"{where} uses {o.get('padding')} padding, expected SAME")
        if slot.op == "DEPTHWISE_CONV_2D" and o.get("depth_multiplier", 1) not in (0, 1):
            raise fail(f"{where} has depth multiplier {o['depth_multiplier']}, expected 1")
        act = o.get("activation", "?")
        if act not in _ACTIVATIONS:
            raise fail(f"{where} has fused activation {act}, expected RELU6 or RELU")
        acts.add(act)
    if len(chain) <= len(slots):
        raise fail(f"the graph ends after {len(chain)} layers, expected {len(slots)} "
                   "convolutions then AVERAGE_POOL_2D")
    if len(acts) > 1:
        raise fail(f"the layers mix fused activations {sorted(acts)}; expected one throughout")
    activation = _ACTIVATIONS[acts.pop()]

    # 2. Width multiplier from the stem (32·α channels), checked against every layer.
    stem_w = const(chain[0], 1, "weights")
    stem_out = tensors[stem_w].shape[0] if tensors[stem_w].shape else 0
    alpha = _infer_alpha(stem_out, chain, slots, tensors, const)
    try:
        config = MobileNetConfig(width_multiplier=alpha, resolution=resolution, num_classes=0,
                                 activation=activation, tf_padding=True, bn_eps=_BN_EPS)
    except ValueError as e:  # e.g. a 16-pixel input
        raise fail(str(e)) from None
    convs = []
    cin = 3
    for slot, op in zip(slots, chain):
        w, b = const(op, 1, "weights"), const(op, 2, "bias", required=False)
        wt = tensors[w]
        if len(wt.shape) != 4:
            raise fail(f"tensor {wt.short_name!r} has shape {list(wt.shape)}, expected 4-D weights")
        if slot.op == "CONV_2D":
            cout, expected = wt.shape[0], (config.depth(slot.channels), slot.kernel, slot.kernel, cin)
            if wt.shape[0] != expected[0]:
                raise fail(f"tensor {wt.short_name!r} has {wt.shape[0]} channels, expected "
                           f"{expected[0]} for α={alpha:g}")
        else:
            cout, expected = cin, (1, slot.kernel, slot.kernel, cin)
            if wt.shape[3] != cin:
                raise fail(f"tensor {wt.short_name!r} has {wt.shape[3]} channels, expected "
                           f"{cin} for α={alpha:g}")
        if tuple(wt.shape) != expected:
            raise fail(f"tensor {wt.short_name!r} ({slot.name}) has shape {list(wt.shape)}, "
                       f"expected {list(expected)}")
        if b >= 0 and tensors[b].shape != (cout,):
            raise fail(f"bias {tensors[b].short_name!r} ({slot.name}) has shape "
                       f"{list(tensors[b].shape)}, expected [{cout}]")
        convs.append((slot.key, w, b))
        cin = cout

    # 3. Global average pool.
    pool = chain[len(slots)]
    if pool.op != "AVERAGE_POOL_2D":
        raise fail(f"operator {pool.index} is {pool.op}, expected AVERAGE_POOL_2D after the "
                   "last pointwise conv")
    side = -(-resolution // 32)  # SAME padding, five stride-2 layers
    fmap = shape(pool.inputs[0])[1:3] if len(shape(pool.inputs[0])) == 4 else (side, side)
    if tuple(pool.options.get("filter", ())) != tuple(fmap):
        raise fail(f"AVERAGE_POOL_2D (operator {pool.index}) has a {_fmt(pool.options.get('filter'))} "
                   f"window over a {_fmt(fmap)} map; expected a global average pool")
    if pool.options.get("activation", "NONE") != "NONE":
        raise fail(f"AVERAGE_POOL_2D (operator {pool.index}) has fused activation "
                   f"{pool.options['activation']}, expected NONE")

    # 4. Head: [RESHAPE|SQUEEZE]* [logits [RESHAPE|SQUEEZE]* [SOFTMAX]].
    logits = None
    softmax = False
    head = chain[len(slots) + 1:]
    for op in head:
        if op.op in _SHAPE_OPS:
            continue
        if op.op in ("CONV_2D", "FULLY_CONNECTED") and logits is None and not softmax:
            w, b = const(op, 1, "weights"), const(op, 2, "bias", required=False)
            wt = tensors[w]
            ok_shape = (len(wt.shape) == 4 and wt.shape[1:] == (1, 1, cin)) if op.op == "CONV_2D" \
                else (len(wt.shape) == 2 and wt.shape[1] == cin)
            if not ok_shape or wt.shape[0] < 1:
                want = f"[classes, 1, 1, {cin}]" if op.op == "CONV_2D" else f"[classes, {cin}]"
                raise fail(f"logits {op.op} (operator {op.index}) has weights of shape "
                           f"{list(wt.shape)}, expected {want}")
            if op.op == "CONV_2D" and tuple(op.options.get("stride", (1, 1))) != (1, 1):
                raise fail(f"logits CONV_2D (operator {op.index}) has stride "
                           f"{_fmt(op.options.get('stride'))}, expected 1")
            if op.options.get("activation", "NONE") != "NONE":
                raise fail(f"logits {op.op} (operator {op.index}) has fused activation "
                           f"{op.options['activation']}, expected NONE")
            if b >= 0 and tensors[b].shape != (wt.shape[0],):
                raise fail(f"logits bias {tensors[b].short_name!r} has shape "
                           f"{list(tensors[b].shape)}, expected [{wt.shape[0]}]")
            logits = (op.op, w, b)
            continue
        if op.op == "SOFTMAX" and logits is not None and not softmax:
            softmax = True
            continue
        raise fail(f"unexpected {op.op} (operator {op.index}) after the average pool; expected "
                   "the 1×1 logits conv, RESHAPE and SOFTMAX")
    num_classes = 0 if logits is None else int(tensors[logits[1]].shape[0])
    config = config.replace(num_classes=num_classes)
    return MobileNetV1Layout(config, tuple(convs), logits, tuple(o.op for o in graph.ops),
                             softmax, current)


def _fmt(pair: Any) -> str:
    if not pair:
        return "?"
    pair = tuple(pair)
    return str(pair[0]) if len(set(pair)) == 1 else "×".join(map(str, pair))


def _infer_alpha(stem_out: int, chain: list[OpInfo], slots: list[_Slot],
                 tensors: tuple[TensorInfo, ...], const: Callable[..., int]) -> float:
    """α = stem channels / 32, unless ``min_depth`` clipped the stem, then last layer / 1024.

    The result must reproduce every layer's channels with TF-slim's rule; otherwise the
    stem-based α is returned and the per-layer check names the first layer that differs.
    """
    if stem_out < 1:
        return 1.0
    last_w = tensors[const(chain[len(slots) - 1], 1, "weights")]
    candidates = [stem_out / 32]
    if last_w.shape:
        candidates.append(last_w.shape[0] / 1024)
    for alpha in candidates:
        cfg = MobileNetConfig(width_multiplier=alpha)
        if all(tensors[const(op, 1, "weights")].shape[:1] == (cfg.depth(s.channels),)
               for s, op in zip(slots, chain) if s.op == "CONV_2D"):
            return alpha
    return candidates[0]


# --------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------


def _layout_state_dict(graph: TFLiteGraph, layout: MobileNetV1Layout) -> dict[str, torch.Tensor]:
    """Dequantize and re-lay out every weight: OHWI → OIHW, [1,kh,kw,C] → [C,1,kh,kw]."""
    tensors = graph.tensors
    eps = layout.config.bn_eps
    state: dict[str, torch.Tensor] = {}

    def value(i: int) -> np.ndarray:
        return dequantize(tensors[i])

    for key, w, b in layout.convs:
        weight = value(w)
        if key.endswith(".dw"):
            weight = weight[0].transpose(2, 0, 1)[:, None]  # [1,kh,kw,C] -> [C,1,kh,kw]
        else:
            weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        cout = weight.shape[0]
        bias = value(b) if b >= 0 else np.zeros(cout, np.float32)
        state[f"{key}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state[f"{key}.bn.weight"] = torch.ones(cout)
        state[f"{key}.bn.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
        state[f"{key}.bn.running_mean"] = torch.zeros(cout)
        state[f"{key}.bn.running_var"] = torch.full((cout,), 1.0 - eps)
        state[f"{key}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    if layout.logits is not None:
        _, w, b = layout.logits
        weight = value(w).reshape(tensors[w].shape[0], -1)  # [K,1,1,C] or [K,C] -> [K,C]
        bias = value(b) if b >= 0 else np.zeros(weight.shape[0], np.float32)
        state["classifier.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state["classifier.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state


def _check_against_model(state: dict[str, torch.Tensor], config: MobileNetConfig, source: str) -> None:
    """The state dict must fit ``MobileNetV1(config)`` exactly (checked on the meta device)."""
    with torch.device("meta"):
        expected = MobileNetV1(config).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:  # a bug here, not in the file: say so
        raise ValueError(f"{source}: internal error mapping TFLite weights (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}, wrong shape {wrong[:3]}); please report it")


def load_tflite(path: str | os.PathLike) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a TFLite MobileNet V1 into ``(config, state_dict, info)``.

    ``MobileNetV1(config).load_state_dict(state_dict, strict=True)`` then reproduces the
    file's float computation (a quantized file's weights are dequantized; its activation
    rounding is not reproduced). Feed the model images scaled as the file expects: for a
    uint8 input, ``(pixel − zero_point) × scale`` with ``info["input_quantization"]``.

    ``info`` holds ``format`` ("tflite"), ``quantized`` (integer weights), ``input_dtype``,
    ``input_quantization`` ((scale, zero_point) or None), ``output_dtype``,
    ``output_quantization``, ``output`` ("probabilities", "logits" or "embedding"),
    ``num_classes``, ``width_multiplier``, ``resolution``, ``has_background_class`` (1001
    outputs, index 0 = background), ``activation``, ``operators``, ``description`` and
    ``associated_files`` (names in the metadata zip some files carry, e.g. labels).

    Raises:
        ValueError: one line, for a missing, truncated, non-TFLite or non-MobileNet-V1 file.
    """
    source = str(path)
    graph = read_tflite_graph(path)
    layout = match_mobilenet_v1(graph, source)
    config = layout.config
    try:
        state = _layout_state_dict(graph, layout)
    except ValueError as e:
        raise ValueError(f"{source}: cannot read the weights: {e}") from None
    _check_against_model(state, config, source)

    tensors = graph.tensors
    image, out = tensors[graph.inputs[0]], tensors[layout.output]
    weight_ids = [w for _, w, _ in layout.convs] + ([layout.logits[1]] if layout.logits else [])
    quantized = any(not np.issubdtype(tensors[w].data.dtype, np.floating) for w in weight_ids
                    if tensors[w].data is not None)
    info: dict[str, Any] = {
        "format": "tflite",
        "quantized": quantized,
        "input_dtype": image.type.lower(),
        "input_quantization": _quant_pair(image),
        "output_dtype": out.type.lower(),
        "output_quantization": _quant_pair(out),
        "output": "embedding" if layout.logits is None
        else ("probabilities" if layout.softmax else "logits"),
        "num_classes": config.num_classes,
        "width_multiplier": config.width_multiplier,
        "resolution": config.resolution,
        "has_background_class": config.num_classes == 1001,
        "activation": config.activation,
        "operators": list(layout.ops),
        "description": graph.description,
        "associated_files": list(graph.associated_files),
    }
    return config, state, info


def _quant_pair(t: TensorInfo) -> tuple[float, int] | None:
    """(scale, zero_point) of an integer tensor with per-tensor quantization, else None."""
    if not t.scale or t.type.startswith("FLOAT"):
        return None
    return float(t.scale[0]), (int(t.zero_point[0]) if t.zero_point else 0)
