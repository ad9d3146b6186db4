"""Read ``keras.applications.MobileNet`` (V1) weight files into our config and state dict.

Keras publishes Google's MobileNet V1 weights as HDF5 files (``mobilenet_1_0_224_tf.h5``
and its ``_no_top`` twin), and people fine-tune and re-save them with Keras. This reader
uses ``h5py`` alone, so neither TensorFlow nor Keras is needed to load them.

The layouts understood (checked against files Keras 3.15 writes, and against the
Keras 2 naming of the published files):

* legacy HDF5 (``save_weights("x.h5")`` in Keras 2, ``legacy_h5_format`` in Keras 3): one
  group per layer, with a ``weight_names`` attribute listing its datasets in order, e.g.
  ``conv_dw_1/conv_dw_1/depthwise_kernel:0`` (Keras 2) or ``conv_dw_1/conv_dw_1/kernel``
  (Keras 3). A full-model ``model.save("x.h5")`` holds the same under ``model_weights``,
  plus the model's JSON config in the ``model_config`` attribute.
* Keras 3 ``.weights.h5``: ``layers/<snake_case class name>[_k]/vars/<0..n>``, e.g.
  ``layers/depthwise_conv2d_4/vars/0``; recent Keras stores the layer's name in the
  ``name`` attribute of ``vars``. Older files lack it, and then the ``_k`` counters are
  mapped back to layer names through MobileNet's fixed layer order.
* a Keras 3 ``.keras`` archive (a zip holding ``model.weights.h5`` and ``config.json``).

Keras's MobileNet is our ``MobileNetV1`` with ReLU6, BatchNorm ε = 1e-3 and TensorFlow
"SAME" padding (Keras pads its stride-2 depthwise convs by (0, 1) then convolves "valid",
which is "SAME" for even inputs, i.e. for any input side that is a multiple of 32).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import MobileNetConfig
from ..models import MOBILENET_V1_CONV_DEFS, MobileNetV1

__all__ = ["load_keras", "KERAS_BN_EPS", "KERAS_DEFAULT_RESOLUTION"]

KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization's default, which MobileNet keeps
KERAS_DEFAULT_RESOLUTION = 224  # weight files do not record the input size
_NUM_BLOCKS = len(MOBILENET_V1_CONV_DEFS) - 1  # 13 depthwise separable blocks
_BASE_CHANNELS = [d.channels for d in MOBILENET_V1_CONV_DEFS]  # 32, 64, ..., 1024 (α = 1)
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
_BN_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                "moving_variance": "running_var"}
# Keras's MobileNet names its models f"mobilenet_{alpha:0.2f}_{rows}".
_MODEL_NAME = re.compile(r"^mobilenet_(\d+(?:\.\d+)?)_(\d+)$")

Layers = dict[str, dict[str, np.ndarray]]  # Keras layer name -> variable name -> value


class _FormatError(ValueError):
    """A one-line complaint about the file's content (as opposed to h5py failing to read it)."""


# --- the Keras MobileNet's layers, in model order ------------------------------------------

def _body_layers() -> list[tuple[str, str, str]]:
    """``(keras_name, kind, torch_prefix)`` for every weighted layer of the body, in order."""
    out = [("conv1", "conv", "features.0.conv"), ("conv1_bn", "bn", "features.0.bn")]
    for i in range(1, _NUM_BLOCKS + 1):
        out += [
            (f"conv_dw_{i}", "dw", f"features.{i}.dw.conv"),
            (f"conv_dw_{i}_bn", "bn", f"features.{i}.dw.bn"),
            (f"conv_pw_{i}", "conv", f"features.{i}.pw.conv"),
            (f"conv_pw_{i}_bn", "bn", f"features.{i}.pw.bn"),
        ]
    return out


_BODY = _body_layers()
_BODY_NAMES = [name for name, _, _ in _BODY]
_HEAD = "conv_preds"  # the 1×1 Conv2D with bias that is the classifier (include_top=True)

# For .weights.h5 files without layer names: the k-th layer of each class, in model order.
_BY_CLASS = {
    "conv2d": ["conv1"] + [f"conv_pw_{i}" for i in range(1, _NUM_BLOCKS + 1)] + [_HEAD],
    "depthwise_conv2d": [f"conv_dw_{i}" for i in range(1, _NUM_BLOCKS + 1)],
    "batch_normalization": [n for n, kind, _ in _BODY if kind == "bn"],
}


def _var_order(layer: str) -> tuple[str, ...]:
    """The order in which Keras stores a layer's variables (a conv's bias, if any, comes last)."""
    return _BN_VARS if layer.endswith("_bn") else ("kernel", "bias")


def _required_vars(layer: str) -> set[str]:
    """The variables each MobileNet layer has: only the classifier conv has a bias."""
    if layer.endswith("_bn"):
        return set(_BN_VARS)
    return {"kernel", "bias"} if layer == _HEAD else {"kernel"}


# --- reading the HDF5 layouts ----------------------------------------------------------------

def _strings(value: Any) -> list[str]:
    """An HDF5 string attribute (bytes or str, scalar or array) as a list of str."""
    items = np.atleast_1d(np.asarray(value, dtype=object)).tolist()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in items]


def _attr_strings(group: Any, name: str) -> list[str] | None:
    """A list attribute, joining the ``name0``, ``name1``, ... chunks Keras 2 splits big ones into."""
    if name in group.attrs:
        return _strings(group.attrs[name])
    if f"{name}0" not in group.attrs:
        return None
    out: list[str] = []
    k = 0
    while f"{name}{k}" in group.attrs:
        out += _strings(group.attrs[f"{name}{k}"])
        k += 1
    return out


def _array(dataset: Any) -> np.ndarray:
    return np.asarray(dataset[()])


def _add(layers: Layers, layer: str, var: str, value: np.ndarray, where: str) -> None:
    slot = layers.setdefault(layer, {})
    if var in slot:
        raise _FormatError(f"holds two '{var}' weights for layer {layer} ({where}); "
                           "not a single MobileNet's weights")
    slot[var] = value


def _read_legacy(root: Any) -> Layers:
    """Legacy HDF5: each layer group lists its datasets, in order, in ``weight_names``."""
    names = _attr_strings(root, "layer_names")
    if names is None:
        names = [k for k in root if "weight_names" in root[k].attrs]
    layers: Layers = {}
    for group_name in names:
        if group_name not in root:
            raise _FormatError(f"lists layer {group_name} but has no group for it")
        group = root[group_name]
        weight_names = _attr_strings(group, "weight_names") or []
        # A nested model (e.g. MobileNet inside a Sequential) keeps all its layers' weights in
        # one group; the layer is then the weight name's parent ("conv1/kernel:0" -> conv1).
        parents = {wn.split("/")[-2] for wn in weight_names if "/" in wn}
        nested = len(parents) > 1
        for wn in weight_names:
            if wn not in group:
                raise _FormatError(f"layer {group_name} lists weight {wn} but does not hold it")
            parts = wn.split("/")
            layer = parts[-2] if nested else group_name
            var = parts[-1].split(":")[0]
            var = "kernel" if var == "depthwise_kernel" else var
            _add(layers, layer, var, _array(group[wn]), wn)
    return layers


def _is_group(obj: Any) -> bool:
    return hasattr(obj, "keys")  # an h5py Group (or File), not a Dataset


def _vars_groups(group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(path, vars_group)`` for each layer under a ``layers`` group, entering nested models."""
    if not _is_group(group):
        return
    for key in group:
        child = group[key]
        path = f"{prefix}/{key}"
        if not _is_group(child):
            continue
        if "vars" in child and _is_group(child["vars"]) and len(child["vars"]) > 0:
            yield path, child["vars"]
        if "layers" in child:
            yield from _vars_groups(child["layers"], f"{path}/layers")


def _read_weights_h5(root: Any) -> Layers:
    """Keras 3 ``.weights.h5``: ``layers/<class>[_k]/vars/<i>``, named by the ``name`` attribute."""
    top = "layers" if "layers" in root else "_layer_checkpoint_dependencies"
    found = list(_vars_groups(root[top], top))
    named = all("name" in g.attrs for _, g in found)
    layers: Layers = {}
    for path, group in found:
        if named:
            layer = _strings(group.attrs["name"])[0]
        else:
            layer = _name_by_class(path.rsplit("/", 1)[-1]) or path
        n = len(group)
        order = _var_order(layer)
        var_names = order if n <= len(order) else tuple(str(i) for i in range(n))
        for i in range(n):
            if str(i) not in group:
                raise _FormatError(f"{path}/vars has no variable {i}")
            _add(layers, layer, var_names[i], _array(group[str(i)]), f"{path}/vars/{i}")
    return layers


def _name_by_class(key: str) -> str | None:
    """``depthwise_conv2d_4`` -> ``conv_dw_5``: Keras numbers layers of each class in model order."""
    m = re.fullmatch(r"([a-z0-9_]+?)(?:_(\d+))?", key)
    if not m or m.group(1) not in _BY_CLASS:
        return None
    k = int(m.group(2) or 0)
    order = _BY_CLASS[m.group(1)]
    return order[k] if k < len(order) else None


# --- model config hints: the input size -------------------------------------------------------

def _hints_from_config(config: Any) -> dict[str, Any]:
    """Model name and square input size from a Keras model config (JSON), where recorded."""
    hints: dict[str, Any] = {}
    if not isinstance(config, dict):
        return hints
    body = config.get("config", {})
    if isinstance(body, dict):
        if isinstance(body.get("name"), str):
            hints["model_name"] = body["name"]
        for layer in body.get("layers", []) or []:
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer":
                cfg = layer.get("config", {})
                shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                size = _square_size(shape)
                if size is not None:
                    hints["input_size"] = size
                break
    return hints


def _square_size(shape: Any) -> int | None:
    """H for a ``[None, H, H, C]`` (or ``[None, C, H, H]``) input shape, else None."""
    if not isinstance(shape, list) or len(shape) != 4:
        return None
    dims = shape[1:]
    if not all(isinstance(d, int) for d in dims):
        return None
    if dims[0] == dims[1]:
        return dims[0]
    if dims[1] == dims[2]:
        return dims[1]
    return None


def _resolution(explicit: int | None, hints: dict[str, Any]) -> tuple[int, str]:
    """Input size and where it came from: the caller, the saved input shape, the model name, 224."""
    if explicit is not None:
        return explicit, "argument"
    if hints.get("input_size", 0) >= 32:
        return int(hints["input_size"]), "model_config"
    m = _MODEL_NAME.match(hints.get("model_name") or "")
    if m and int(m.group(2)) >= 32:
        return int(m.group(2)), "model_name"
    return KERAS_DEFAULT_RESOLUTION, "default"


# --- opening files ----------------------------------------------------------------------------

@contextmanager
def _open(path: Path, h5py: Any) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """``(h5 file, container, model config hints)`` for a .h5 / .weights.h5 / .keras file."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
            if "model.weights.h5" not in members:
                raise _FormatError("is a zip archive without model.weights.h5; not a Keras .keras "
                                   "model (sharded .keras weights are not supported)")
            hints: dict[str, Any] = {}
            if "config.json" in members:
                try:
                    hints = _hints_from_config(json.loads(z.read("config.json")))
                except ValueError:
                    hints = {}
            data = z.read("model.weights.h5")
        with h5py.File(io.BytesIO(data), "r") as f:
            yield f, "keras-zip", hints
        return
    with h5py.File(path, "r") as f:
        yield f, "h5", {}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _read_file(path: Path, name: str) -> tuple[Layers, dict[str, Any]]:
    """Every weighted layer in the file, plus facts about its layout; only ValueErrors escape."""
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{name}: reading Keras files needs h5py; install it (pip install h5py)") from None
    try:
        with _open(path, h5py) as (f, container, hints):
            facts: dict[str, Any] = {"container": container}
            if "model_weights" in f and "model_config" in f.attrs:  # legacy full-model save
                try:
                    hints = _hints_from_config(json.loads(_strings(f.attrs["model_config"])[0]))
                except ValueError:
                    hints = {}
                root, facts["full_model"] = f["model_weights"], True
            else:
                root, facts["full_model"] = f, container == "keras-zip"
            if "layers" in root or "_layer_checkpoint_dependencies" in root:
                facts["keras_format"] = "weights.h5"
                if "vars" in root and "name" in root["vars"].attrs:
                    hints.setdefault("model_name", _strings(root["vars"].attrs["name"])[0])
                layers = _read_weights_h5(root)
            elif "layer_names" in root.attrs or any(
                    "weight_names" in root[k].attrs for k in root if _is_group(root[k])):
                facts["keras_format"] = "h5-legacy"
                for attr in ("keras_version", "backend"):
                    if attr in root.attrs:
                        facts[attr] = _strings(root.attrs[attr])[0]
                layers = _read_legacy(root)
            else:
                raise _FormatError("is an HDF5 file but not a Keras weights file (no 'layer_names' "
                                   "attribute or 'layers' group); expected weights saved from "
                                   "keras.applications.MobileNet")
            facts.update(hints)
            return layers, facts
    except _FormatError as e:
        raise ValueError(f"{name}: {e}") from None
    except zipfile.BadZipFile as e:
        raise ValueError(f"{name}: truncated or corrupt .keras archive ({_one_line(e)})") from None
    except (OSError, KeyError, RuntimeError, ValueError) as e:  # h5py's ways of failing to read
        if "signature" in str(e):
            raise ValueError(f"{name}: not an HDF5 file; expected Keras MobileNet weights "
                             "(.h5, .weights.h5 or .keras)") from None
        raise ValueError(f"{name}: truncated or corrupt HDF5 file ({_one_line(e)})") from None


# --- checking and converting ------------------------------------------------------------------

def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def _infer_alpha(stem: int, outs: list[int]) -> float | None:
    """The width multiplier Keras was built with, from each layer's ``int(c·α)`` filter count.

    Every count bounds α to ``[n/c, (n+1)/c)``; the simplest decimal in the intersection is
    the α a person typed (exact for the published 0.25 / 0.5 / 0.75 / 1.0). None if the counts
    disagree, i.e. no single α built this network.
    """
    counts = [stem] + outs
    lo = max(Fraction(n, c) for n, c in zip(counts, _BASE_CHANNELS))
    hi = min(Fraction(n + 1, c) for n, c in zip(counts, _BASE_CHANNELS))
    if lo >= hi or lo <= 0:
        return None
    for digits in range(7):
        step = Fraction(1, 10**digits)
        candidate = math.ceil(lo / step) * step
        if candidate < hi and all(int(c * float(candidate)) == n
                                  for n, c in zip(counts, _BASE_CHANNELS)):
            return float(candidate)
    return float(lo)  # n/c with c a power of two: exact in floating point


def _kernel(layers: Layers, layer: str) -> np.ndarray:
    k = layers[layer].get("kernel")
    if k is None:
        raise _FormatError(f"layer {layer} has no kernel")
    if k.ndim != 4:
        raise _FormatError(f"{layer} kernel has shape {_fmt(k.shape)}; expected a 4-d conv kernel")
    return k


def _channels(layers: Layers) -> tuple[float, int, list[int]]:
    """``(α, in_chans, channels of rows 0..13)``, or a message naming the first layer that is off."""
    stem_kernel = _kernel(layers, "conv1")
    in_chans, stem = int(stem_kernel.shape[2]), int(stem_kernel.shape[3])
    outs = [int(_kernel(layers, f"conv_pw_{i}").shape[3]) for i in range(1, _NUM_BLOCKS + 1)]
    alpha = _infer_alpha(stem, outs)
    if alpha is not None:
        return alpha, in_chans, [stem] + outs
    a0 = stem / _BASE_CHANNELS[0]  # the brief rule: α from conv1's 32·α filters
    for i in range(1, _NUM_BLOCKS + 1):
        want = int(_BASE_CHANNELS[i] * a0)
        if outs[i - 1] != want:
            actual = _kernel(layers, f"conv_pw_{i}").shape
            expected = (1, 1, int(actual[2]), want)
            raise _FormatError(f"conv_pw_{i} kernel has shape {_fmt(actual)}, expected "
                               f"{_fmt(expected)} for α={a0:g} (from conv1's {stem} filters)")
    raise _FormatError(f"layer widths {[stem] + outs} do not follow one width multiplier α")


def _expected_shapes(in_chans: int, ch: list[int], num_classes: int) -> dict[tuple[str, str], tuple[int, ...]]:
    shapes: dict[tuple[str, str], tuple[int, ...]] = {("conv1", "kernel"): (3, 3, in_chans, ch[0])}
    shapes.update({("conv1_bn", v): (ch[0],) for v in _BN_VARS})
    for i in range(1, _NUM_BLOCKS + 1):
        cin, cout = ch[i - 1], ch[i]
        shapes[(f"conv_dw_{i}", "kernel")] = (3, 3, cin, 1)
        shapes.update({(f"conv_dw_{i}_bn", v): (cin,) for v in _BN_VARS})
        shapes[(f"conv_pw_{i}", "kernel")] = (1, 1, cin, cout)
        shapes.update({(f"conv_pw_{i}_bn", v): (cout,) for v in _BN_VARS})
    if num_classes:
        shapes[(_HEAD, "kernel")] = (1, 1, ch[-1], num_classes)
        shapes[(_HEAD, "bias")] = (num_classes,)
    return shapes


def _check_layers(layers: Layers) -> None:
    """All of MobileNet's layers are there, with the right variables, and nothing else."""
    present = [n for n in _BODY_NAMES if n in layers]
    if not present:
        found = ", ".join(sorted(layers)[:5]) or "none"
        raise _FormatError(f"not a Keras MobileNet V1 weights file: no layer named conv1, conv_dw_1, ... "
                           f"(found layers: {found})")
    missing = [n for n in _BODY_NAMES if n not in layers]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _FormatError(f"not a Keras MobileNet V1 weights file: missing layer {missing[0]}{more}")
    extra = sorted(set(layers) - set(_BODY_NAMES) - {_HEAD})
    if extra:
        raise _FormatError(f"has layer(s) {', '.join(extra[:5])} that keras.applications.MobileNet does "
                           "not have (a custom head?); only plain MobileNet V1 weights can be converted")
    for layer, vars_ in layers.items():
        want = _required_vars(layer)
        if set(vars_) != want:
            if want - set(vars_):
                raise _FormatError(f"layer {layer} has no {sorted(want - set(vars_))[0]}")
            raise _FormatError(f"layer {layer} has unexpected weight(s) {', '.join(sorted(set(vars_) - want))}"
                               " (a conv with bias, or a BatchNorm without scale/center?); "
                               "not keras.applications.MobileNet")
        for var, value in vars_.items():
            if value.dtype.kind != "f":
                raise _FormatError(f"{layer} {var} has dtype {value.dtype}; expected floating point")
            if not np.isfinite(value).all():
                raise _FormatError(f"{layer} {var} contains NaN or infinite values; the file is damaged")


def _convert(layers: Layers) -> tuple[float, int, list[int], int, dict[str, torch.Tensor]]:
    """Check everything, then build the whole state dict: ``(α, in_chans, channels, classes, sd)``."""
    _check_layers(layers)
    alpha, in_chans, ch = _channels(layers)
    num_classes = int(_kernel(layers, _HEAD).shape[3]) if _HEAD in layers else 0
    for (layer, var), want in _expected_shapes(in_chans, ch, num_classes).items():
        got = tuple(int(d) for d in layers[layer][var].shape)
        if got != want:
            hint = ""
            if layer.startswith("conv_dw_") and got[:3] == want[:3]:
                hint = f" (depth_multiplier={got[3]} is not supported)"
            raise _FormatError(f"{layer} {var} has shape {_fmt(got)}, expected {_fmt(want)} "
                               f"for α={alpha:g}{hint}")

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    sd: dict[str, torch.Tensor] = {}
    for layer, kind, prefix in _BODY:
        vars_ = layers[layer]
        if kind == "bn":
            for var, torch_name in _BN_TO_TORCH.items():
                sd[f"{prefix}.{torch_name}"] = tensor(vars_[var])
            sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        elif kind == "dw":  # [kh, kw, in, 1] -> [in, 1, kh, kw]
            sd[f"{prefix}.weight"] = tensor(vars_["kernel"].transpose(2, 3, 0, 1))
        else:  # [kh, kw, in, out] -> [out, in, kh, kw]
            sd[f"{prefix}.weight"] = tensor(vars_["kernel"].transpose(3, 2, 0, 1))
    if num_classes:  # [1, 1, C, N] -> [N, C]
        sd["classifier.weight"] = tensor(layers[_HEAD]["kernel"][0, 0].T)
        sd["classifier.bias"] = tensor(layers[_HEAD]["bias"])
    return alpha, in_chans, ch, num_classes, sd


def _verify(config: MobileNetConfig, sd: dict[str, torch.Tensor], name: str) -> None:
    """The state dict fits ``MobileNetV1(config)`` exactly (built on the meta device: no memory)."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in MobileNetV1(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != want:
        diff = sorted(set(got) ^ set(want)) or [k for k in want if got[k] != want[k]]
        raise RuntimeError(f"{name}: converted Keras weights do not fit MobileNetV1({config}); "
                           f"first difference at {diff[0]} (a bug in mobilenets.weights.keras)")


def load_keras(path: str | os.PathLike[str], *, resolution: int | None = None
               ) -> tuple[MobileNetConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``keras.applications.MobileNet`` weights file: ``(config, state_dict, info)``.

    Args:
        path: a legacy ``.h5`` (``save_weights``/``save``, Keras 2 or 3, e.g. the published
            ``mobilenet_1_0_224_tf.h5``), a Keras 3 ``.weights.h5``, or a ``.keras`` archive;
            recognized by content, not by name.
        resolution: the nominal input size. Weight-only files do not record it; without this
            argument it comes from the saved model's input shape (full saves), else from
            Keras's model name ``mobilenet_<α>_<rows>`` (``.weights.h5``), else 224.

    Returns:
        The config (α from the filter counts, classes from ``conv_preds``, 0 without top;
        ReLU6, TF padding, BN ε 1e-3), a state dict that loads strictly into
        ``MobileNetV1(config)``, and an info dict (``format``, ``keras_format``,
        ``num_classes``, ``width_multiplier``, ``has_background_class``, ``resolution`` and
        ``resolution_source``, ...).

    Raises:
        ValueError: one line saying what is wrong with the file (not HDF5, truncated, not
            MobileNet V1, a layer of the wrong shape, ...); nothing is returned half-read.
    """
    name = str(path)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name}: no such file")
    layers, facts = _read_file(p, name)
    try:
        alpha, in_chans, ch, num_classes, sd = _convert(layers)
    except _FormatError as e:
        raise ValueError(f"{name}: {e}") from None
    res, res_source = _resolution(resolution, facts)
    config = MobileNetConfig(
        width_multiplier=alpha, resolution=res, num_classes=num_classes, activation="relu6",
        tf_padding=True, bn_eps=KERAS_BN_EPS, in_chans=in_chans,
        # Keras has no minimum depth: α < 0.25 gives layers thinner than TF-slim's 8.
        min_depth=min(8, *ch),
    )
    if any(config.depth(c) != n for c, n in zip(_BASE_CHANNELS, ch)):
        raise ValueError(f"{name}: layer widths {ch} do not follow one width multiplier α")
    _verify(config, sd, name)
    info: dict[str, Any] = {
        "format": "keras",
        "keras_format": facts["keras_format"],
        "container": facts["container"],
        "full_model": facts["full_model"],
        "num_classes": num_classes,
        "width_multiplier": alpha,
        "in_chans": in_chans,
        "has_background_class": False,
        "resolution": res,
        "resolution_source": res_source,
    }
    for key in ("model_name", "keras_version", "backend"):
        if key in facts:
            info[key] = facts[key]
    return config, sd, info
