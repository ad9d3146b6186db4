"""Exported files are models too: `predict` and `evaluate` run a file `mobilenets export` wrote in
its own runtime, with the config, preprocessing and classes read from the file's metadata, and
report what they report for the PyTorch weights. Calibration skips unreadable images."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder, need_data
from torch import nn

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import ExportedModel, exported_format, load_exported
from mobilenets.deploy.formats.tflite_writer import model_to_tflite
from mobilenets.quant import fuse

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                                reason="ai-edge-litert not installed")


def _run_like_checkpoint(path, classes=("a", "b", "c")):
    """What `mobilenets train` saves for 32-px images: small-input stem, class names, input size."""
    torch.manual_seed(0)
    model = mobilenets.MobileNetV1(mobilenets.MobileNetConfig(width_multiplier=0.25, resolution=32,
                                                              num_classes=len(classes), cifar_stem=True))
    with torch.no_grad():  # logits that differ between images, so top-1 and agreement mean something
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.2, 0.2)
        model.classifier.weight.normal_(0, 0.5)
    mobilenets.save_checkpoint(path, model.eval(), class_names=list(classes), input_size=32)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(folder, data, weights, fp32 export, int8 export and its report) — the int8 one made by the
    CLI from a calibration folder that holds an unreadable image."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("exported")
    data = make_image_folder(root / "data", {"train": 8, "val": 4}, classes=3, size=32, noise=60.0)
    (data / "train" / "class0" / "zz_broken.png").write_bytes(b"not an image")  # calibration must skip it
    weights = _run_like_checkpoint(root / "run.pt", classes=("class0", "class1", "class2"))
    fp32 = mobilenets.export(weights, "tflite", root / "fp32.tflite").path
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(weights), "--int8", "--calibration", str(data / "train"),
                     "--calibration-images", "16", "--out", str(root / "q_int8.tflite"), "--json"])
    assert code == 0
    return root, data, weights, fp32, str(root / "q_int8.tflite"), json.loads(out.getvalue())


def _json(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_int8_export_skips_an_unreadable_calibration_image(files):
    *_, int8, report = files
    assert report["calibration_images"] == 16 and "1 unreadable skipped" in report["calibration_source"]
    assert report["verify_source"] == "held-out real" and report["verify_inputs"] == 8  # 24 readable − 16
    assert exported_format(int8) == "tflite"


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_predict_and_evaluate_run_the_exported_file(files, capsys, which):
    _, data, weights, fp32, int8, _ = files
    path = fp32 if which == "fp32" else int8
    model = load_exported(path)
    assert isinstance(model, ExportedModel) and model.runtime.startswith("ai-edge-litert")
    info = model.pretrained_cfg
    assert info.class_names == ["class0", "class1", "class2"] and info.input_size == 32 and model.int8 == (which == "int8")
    assert info.preprocess == mobilenets.load_pretrained(weights).pretrained_cfg.preprocess

    images = [str(data / "val" / "class1" / "000.png"), str(data / "val" / "class2" / "001.png")]
    assert main(["predict", *images, "--weights", str(weights), "--json", "--top", "2"]) == 0
    ours = _json(capsys)
    assert main(["predict", *images, "--weights", str(path), "--json", "--top", "2"]) == 0
    theirs = _json(capsys)
    assert [set(r) for r in theirs] == [set(r) for r in ours] == [{"image", "top"}] * 2
    assert all(t["label"] in info.class_names for r in theirs for t in r["top"])

    assert main(["evaluate", str(data), "--weights", str(weights), "--json", "--no-progress"]) == 0
    (ref,) = _json(capsys)
    assert main(["evaluate", str(data), "--weights", str(path), "--json", "--no-progress"]) == 0
    (got,) = _json(capsys)
    assert set(got) == set(ref) and got["images"] == ref["images"] == 12 and got["split"] == "val"
    if which == "fp32":  # the same computation: the same answers
        assert [r["top"][0]["index"] for r in theirs] == [r["top"][0]["index"] for r in ours]
        assert got["top1"] == ref["top1"] and got["loss"] == pytest.approx(ref["loss"], abs=1e-4)


def test_a_file_without_the_metadata_or_at_another_size_is_refused_in_one_line(files, tmp_path):
    """An export by an older version (only the config in the file): its preprocessing is unknown."""
    old = tmp_path / "old.tflite"
    old.write_bytes(model_to_tflite(fuse(mobilenets.load_pretrained(files[2]))))
    assert exported_format(old) == "tflite"
    with pytest.raises(ValueError, match="without mobilenets' metadata .* export it again with `mobilenets export`"):
        load_exported(old)
    with pytest.raises(ValueError, match="input size is fixed at 32 px"):
        load_exported(files[3], resolution=64)


def test_weights_and_exports_are_told_apart(files):
    weights, fp32 = files[2], files[3]
    assert exported_format(weights) is None
    with pytest.raises(ValueError, match="written by `mobilenets export`, not weights.*load_exported"):
        mobilenets.load_pretrained(fp32)
    google = need_data("tflite", "mobilenet_v1_0.5_160_quant.tflite")
    assert exported_format(google) is None  # Google's files are weights, read into PyTorch


def test_exported_model_takes_any_batch_but_only_its_input_size(files):
    model = load_exported(files[3])
    with pytest.raises(ValueError, match=r"takes images of shape \(N, 3, 32, 32\)"):
        model(torch.zeros(1, 3, 64, 64))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        ref = mobilenets.load_pretrained(files[2])(x)
    assert torch.allclose(model(x), ref, atol=1e-4)  # five images through a batch-1 file
