"""The TFLite flatbuffer as plain data: tensors (with their quantization), operators and their
options, the graph's inputs and outputs, and the files packed beside it. Read with the ``tflite``
package's generated schema bindings; nothing is downloaded. :mod:`.tflite` maps this graph onto
MobileNet V1; detection readers map it onto SSD."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import error_line

__all__ = ["TFLITE_IDENTIFIER", "TensorInfo", "OpInfo", "TFLiteGraph", "is_tflite", "read_tflite_graph", "dequantize",
           "implied_activation"]

#: The flatbuffer file identifier of TFLite models, stored at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"

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
        detail = error_line(e, with_type=True)
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


def implied_activation(op: OpInfo, graph: TFLiteGraph) -> str:
    """The activation an operator applies: its fused one, or ``RELU6`` when it fuses none but
    its quantized output can only hold [0, 6] (older TF exports, such as Google's SSD MobileNet
    file, leave ReLU6 implicit in the output range instead of fusing it). ``NONE`` otherwise."""
    act = op.options.get("activation", "NONE")
    if act != "NONE" or not op.outputs:
        return act
    out = graph.tensors[op.outputs[0]]
    if not out.quantized or len(out.scale) != 1 or out.type not in ("UINT8", "INT8"):
        return act
    qmin, qmax = (0, 255) if out.type == "UINT8" else (-128, 127)
    scale, zero = out.scale[0], out.zero_point[0] if out.zero_point else 0
    low, high = (qmin - zero) * scale, (qmax - zero) * scale
    if abs(low) <= scale / 2 and abs(high - 6.0) <= scale:
        return "RELU6"
    return act
