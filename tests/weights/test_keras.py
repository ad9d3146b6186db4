"""Keras MobileNet weight files load into our model and give Keras's outputs.

Keras (3, on its PyTorch backend: no TensorFlow) builds ``keras.applications.MobileNet``
with random weights and random BatchNorm statistics, writes them in each format it can,
and the model we build from the file must reproduce Keras's softmax on random images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"  # must precede the first import of keras
keras = pytest.importorskip("keras", minversion="3.0",
                            reason="the Keras tests need Keras 3 (pip install keras h5py)")
h5py = pytest.importorskip("h5py", reason="the Keras tests need h5py (pip install h5py)")
if keras.backend.backend() != "torch":
    pytest.skip("keras was already imported with another backend; these tests need KERAS_BACKEND=torch",
                allow_module_level=True)

from mobilenets.models import MobileNetV1  # noqa: E402
from mobilenets.weights.keras import load_keras  # noqa: E402

# Keras 3's torch backend trips numpy 2's __array__(copy=...) deprecation thousands of times.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

RES = 128  # a multiple of 32, where Keras's padding equals TensorFlow's "SAME"
ATOL = 1e-5


_MODELS: dict[tuple[float, bool], Any] = {}


def keras_mobilenet(alpha: float, include_top: bool = True) -> Any:
    """One Keras MobileNet per (α, top), shared by the tests (building one takes a second)."""
    key = (alpha, include_top)
    if key not in _MODELS:
        _MODELS[key] = _build_keras_mobilenet(alpha, include_top)
    return _MODELS[key]


def _build_keras_mobilenet(alpha: float, include_top: bool, res: int = RES) -> Any:
    """A Keras MobileNet whose BatchNorms are far from identity and whose softmax is peaked.

    Purely random BN statistics saturate ReLU6 and make the output independent of the input,
    which would hide padding errors. So the moving statistics are first set to those of the
    activations each BN actually sees (one training-mode pass with momentum 0), then perturbed.
    """
    seed = int(alpha * 100) + 7 * include_top
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    kwargs = {} if include_top else {"include_top": False, "pooling": "avg"}
    model = keras.applications.MobileNet(weights=None, alpha=alpha, input_shape=(res, res, 3), **kwargs)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        n = bn.get_weights()[0].shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0.5, 0.5, n), np.zeros(n), np.ones(n)])
        bn.momentum = 0.0  # the moving statistics become this batch's
    model(images(res, n=4, seed=99), training=True)
    for bn in bns:
        gamma, beta, mean, var = bn.get_weights()
        n = mean.shape[0]
        bn.set_weights([gamma, beta, mean + rng.normal(0.0, 0.2, n) * np.sqrt(var),
                        var * rng.uniform(0.5, 1.5, n)])
    if include_top:
        head = model.get_layer("conv_preds")
        kernel, bias = head.get_weights()
        head.set_weights([kernel * 4.0, rng.normal(0.0, 0.5, bias.shape)])
    return model


def images(res: int = RES, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, res, res, 3)).astype(np.float32)


def keras_out(model: Any, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


_REFERENCES: dict[tuple[float, bool], tuple[np.ndarray, np.ndarray]] = {}


def reference(alpha: float, include_top: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random images and Keras's output for them (a Keras forward pass costs about a second)."""
    key = (alpha, include_top)
    if key not in _REFERENCES:
        x = images()
        _REFERENCES[key] = x, keras_out(keras_mobilenet(alpha, include_top), x)
    return _REFERENCES[key]


def ours_out(path: Path, x: np.ndarray, **changes: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Our model from the file (strictly loaded); softmax if it has a classifier, else embeddings."""
    config, sd, info = load_keras(path)
    if changes:
        config = config.replace(**changes)
    model = MobileNetV1(config).eval()
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    if config.num_classes:
        y = torch.softmax(y, dim=1)
    return y.numpy(), info


def save_weights_h5(model: Any, path: Path) -> Path:
    model.save_weights(str(path))
    return path


def save_legacy_h5(model: Any, path: Path) -> Path:
    """``save_weights("x.h5")`` as Keras 2 wrote it; Keras 3 only writes it with its legacy module."""
    try:
        from keras.src.legacy.saving import legacy_h5_format
    except ImportError:
        pytest.skip("this Keras cannot write weight-only legacy .h5 files")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def as_keras2_file(src: Path, dst: Path) -> Path:
    """Rewrite a legacy .h5 with Keras 2's names, as in the published ``mobilenet_1_0_224_tf.h5``:
    ``conv_dw_1/conv_dw_1/depthwise_kernel:0``, bytes attributes, TensorFlow backend."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in fin.attrs["layer_names"]]
        fout.attrs["layer_names"] = np.array([n.encode() for n in names])
        fout.attrs["backend"] = b"tensorflow"
        fout.attrs["keras_version"] = b"2.1.2"
        for name in names:
            group = fout.create_group(name)
            weight_names = []
            for wn in fin[name].attrs["weight_names"]:
                wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                layer, var = wn.rsplit("/", 1)
                if name.startswith("conv_dw_") and var == "kernel":
                    var = "depthwise_kernel"
                new = f"{layer}/{var}:0"
                group.create_dataset(new, data=fin[name][wn][()])
                weight_names.append(new.encode())
            group.attrs["weight_names"] = np.array(weight_names, dtype="S")
    return dst


# --- outputs match Keras ----------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.25, 1.0])
@pytest.mark.parametrize("fmt", ["weights.h5", "h5-legacy"])
def test_softmax_matches_keras(alpha: float, fmt: str, tmp_path: Path) -> None:
    model = keras_mobilenet(alpha)
    save = save_weights_h5 if fmt == "weights.h5" else save_legacy_h5
    path = save(model, tmp_path / ("m.weights.h5" if fmt == "weights.h5" else "m.h5"))
    x, want = reference(alpha)
    got, info = ours_out(path, x)
    assert want.max() > 0.05  # a peaked softmax, so a small tolerance means something
    assert np.abs(want[0] - want[1]).max() > 0.01  # and one that depends on the image
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert info["format"] == "keras" and info["keras_format"] == fmt
    assert info["num_classes"] == 1000 and info["width_multiplier"] == alpha
    assert info["has_background_class"] is False


@pytest.mark.parametrize("fmt", ["weights.h5", "h5-legacy"])
def test_embeddings_match_keras_without_top(fmt: str, tmp_path: Path) -> None:
    model = keras_mobilenet(0.25, include_top=False)
    save = save_weights_h5 if fmt == "weights.h5" else save_legacy_h5
    path = save(model, tmp_path / ("m.weights.h5" if fmt == "weights.h5" else "m.h5"))
    x, want = reference(0.25, include_top=False)
    got, info = ours_out(path, x)
    assert got.shape == want.shape == (2, 256)
    # Unnormalized features of size ~1: float32 rounding over 27 layers is relative.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=ATOL)
    assert info["num_classes"] == 0 and info["keras_format"] == fmt


def test_keras2_published_layout(tmp_path: Path) -> None:
    """The naming of Keras 2's files (``depthwise_kernel:0``), e.g. ``mobilenet_1_0_224_tf.h5``."""
    model = keras_mobilenet(0.25)
    path = as_keras2_file(save_legacy_h5(model, tmp_path / "k3.h5"), tmp_path / "mobilenet_2_5_128_tf.h5")
    with h5py.File(path, "r") as f:
        assert "conv_dw_1/conv_dw_1/depthwise_kernel:0" in f
    x, want = reference(0.25)
    got, info = ours_out(path, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert info["keras_format"] == "h5-legacy" and info["keras_version"] == "2.1.2"


def test_weights_h5_without_layer_names(tmp_path: Path) -> None:
    """Older Keras 3 files do not name the layers in ``vars``; the class counters map them back."""
    model = keras_mobilenet(0.25)
    path = save_weights_h5(model, tmp_path / "m.weights.h5")
    with h5py.File(path, "a") as f:
        for key in f["layers"]:
            f[f"layers/{key}/vars"].attrs.pop("name", None)
        f["vars"].attrs.pop("name", None)
    x, want = reference(0.25)
    got, info = ours_out(path, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert info["resolution_source"] == "default" and info["resolution"] == 224


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_full_model_saves(suffix: str, tmp_path: Path) -> None:
    """``model.save`` (legacy .h5 or the .keras zip) also records the input size."""
    model = keras_mobilenet(0.25)
    path = tmp_path / f"m{suffix}"
    model.save(str(path))
    x, want = reference(0.25)
    got, info = ours_out(path, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert info["full_model"] is True
    assert info["resolution"] == RES and info["resolution_source"] == "model_config"


def test_config_and_resolution(tmp_path: Path) -> None:
    model = keras_mobilenet(0.25)
    legacy = save_legacy_h5(model, tmp_path / "m.h5")
    config, _, info = load_keras(legacy)
    assert (config.activation, config.tf_padding, config.bn_eps) == ("relu6", True, 1e-3)
    assert config.resolution == 224 and info["resolution_source"] == "default"
    config, _, info = load_keras(legacy, resolution=160)
    assert config.resolution == 160 and info["resolution_source"] == "argument"
    config, _, info = load_keras(save_weights_h5(model, tmp_path / "m.weights.h5"))
    assert config.resolution == RES and info["resolution_source"] == "model_name"


@pytest.mark.parametrize("change", [{"bn_eps": 1e-5}, {"tf_padding": False}, {"activation": "relu"}])
def test_the_comparison_can_fail(change: dict[str, Any], tmp_path: Path) -> None:
    """A wrong BN epsilon, padding or activation is visible at the test's tolerance."""
    model = keras_mobilenet(0.25)
    path = save_weights_h5(model, tmp_path / "m.weights.h5")
    x, want = reference(0.25)
    got, _ = ours_out(path, x, **change)
    assert np.abs(got - want).max() > 1000 * ATOL


# --- bad files: one-line ValueErrors ----------------------------------------------------------

def expect_error(path: Path, match: str) -> str:
    with pytest.raises(ValueError, match=match) as exc:
        load_keras(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_truncated_file(tmp_path: Path) -> None:
    data = save_weights_h5(keras_mobilenet(0.25), tmp_path / "m.weights.h5").read_bytes()
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(data[: len(data) // 2])
    expect_error(cut, "truncated or corrupt HDF5 file")


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not weights\n")
    expect_error(text, "not an HDF5 file")
    expect_error(tmp_path / "absent.h5", "no such file")


def test_unrelated_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 8, 8), np.float32)
        f.create_group("meta")["labels"] = np.arange(4)
    expect_error(path, "not a Keras weights file")


def test_other_keras_model(tmp_path: Path) -> None:
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    for path in (save_weights_h5(other, tmp_path / "o.weights.h5"), save_legacy_h5(other, tmp_path / "o.h5")):
        expect_error(path, "not a Keras MobileNet V1 weights file: no layer named conv1")


def test_custom_head_is_refused(tmp_path: Path) -> None:
    base = keras_mobilenet(0.25, include_top=False)
    model = keras.Model(base.input, keras.layers.Dense(5, name="my_head")(base.output))
    expect_error(save_weights_h5(model, tmp_path / "m.weights.h5"), "layer.s. my_head .*custom head")


def test_missing_layer(tmp_path: Path) -> None:
    path = save_legacy_h5(keras_mobilenet(0.25), tmp_path / "m.h5")
    with h5py.File(path, "a") as f:
        del f["conv_pw_13"]
        f.attrs["layer_names"] = np.array([n for n in f.attrs["layer_names"] if n != "conv_pw_13"],
                                          dtype=h5py.string_dtype())
    expect_error(path, "not a Keras MobileNet V1 weights file: missing layer conv_pw_13$")


def _replace_dataset(path: Path, name: str, shape: tuple[int, ...]) -> None:
    with h5py.File(path, "a") as f:
        dataset = f[name]
        parent, key = dataset.parent, name.rsplit("/", 1)[-1]
        del parent[key]
        parent[key] = np.zeros(shape, np.float32)


def test_width_mismatch_in_a_depthwise_kernel(tmp_path: Path) -> None:
    path = save_legacy_h5(keras_mobilenet(0.25), tmp_path / "m.h5")
    _replace_dataset(path, "conv_dw_5/conv_dw_5/kernel", (3, 3, 48, 1))
    expect_error(path, r"conv_dw_5 kernel has shape \(3,3,48,1\), expected \(3,3,64,1\) for α=0.25$")


def test_width_mismatch_in_a_pointwise_kernel(tmp_path: Path) -> None:
    path = save_weights_h5(keras_mobilenet(0.25), tmp_path / "m.weights.h5")
    with h5py.File(path, "r") as f:
        group = next(f[f"layers/{k}/vars"] for k in f["layers"]
                     if f[f"layers/{k}/vars"].attrs.get("name") == "conv_pw_5")
        name = f"{group.name}/0"
    _replace_dataset(path, name, (1, 1, 64, 48))
    expect_error(path, r"conv_pw_5 kernel has shape \(1,1,64,48\), expected \(1,1,64,64\) "
                       r"for α=0.25 \(from conv1's 8 filters\)$")


@pytest.mark.parametrize("name", ["m.weights.h5", "m.h5", "m.keras"])
def test_load_pretrained_recognizes_keras_files_by_content(name: str, tmp_path: Path) -> None:
    import mobilenets

    model = keras_mobilenet(0.25)
    path = tmp_path / name
    if name.endswith(".weights.h5"):
        save_weights_h5(model, path)
    else:
        model.save(str(path))
    anonymous = path.rename(tmp_path / "weights.bin")  # the name must not matter
    loaded = mobilenets.load_pretrained(anonymous)
    assert loaded.pretrained_cfg.format == "keras"
    x, want = reference(0.25)
    with torch.no_grad():
        got = torch.softmax(loaded(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()), dim=1).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
