"""Read Google's TFLite SSD MobileNet V1 detectors (``ssd_mobilenet_v1_coco`` exports ending in
``TFLite_Detection_PostProcess``) into :class:`~mobilenets.models.detection.SSDMobileNetV1`.

The graph is matched by structure, not by name, and it is not a chain: Conv2d_11_pointwise feeds
both a box predictor and Conv2d_12. From the image input we follow Table 1's 27 convolutions
(α from the channels), then the four extra layers from Conv2d_13, then, for each of the six maps,
the two 1×1 predictors, told apart by where their outputs go (the post-processing op's box input
or its score input). The anchors are the post-processing op's constant input; they are checked
against our generator's. The box predictors' ``(ty, tx, th, tw)`` rows are reordered to
torchvision's ``(dx, dy, dw, dh)``; BatchNorm, folded into each conv's bias by the converter,
becomes an identity BN carrying that bias, as for the classifiers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..config import MobileNetConfig
from ..models import MOBILENET_V1_CONV_DEFS, Conv
from .tflite_graph import OpInfo, TFLiteGraph, dequantize, implied_activation, read_tflite_graph

__all__ = ["is_tflite_ssd", "read_tflite_ssd"]

_POSTPROCESS = "CUSTOM(TFLite_Detection_PostProcess)"
_BN_EPS = 1e-3
_PASS = ("RESHAPE", "SQUEEZE", "CONCATENATION", "LOGISTIC", "QUANTIZE", "DEQUANTIZE")


def is_tflite_ssd(graph: TFLiteGraph) -> bool:
    """True for a graph that ends in TFLite's SSD post-processing (a detector, not a classifier)."""
    return any(op.op == _POSTPROCESS for op in graph.ops)


def _consumers(graph: TFLiteGraph) -> dict[int, list[OpInfo]]:
    readers: dict[int, list[OpInfo]] = {}
    for op in graph.ops:
        for t in op.inputs:
            if t >= 0:
                readers.setdefault(t, []).append(op)
    return readers


def _body_slots() -> list[tuple[str, str, int, int, int]]:
    """(op, module key, kernel, stride, Table 1 channels) for the 27 body convolutions."""
    slots = []
    for row, d in enumerate(MOBILENET_V1_CONV_DEFS):
        if isinstance(d, Conv):
            slots.append(("CONV_2D", f"features.{row}", d.kernel, d.stride, d.channels))
        else:
            slots.append(("DEPTHWISE_CONV_2D", f"features.{row}.dw", d.kernel, d.stride, 0))
            slots.append(("CONV_2D", f"features.{row}.pw", 1, 1, d.channels))
    return slots


def read_tflite_ssd(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """``(build options, state dict, info)`` of a TFLite SSD MobileNet V1 file.

    ``build options`` are :func:`~mobilenets.models.detection.ssd_mobilenet_v1` keyword arguments
    (α, classes, resolution, TF padding, ReLU6, the input normalization its quantization implies);
    ``info`` holds the file's anchors (``(cy, cx, h, w)``, normalized), the input quantization and
    what was matched. Raises a one-line ``ValueError`` for anything else."""
    graph = read_tflite_graph(path)
    source = str(path)

    def fail(msg: str) -> ValueError:
        return ValueError(f"{source}: not an SSD MobileNet V1: {msg}")

    if not is_tflite_ssd(graph):
        raise fail("no TFLite_Detection_PostProcess operator (a classifier? use load_pretrained)")
    tensors, readers = graph.tensors, _consumers(graph)
    if len(graph.inputs) != 1 or len(tensors[graph.inputs[0]].shape) != 4:
        raise fail("expected one NHWC image input")
    image = tensors[graph.inputs[0]]
    resolution = int(image.shape[1])

    def next_conv(t: int, op_type: str, kernel: int, stride: int, where: str) -> OpInfo:
        for op in readers.get(t, []):
            if op.op != op_type or tuple(op.options.get("stride", ())) != (stride, stride):
                continue
            w = tensors[op.inputs[1]]
            if w.shape[1:3] == (kernel, kernel):
                return op
        raise fail(f"no {op_type} {kernel}×{kernel}/{stride} reads {tensors[t].short_name!r} ({where})")

    convs: list[tuple[str, OpInfo]] = []
    t, maps = graph.inputs[0], []
    for op_type, key, k, s, _ in _body_slots():
        op = next_conv(t, op_type, k, s, key)
        convs.append((key, op))
        t = op.outputs[0]
        if key in ("features.11.pw", "features.13.pw"):
            maps.append(t)
    alpha = tensors[convs[0][1].inputs[1]].shape[0] / 32
    config = MobileNetConfig(width_multiplier=alpha, resolution=max(32, resolution), num_classes=0,
                             activation="relu6", tf_padding=True, bn_eps=_BN_EPS)
    for (op_type, key, _, _, ch), (_, op) in zip(_body_slots(), convs):
        got = tensors[op.inputs[1]].shape[0 if op_type == "CONV_2D" else 3]
        if ch and got != config.depth(ch):
            raise fail(f"{key} has {got} channels, expected {config.depth(ch)} for α={alpha:g}")
        if implied_activation(op, graph) != "RELU6":
            raise fail(f"{key} (operator {op.index}) applies {implied_activation(op, graph)}, expected ReLU6")
    for j in range(4):
        reduce = next_conv(t, "CONV_2D", 1, 1, f"extra layer {j} 1×1")
        expand = next_conv(reduce.outputs[0], "CONV_2D", 3, 2, f"extra layer {j} 3×3")
        convs += [(f"backbone.extras.{j}.reduce", reduce), (f"backbone.extras.{j}.expand", expand)]
        t = expand.outputs[0]
        maps.append(t)
    post = next(op for op in graph.ops if op.op == _POSTPROCESS)
    predictors = _find_predictors(graph, readers, maps, {op.index for _, op in convs}, post, fail)
    anchors_per_map = [tensors[predictors[(m, 0)].inputs[1]].shape[0] // 4 for m in range(len(maps))]
    num_classes = tensors[predictors[(0, 1)].inputs[1]].shape[0] // anchors_per_map[0]
    kernel = tensors[predictors[(0, 0)].inputs[1]].shape[1]
    if kernel != 1:
        raise fail(f"the box predictors are {kernel}×{kernel} convolutions, expected 1×1 (head='ssd')")
    state = _state_dict(graph, convs, predictors, anchors_per_map, num_classes)
    anchors = dequantize(tensors[post.inputs[2]]).reshape(-1, 4)
    scale, zero = (image.scale[0], image.zero_point[0]) if image.quantized else (None, None)
    if scale is not None:  # the file computes (q − zero)·scale = (q/255 − zero/255) / (1/(255·scale))
        mean, std = [zero / 255.0] * 3, [1.0 / (255.0 * scale)] * 3
    else:  # a float file: the TF OD API's 2·x/255 − 1
        mean, std = [0.5] * 3, [0.5] * 3
    build = {"width_multiplier": alpha, "num_classes": num_classes, "resolution": resolution, "head": "ssd",
             "tf_padding": True, "activation": "relu6", "image_mean": mean, "image_std": std}
    ranges = {}
    for key, op in convs:
        out = tensors[op.outputs[0]]
        if out.quantized:
            ranges[key if key.startswith("backbone.") else f"backbone.{key}"] = (float(out.scale[0]), int(out.zero_point[0]))
    for (m, d), op in predictors.items():
        out = tensors[op.outputs[0]]
        if out.quantized:
            head = "regression_head" if d == 0 else "classification_head"
            ranges[f"head.{head}.module_list.{m}"] = (float(out.scale[0]), int(out.zero_point[0]))
    info = {"format": "tflite", "activation_ranges": ranges, "path": source, "quantized": image.quantized, "anchors": anchors,
            "input_quantization": (float(scale), int(zero)) if scale is not None else None,
            "anchors_per_location": anchors_per_map, "config": config.to_dict(),
            "operators": len(graph.ops)}
    return build, state, info


def _find_predictors(graph: TFLiteGraph, readers: dict[int, list[OpInfo]], maps: list[int], used: set[int],
                     post: OpInfo, fail: Any) -> dict[tuple[int, int], OpInfo]:
    """Per feature map m, its box (0) and class (1) predictor: the convolutions reading the map
    whose output ends in the post-processing op's box or score input."""
    box_in, score_in = post.inputs[:2]

    def destination(op: OpInfo) -> int | None:
        frontier = [op.outputs[0]]
        while frontier:
            cur = frontier.pop()
            if cur == box_in:
                return 0
            if cur == score_in:
                return 1
            frontier += [o.outputs[0] for o in readers.get(cur, []) if o.op in _PASS and o.outputs]
        return None

    predictors: dict[tuple[int, int], OpInfo] = {}
    for m, fmap in enumerate(maps):
        for op in readers.get(fmap, []):
            if op.op == "CONV_2D" and op.index not in used:
                d = destination(op)
                if d is not None:
                    predictors[(m, d)] = op
    missing = [(m, d) for m in range(len(maps)) for d in (0, 1) if (m, d) not in predictors]
    if missing:
        raise fail(f"feature map {missing[0][0]} has no {'box' if missing[0][1] == 0 else 'class'} predictor")
    return predictors


def _state_dict(graph: TFLiteGraph, convs: list[tuple[str, OpInfo]], predictors: dict[tuple[int, int], OpInfo],
                anchors_per_map: list[int], num_classes: int) -> dict[str, torch.Tensor]:
    tensors = graph.tensors
    state: dict[str, torch.Tensor] = {}

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    for key, op in convs:
        w = dequantize(tensors[op.inputs[1]])
        w = w[0].transpose(2, 0, 1)[:, None] if op.op == "DEPTHWISE_CONV_2D" else w.transpose(0, 3, 1, 2)
        bias = dequantize(tensors[op.inputs[2]]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(len(w))
        prefix = key if key.startswith("backbone.") else f"backbone.{key}"
        n = w.shape[0]
        state[f"{prefix}.conv.weight"] = t(w)
        state[f"{prefix}.bn.weight"] = torch.ones(n)
        state[f"{prefix}.bn.bias"] = t(bias)
        state[f"{prefix}.bn.running_mean"] = torch.zeros(n)
        state[f"{prefix}.bn.running_var"] = torch.full((n,), 1.0 - _BN_EPS)
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    for (m, d), op in predictors.items():
        w = dequantize(tensors[op.inputs[1]]).transpose(0, 3, 1, 2)
        b = dequantize(tensors[op.inputs[2]])
        if d == 0:  # TF's (ty, tx, th, tw) per anchor → torchvision's (dx, dy, dw, dh)
            order = (np.arange(anchors_per_map[m])[:, None] * 4 + np.array([1, 0, 3, 2])).reshape(-1)
            w, b = w[order], b[order]
        head = "regression_head" if d == 0 else "classification_head"
        state[f"head.{head}.module_list.{m}.weight"] = t(w)
        state[f"head.{head}.module_list.{m}.bias"] = t(b)
    return state
