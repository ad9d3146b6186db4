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

The flatbuffer is parsed by :mod:`.tflite_graph`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..config import MobileNetConfig
from ..models import MOBILENET_V1_CONV_DEFS, Conv, MobileNetV1
from .tflite_graph import OpInfo, TensorInfo, TFLiteGraph, dequantize, implied_activation, read_tflite_graph

__all__ = ["MobileNetV1Layout", "match_mobilenet_v1", "load_tflite"]

# TensorFlow-trained BatchNorm uses eps = 1e-3; the value is irrelevant to the outputs here
# (the BN is an exact identity plus bias) but keeps the config in line with TF weights.
_BN_EPS = 1e-3

_ACTIVATIONS = {"RELU6": "relu6", "RELU": "relu"}
_SHAPE_OPS = ("RESHAPE", "SQUEEZE")
_TYPE_OPS = ("QUANTIZE", "DEQUANTIZE")  # pass-through in a float re-implementation


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
        act = implied_activation(op, graph)
        if act not in _ACTIVATIONS:
            raise fail(f"{where} has fused activation {act}, expected RELU6 or RELU (or NONE with a "
                       "quantized [0, 6] output range, an implicit ReLU6)")
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
    if any(op.op == "CUSTOM(TFLite_Detection_PostProcess)" for op in graph.ops):
        raise ValueError(f"{source}: an SSD detector, not a classifier; load it with mobilenets.load_detector "
                         "(or `mobilenets detect IMAGE --weights FILE`)")
    if graph.description == "mobilenets":  # our own export (MEAN pool, PAD ops, maybe int8): not weights
        raise ValueError(f"{source}: a file written by `mobilenets export`, not weights: run it in LiteRT with "
                         "mobilenets.deploy.load_exported(path), or `mobilenets predict/evaluate --weights FILE`")
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
