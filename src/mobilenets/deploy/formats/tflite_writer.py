"""Write a MobileNet as a TFLite (LiteRT) flatbuffer, and quantize it with LiteRT's own tool.

A BN-folded MobileNet V1 is a chain of five TFLite builtins: ``CONV_2D`` and
``DEPTHWISE_CONV_2D`` (with the ReLU/ReLU6 fused in, as Google's own files have them), ``PAD``
where PyTorch's symmetric padding differs from TFLite's "SAME" (stride-2 layers of models
not trained with ``tf_padding``), ``MEAN`` over H and W for the global pool, and
``FULLY_CONNECTED`` for the classifier. Writing those directly from the weights takes a few
milliseconds and needs nothing beyond ``ai-edge-litert`` (which every tflite export needs
anyway, to verify the file); the general PyTorch → LiteRT converter (``litert-torch``) pulls in
JAX, TensorFlow-sized dependencies and pins that clash with ours, for a graph this small.

The file takes NHWC float32 input ``(N, R, R, C)`` (what TFLite and Android code feed) and
returns logits (no softmax), or the ``1024·α``-d embedding for a model without a classifier.

int8: :func:`quantize_tflite` runs LiteRT's post-training calibrator and quantizer (the code
behind ``TFLiteConverter``'s ``representative_dataset``; shipped in ``ai-edge-litert`` as
``_pywrap_tensorflow_lite_calibration_wrapper``): per-channel symmetric int8 weights, per-tensor
asymmetric int8 activations, int32 biases, float32 input/output around an all-int8 body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ...layers import Conv2dSame
from ...models import MobileNetV1

__all__ = ["embed_tflite_metadata", "model_to_tflite", "quantize_tflite", "read_tflite_metadata"]


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise ValueError("tflite export needs the ai-edge-litert package: pip install ai-edge-litert") from None
    return schema


class _Graph:
    """Tensors, buffers and operators of one subgraph, appended in execution order."""

    def __init__(self, schema: Any) -> None:
        self.s = schema
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [schema.BufferT()]  # buffer 0: the empty sentinel every file has
        self.ops: list[Any] = []
        self.codes: dict[int, int] = {}  # builtin op → index into operator_codes
        self.code_list: list[Any] = []

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None,
               dtype: int | None = None) -> int:
        s = self.s
        buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            self.buffers.append(buf)
            buffer = len(self.buffers) - 1
        t = s.TensorT()
        t.shape = list(shape)
        if shape and shape[0] == -1:  # dynamic batch: size 1 until the runtime resizes the input
            t.shape[0] = 1
            t.shapeSignature = list(shape)
        t.type = s.TensorType.FLOAT32 if dtype is None else dtype
        t.buffer = buffer
        t.name = name
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = 0,
           options: Any = None, version: int = 1) -> None:
        s = self.s
        if builtin not in self.codes:
            code = s.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, 127)  # the field older readers look at
            code.version = version
            self.codes[builtin] = len(self.code_list)
            self.code_list.append(code)
        o = s.OperatorT()
        o.opcodeIndex = self.codes[builtin]
        o.inputs, o.outputs = inputs, outputs
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.ops.append(o)


def _activation(schema: Any, module: nn.Module | None) -> int:
    act = schema.ActivationFunctionType
    if module is None or isinstance(module, nn.Identity):
        return act.NONE
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0)):
        return act.RELU6
    if isinstance(module, nn.ReLU):
        return act.RELU
    raise ValueError(f"tflite export: no fused TFLite activation for {type(module).__name__}")


def _conv_layers(features: nn.Module) -> list[tuple[nn.Conv2d, nn.Module | None]]:
    """(conv, activation after it) in execution order; BatchNorm must already be folded."""
    leaves = [m for m in features.modules() if not list(m.children())]
    out: list[tuple[nn.Conv2d, nn.Module | None]] = []
    for m in leaves:
        if isinstance(m, nn.Conv2d):
            out.append((m, None))
        elif isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh)):
            if not out or out[-1][1] is not None:
                raise ValueError("tflite export: an activation that does not follow a convolution")
            out[-1] = (out[-1][0], m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError("tflite export needs a BN-folded model (mobilenets.fuse(model))")  # noqa: TRY004 (one-line ValueError: the CLI exits 2)
        elif not isinstance(m, (nn.Identity, nn.Dropout)):
            raise ValueError(f"tflite export: unsupported layer {type(m).__name__} in the body")  # noqa: TRY004 (one-line ValueError: the CLI exits 2)
    return out


def _emit_conv(g: _Graph, x: int, conv: nn.Conv2d, act: nn.Module | None, name: str, h: int, w: int,
               batch: int) -> tuple[int, int, int]:
    """Append one BN-folded convolution (``PAD`` first where PyTorch's padding is not TFLite's) with its
    activation fused; returns ``(output tensor, H, W)``."""
    s = g.s
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if conv.groups != 1 and not depthwise:
        raise ValueError("tflite export: grouped convolutions other than depthwise are not supported")
    if isinstance(conv, Conv2dSame):
        padding = s.Padding.SAME
    else:
        ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
        same = (sh, sw) == (1, 1) and ph == (kh - 1) // 2 * dh and pw == (kw - 1) // 2 * dw
        padding = s.Padding.SAME if same else s.Padding.VALID
        if not same and (ph or pw):  # PyTorch pads symmetrically; TFLite's SAME would not
            pads = g.tensor(f"{name}.pads", [4, 2], np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32),
                            dtype=s.TensorType.INT32)
            h, w = h + 2 * ph, w + 2 * pw
            padded = g.tensor(f"{name}.pad", [batch, h, w, conv.in_channels])
            g.op(s.BuiltinOperator.PAD, [x, pads], [padded], s.BuiltinOptions.PadOptions, s.PadOptionsT())
            x = padded
    if padding == s.Padding.SAME:
        h, w = -(-h // sh), -(-w // sw)
    else:
        h, w = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    weight = conv.weight.detach().float().numpy()
    bias = (conv.bias.detach().float().numpy() if conv.bias is not None
            else np.zeros(conv.out_channels, np.float32))
    if depthwise:  # TFLite: (1, kh, kw, C); PyTorch: (C, 1, kh, kw)
        filt = g.tensor(f"{name}.weight", [1, kh, kw, conv.out_channels], weight.transpose(1, 2, 3, 0))
    else:  # TFLite: OHWI; PyTorch: OIHW
        filt = g.tensor(f"{name}.weight", [conv.out_channels, kh, kw, conv.in_channels], weight.transpose(0, 2, 3, 1))
    b = g.tensor(f"{name}.bias", [conv.out_channels], bias)
    y = g.tensor(name, [batch, h, w, conv.out_channels])
    if depthwise:
        opts = s.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = 1
        opt_type, builtin, version = s.BuiltinOptions.DepthwiseConv2DOptions, s.BuiltinOperator.DEPTHWISE_CONV_2D, 2
    else:
        opts = s.Conv2DOptionsT()
        opt_type, builtin, version = s.BuiltinOptions.Conv2DOptions, s.BuiltinOperator.CONV_2D, 1
    opts.padding, opts.strideH, opts.strideW = padding, sh, sw
    opts.dilationHFactor, opts.dilationWFactor = dh, dw
    opts.fusedActivationFunction = _activation(s, act)
    g.op(builtin, [x, filt, b], [y], opt_type, opts, version)
    return y, h, w


def model_to_tflite(model: nn.Module, *, batch: int | None = 1, resolution: int | None = None) -> bytes:
    """The TFLite flatbuffer of a BN-folded :class:`~mobilenets.models.MobileNetV1` (fp32).

    Input ``(batch, R, R, C)`` float32 NHWC named ``input``; output ``logits``. ``batch=None``
    makes the batch dimension dynamic (``-1`` in the shape signature; resize the input tensor
    before running).
    """
    s = _schema()
    if not isinstance(model, MobileNetV1):
        raise ValueError(f"tflite export writes MobileNet V1 models; got {type(model).__name__}")  # noqa: TRY004 (one-line ValueError: the CLI exits 2)
    if model.features_only:
        raise ValueError("tflite export: give a classifier or embedding model, not features_only")
    config = model.config
    r = int(resolution or config.resolution)
    batch = -1 if batch is None else int(batch)
    g = _Graph(s)
    x = g.tensor("input", [batch, r, r, config.in_chans])
    h = w = r
    layers = _conv_layers(model.features)
    for i, (conv, act) in enumerate(layers):
        x, h, w = _emit_conv(g, x, conv, act, f"features.{i}", h, w, batch)

    channels = layers[-1][0].out_channels
    axes = g.tensor("pool.axes", [2], np.array([1, 2], np.int32), dtype=s.TensorType.INT32)
    pooled = g.tensor("pool", [batch, channels])
    mean = s.ReducerOptionsT()
    mean.keepDims = False
    g.op(s.BuiltinOperator.MEAN, [x, axes], [pooled], s.BuiltinOptions.ReducerOptions, mean)
    x = pooled
    if isinstance(model.classifier, nn.Linear):
        fc = model.classifier
        wt = g.tensor("classifier.weight", list(fc.weight.shape), fc.weight.detach().float().numpy())
        bt = g.tensor("classifier.bias", [fc.out_features], fc.bias.detach().float().numpy()
                      if fc.bias is not None else np.zeros(fc.out_features, np.float32))
        logits = g.tensor("logits", [batch, fc.out_features])
        opts = s.FullyConnectedOptionsT()
        opts.fusedActivationFunction = s.ActivationFunctionType.NONE
        g.op(s.BuiltinOperator.FULLY_CONNECTED, [x, wt, bt], [logits], s.BuiltinOptions.FullyConnectedOptions, opts)
        x = logits
    elif not isinstance(model.classifier, nn.Identity):
        raise ValueError(f"tflite export: unsupported classifier {type(model.classifier).__name__}")  # noqa: TRY004 (one-line ValueError: the CLI exits 2)
    return _finish(g, inputs=[0], outputs=[x], metadata={"mobilenets_config": config.to_dict()})


def _finish(g: _Graph, inputs: list[int], outputs: list[int], metadata: dict[str, Any]) -> bytes:
    import flatbuffers

    s = g.s
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = g.tensors, inputs, outputs, g.ops, "main"
    signature = s.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [_tensor_map(s, g.tensors[i].name, i) for i in inputs]
    signature.outputs = [_tensor_map(s, g.tensors[i].name, i) for i in outputs]
    model = s.ModelT()
    model.version = 3
    model.description = "mobilenets"
    model.operatorCodes, model.subgraphs, model.buffers = g.code_list, [sub], g.buffers
    model.signatureDefs = [signature]
    model.metadata = []
    for key, value in metadata.items():
        buf = s.BufferT()
        buf.data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
        g.buffers.append(buf)
        entry = s.MetadataT()
        entry.name, entry.buffer = key, len(g.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_tflite_metadata(buf: bytes, entries: dict[str, str]) -> bytes:
    """The flatbuffer ``buf`` with metadata entries ``name → text`` added (replacing same-named ones)."""
    import flatbuffers

    s = _schema()
    model = s.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    model.buffers = model.buffers or []
    names = {name.encode() for name in entries}
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) not in names]
    for name, text in entries.items():
        data = s.BufferT()
        data.data = np.frombuffer(text.encode(), np.uint8)
        model.buffers.append(data)
        entry = s.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(buf) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(buf: bytes) -> dict[str, str]:
    """The metadata entries of a TFLite flatbuffer whose data are text (name → text)."""
    s = _schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite file (no TFL3 identifier)")
    model = s.Model.GetRootAs(buf, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        index = entry.Buffer()
        if not 0 <= index < model.BuffersLength():
            continue
        buffer = model.Buffers(index)
        data = bytes(buffer.DataAsNumpy()) if buffer.DataLength() else b""
        try:
            out[_name(entry.Name()).decode()] = data.decode()
        except UnicodeDecodeError:
            continue  # binary metadata (e.g. TFLite Model Metadata's flatbuffer)
    return out


def _name(name: Any) -> bytes:
    return name if isinstance(name, bytes) else str(name or "").encode()


def _tensor_map(s: Any, name: str, index: int) -> Any:
    m = s.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m


def quantize_tflite(float_model: bytes, calibration: Iterable[np.ndarray]) -> bytes:
    """int8 version of a float TFLite file, calibrated on NHWC float32 input batches.

    LiteRT's quantizer: per-channel symmetric int8 weights, per-tensor int8 activations from
    the calibration min/max, int32 biases; input and output stay float32 (a QUANTIZE op at the
    start and a DEQUANTIZE at the end), so the file is a drop-in for the float one.
    """
    try:
        from ai_edge_litert import (
            _pywrap_tensorflow_lite_calibration_wrapper as calibration_wrapper,
        )
    except ImportError:
        raise ValueError("int8 tflite export needs the ai-edge-litert package: pip install ai-edge-litert") from None
    calibrator = calibration_wrapper.CalibrationWrapper(float_model, [], [])
    fed = 0
    for batch in calibration:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not fed:
            calibrator.Prepare([list(batch.shape)])
        calibrator.FeedTensor([batch])
        fed += 1
    if not fed:
        raise ValueError("int8 tflite export: no calibration batches")
    f32, i8, i32 = (np.dtype(t).num for t in (np.float32, np.int8, np.int32))
    # (input type, output type, allow float ops, activation type, bias type, disable per-channel,
    #  disable per-channel for FULLY_CONNECTED)
    return bytes(calibrator.QuantizeModel(f32, f32, False, i8, i32, False, False))


def nchw_to_nhwc(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """PyTorch's NCHW batch as the NHWC array TFLite files take."""
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)
