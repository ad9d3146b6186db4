"""Write an SSD MobileNet V1 detector as a TFLite flatbuffer, laid out as Google's
``coco_ssd_mobilenet_v1`` files are (built with :mod:`.tflite_writer`'s pieces).

The graph: the BN-folded body and extra layers (``CONV_2D`` / ``DEPTHWISE_CONV_2D`` with ReLU6
fused, ``PAD`` where PyTorch's padding is not TFLite's SAME), per feature map the box and class
predictors, each ``RESHAPE``\\d from ``(1, H, W, A·K)`` to ``(1, H·W·A, K)`` (TFLite's NHWC
channel order is torchvision's anchor-major order, so nothing is transposed), two
``CONCATENATION``\\s and a ``LOGISTIC`` on the class scores.

- ``postprocess=None``: outputs ``boxes`` ``(1, A, 4)`` (torchvision's ``(dx, dy, dw, dh)``
  encodings, weights 10, 10, 5, 5) and ``scores`` ``(1, A, C)`` (sigmoid, column 0 background),
  what the ONNX and OpenVINO exports output.
- ``postprocess={...}``: the box predictors' rows are reordered to TF's ``(ty, tx, th, tw)`` and the
  graph ends in LiteRT's ``TFLite_Detection_PostProcess`` custom operator (decoding against the
  anchors, stored as a constant ``(cy, cx, h, w)`` tensor, and NMS), with Google's four outputs:
  boxes ``(1, D, 4)`` as normalized ``(ymin, xmin, ymax, xmax)``, classes ``(1, D)`` (float,
  0-based: COCO category id − 1), scores ``(1, D)``, and the number of detections ``(1,)``. So an app
  written for Google's file runs this one unchanged (its input is float32, normalized).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from .tflite_writer import _conv_layers, _emit_conv, _finish, _Graph, _schema

__all__ = ["POSTPROCESS_OP", "append_postprocess", "detector_to_tflite", "postprocess_options"]

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
_BODY_TAPS = (11, 13)  # features index of Conv2d_11_pointwise and Conv2d_13_pointwise (models.detection.backbone)


def postprocess_options(*, max_detections: int, score_threshold: float, iou_threshold: float, num_classes: int,
                        regular_nms: bool, detections_per_class: int = 100) -> dict[str, Any]:
    """The custom operator's options (a flexbuffer map, as Google's files hold them). ``num_classes``
    counts the real classes (background excluded); ``regular_nms``: per-class NMS (LiteRT's
    ``use_regular_nms``), else its fast path: each anchor's best class, one class-agnostic NMS."""
    return {"max_detections": int(max_detections), "max_classes_per_detection": 1,
            "detections_per_class": int(detections_per_class), "use_regular_nms": bool(regular_nms),
            "nms_score_threshold": float(score_threshold), "nms_iou_threshold": float(iou_threshold),
            "num_classes": int(num_classes), "y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}


def _tf_box_order(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of a box predictor with its rows per anchor reordered from (dx, dy, dw, dh) to (dy, dx, dh, dw)."""
    anchors = conv.out_channels // 4
    order = (np.arange(anchors)[:, None] * 4 + np.array([1, 0, 3, 2])).reshape(-1)
    out = copy.deepcopy(conv)
    with torch.no_grad():
        out.weight.copy_(conv.weight[order])
        if conv.bias is not None:
            out.bias.copy_(conv.bias[order])
    return out


def _reshape(g: _Graph, x: int, shape: list[int], name: str) -> int:
    s = g.s
    target = g.tensor(f"{name}.shape", [len(shape)], np.array(shape, np.int32), dtype=s.TensorType.INT32)
    y = g.tensor(name, shape)
    opts = s.ReshapeOptionsT()
    opts.newShape = list(shape)
    g.op(s.BuiltinOperator.RESHAPE, [x, target], [y], s.BuiltinOptions.ReshapeOptions, opts)
    return y


def append_postprocess(buf: bytes, detector: nn.Module, options: dict[str, Any]) -> bytes:
    """``buf`` (a raw detector file of :func:`detector_to_tflite` with ``tf_box_order=True``, fp32
    or int8 with float outputs) ending in ``TFLite_Detection_PostProcess``: the anchors become a
    constant input of the operator and its four outputs the file's outputs."""
    import flatbuffers
    from flatbuffers import flexbuffers

    s = _schema()
    model = s.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    sub = model.subgraphs[0]
    if len(sub.outputs) != 2:
        raise ValueError("tflite detector export: the raw graph must have two outputs (boxes, scores)")
    boxes, scores = (int(i) for i in sub.outputs)
    r = int(detector.resolution)
    anchors = detector.anchor_generator.cxcywh(detector.grid_sizes(r))[:, [1, 0, 3, 2]].numpy().astype(np.float32)
    if anchors.shape[0] != int(sub.tensors[boxes].shape[1]):
        raise ValueError(f"tflite detector export: {anchors.shape[0]} anchors for {sub.tensors[boxes].shape[1]} boxes")

    def tensor(name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            model.buffers.append(b)
            buffer = len(model.buffers) - 1
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), s.TensorType.FLOAT32, buffer, name
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    d = int(options["max_detections"])
    anchor_t = tensor("anchors", list(anchors.shape), anchors)
    outs = [tensor(POSTPROCESS_OP, [1, d, 4]), tensor(f"{POSTPROCESS_OP}:1", [1, d]),
            tensor(f"{POSTPROCESS_OP}:2", [1, d]), tensor(f"{POSTPROCESS_OP}:3", [1])]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode = POSTPROCESS_OP
    code.version = 1
    model.operatorCodes.append(code)
    op = s.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs, op.outputs = [boxes, scores, anchor_t], outs
    op.customOptions = list(flexbuffers.Dumps(options))
    op.customOptionsFormat = s.CustomOptionsFormat.FLEXBUFFERS
    sub.operators.append(op)
    sub.outputs = outs
    for signature in model.signatureDefs or []:
        signature.outputs = []
        for i in outs:
            m = s.TensorMapT()
            m.name, m.tensorIndex = sub.tensors[i].name, i
            signature.outputs.append(m)
    builder = flatbuffers.Builder(len(buf) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def detector_to_tflite(detector: nn.Module, *, postprocess: dict[str, Any] | None = None,
                       tf_box_order: bool | None = None) -> bytes:
    """The fp32 TFLite flatbuffer of a BN-folded :class:`~mobilenets.models.detection.SSDMobileNetV1`
    (``mobilenets.fuse(detector)``), batch 1, input ``(1, R, R, 3)`` float32 NHWC, normalized as the
    detector's transform normalizes. ``postprocess``: :func:`postprocess_options` to end in
    ``TFLite_Detection_PostProcess``; ``None``: raw boxes and sigmoid scores (in TF's ``(ty, tx, th,
    tw)`` order with ``tf_box_order``, which ``postprocess`` implies)."""
    tf_box_order = postprocess is not None if tf_box_order is None else tf_box_order
    if not hasattr(detector, "forward_raw") or not hasattr(detector, "anchor_generator"):
        raise ValueError(f"tflite detector export writes SSD detectors; got {type(detector).__name__}")
    s = _schema()
    g = _Graph(s)
    r = int(detector.resolution)
    x = g.tensor("input", [1, r, r, 3])
    h = w = r
    backbone = detector.backbone
    maps: list[tuple[int, int, int]] = []
    for i, layer in enumerate(backbone.features):
        for j, (conv, act) in enumerate(_conv_layers(layer)):
            x, h, w = _emit_conv(g, x, conv, act, f"backbone.features.{i}.{j}", h, w, 1)
        if i in _BODY_TAPS:
            maps.append((x, h, w))
    for k, extra in enumerate(backbone.extras):
        for j, (conv, act) in enumerate(_conv_layers(extra)):
            x, h, w = _emit_conv(g, x, conv, act, f"backbone.extras.{k}.{j}", h, w, 1)
        maps.append((x, h, w))
    head = detector.head
    num_anchors = detector.anchor_generator.num_anchors_per_location()
    outputs = []
    for kind, columns, module_list in (("boxes", 4, head.regression_head.module_list),
                                       ("logits", detector.num_classes, head.classification_head.module_list)):
        parts = []
        for m, ((fmap, mh, mw), module, a) in enumerate(zip(maps, module_list, num_anchors)):
            layers = _conv_layers(module)
            if kind == "boxes" and tf_box_order:
                layers[-1] = (_tf_box_order(layers[-1][0]), layers[-1][1])
            y, yh, yw = fmap, mh, mw
            for j, (conv, act) in enumerate(layers):
                y, yh, yw = _emit_conv(g, y, conv, act, f"head.{kind}.{m}.{j}", yh, yw, 1)
            if layers[-1][0].out_channels != a * columns:
                raise ValueError(f"tflite detector export: predictor {kind}.{m} has {layers[-1][0].out_channels} "
                                 f"outputs, expected {a}×{columns}")
            parts.append((_reshape(g, y, [1, yh * yw * a, columns], f"head.{kind}.{m}.reshape"), yh * yw * a))
        total = sum(n for _, n in parts)
        cat = g.tensor(kind, [1, total, columns])
        opts = s.ConcatenationOptionsT()
        opts.axis = 1
        g.op(s.BuiltinOperator.CONCATENATION, [t for t, _ in parts], [cat], s.BuiltinOptions.ConcatenationOptions,
             opts)
        outputs.append(cat)
    boxes, logits = outputs
    scores = g.tensor("scores", [1, g.tensors[logits].shape[1], detector.num_classes])
    g.op(s.BuiltinOperator.LOGISTIC, [logits], [scores])
    meta: dict[str, Any] = {"resolution": r, "num_classes": int(detector.num_classes), "layout": "NHWC",
                            "image_mean": list(detector.transform.image_mean),
                            "image_std": list(detector.transform.image_std)}
    order = "(ty, tx, th, tw)" if tf_box_order else "(dx, dy, dw, dh)"
    meta["outputs"] = [f"boxes {order}, weights 10, 10, 5, 5", "scores (sigmoid, column 0 background)"]
    raw = _finish(g, inputs=[0], outputs=[boxes, scores], metadata={"mobilenets_detector": meta})
    return raw if postprocess is None else append_postprocess(raw, detector, postprocess)
