"""ExecuTorch (``--format executorch``, ``.pte``, XNNPACK): the export is verified against PyTorch,
carries mobilenets' metadata inside the file, and runs as a model (``load_exported``, ``predict``,
``bench``); ExecuTorch stays optional (a one-line error naming the package without it)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from torch import nn

import mobilenets
from mobilenets.cli import main
from mobilenets.config import MobileNetConfig
from mobilenets.deploy import export, exported_format, load_exported, open_runtime
from mobilenets.deploy.formats import get_format
from mobilenets.deploy.formats.executorch import embed_executorch, read_pte_metadata

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None and \
    importlib.util.find_spec("executorch.runtime") is not None
needs_executorch = pytest.mark.skipif(not HAS_EXECUTORCH, reason="executorch not installed")
CLASSES = ("class0", "class1", "class2")


def _small_model() -> mobilenets.MobileNetV1:
    """α = 0.25 at 64 px, three classes, with BN statistics and a classifier that give distinct logits."""
    torch.manual_seed(0)
    model = mobilenets.mobilenet_v1(0.25, resolution=64, num_classes=len(CLASSES))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.2, 0.2)
        model.classifier.weight.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def pte(tmp_path_factory):
    """(folder, images, weights, the .pte the CLI exported, its JSON report)."""
    if not HAS_EXECUTORCH:
        pytest.skip("executorch not installed")
    root = tmp_path_factory.mktemp("executorch")
    data = make_image_folder(root / "data", {"val": 1}, classes=3, size=64, noise=60.0)
    weights = root / "run.pt"
    mobilenets.save_checkpoint(weights, _small_model(), class_names=list(CLASSES), input_size=64)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(weights), "--format", "executorch", "--out", str(root / "m.pte"), "--json"])
    assert code == 0
    images = sorted(str(p) for p in (data / "val").rglob("*.png"))
    return root, images, weights, root / "m.pte", json.loads(out.getvalue())


@needs_executorch
def test_executorch_export_is_verified_with_its_metadata_inside(pte):
    root, _, weights, path, report = pte
    assert report["format"] == "executorch" and report["files"] == [str(path)] and report["batch"] == 1
    assert report["runtime"].startswith("executorch ") and "XNNPACK" in report["runtime"]
    assert report["max_abs_diff"] <= report["tolerance"] and report["top1_agreement"] == 1.0
    assert report["size_bytes"] == path.stat().st_size
    assert sorted(p.name for p in root.iterdir()) == ["data", "m.pte", "run.pt"]  # no sidecar, no temporaries
    assert exported_format(path) == "executorch" and exported_format(weights) is None
    meta = json.loads(read_pte_metadata(str(path)))
    assert meta["config"] == mobilenets.load_pretrained(weights).config.to_dict()
    assert meta["class_names"] == list(CLASSES) and meta["input_size"] == 64 and meta["int8"] is False


@needs_executorch
def test_executorch_file_runs_as_the_model(pte, capsys):
    _, images, weights, path, _ = pte
    model = load_exported(path)
    assert model.format == "executorch" and model.runtime.startswith("executorch ")
    assert model.pretrained_cfg.class_names == list(CLASSES) and model.resolution == 64
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        ref = mobilenets.load_pretrained(weights)(x)
    got = model(x)  # three images through a batch-1 file
    tol = get_format("executorch").verify.tolerance * max(1.0, float(ref.abs().max()))
    assert got.shape == ref.shape and float((got - ref).abs().max()) <= tol

    assert main(["predict", *images, "--weights", str(weights), "--json", "--top", "2"]) == 0
    ours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", *images, "--weights", str(path), "--json", "--top", "2"]) == 0
    theirs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(theirs) == len(images) == 3
    assert [[t["label"] for t in r["top"]] for r in theirs] == [[t["label"] for t in r["top"]] for r in ours]


@needs_executorch
def test_executorch_metadata_is_replaced_not_duplicated(pte, tmp_path):
    path = tmp_path / "copy.pte"
    shutil.copy(pte[3], path)
    before = open_runtime(pte[3], "executorch").run_all(np.ones((1, 3, 64, 64), np.float32))
    embed_executorch(str(path), '{"first": 1}')
    embed_executorch(str(path), '{"second": 2}')
    assert read_pte_metadata(str(path)) == '{"second": 2}'
    from executorch.exir._serialize._program import deserialize_pte_binary

    named = deserialize_pte_binary(path.read_bytes()).named_data.pte_data
    assert sum(key == "mobilenets" for key in named) == 1 and len(named) > 1  # XNNPACK's weights kept
    after = open_runtime(path, "executorch").run_all(np.ones((1, 3, 64, 64), np.float32))
    assert np.array_equal(before, after)


@needs_executorch
@pytest.mark.slow  # a second export (ExecuTorch's lowering passes: ~10-15 s even for this model)
def test_bench_runs_executorch():
    from mobilenets.deploy.bench import make_runner

    fn = make_runner(MobileNetConfig(width_multiplier=0.25, resolution=32, num_classes=7), "executorch", threads=1)
    assert fn().shape == (1, 7)


def test_executorch_without_the_package_is_one_line(monkeypatch, tmp_path):
    for name in ("executorch.exir", "executorch.runtime", "executorch.extension.pybindings",
                 "executorch.extension.pybindings._C", "executorch.extension.pybindings.portable_lib"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    out = tmp_path / "m.pte"
    with pytest.raises(ValueError, match=r"needs the executorch package: pip install executorch$") as e:
        export(_small_model(), "executorch", out)
    assert "\n" not in str(e.value) and not out.exists() and os.listdir(tmp_path) == []
    (tmp_path / "x.pte").write_bytes(b"\0\0\0\0ET12")
    with pytest.raises(ValueError, match="running ExecuTorch .* pip install executorch"):
        open_runtime(tmp_path / "x.pte", "executorch")


def test_executorch_suffix_and_batch_are_checked(tmp_path, capsys):
    assert main(["export", "unused.pt", "--format", "executorch", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert ".onnx is for onnx files, but this export is executorch; give a .pte path" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="executorch exports have a static batch"):
        export(_small_model(), "executorch", tmp_path / "m.pte", batch="dynamic")
    assert os.listdir(tmp_path) == []


@needs_executorch
def test_mobilenets_imports_and_reads_pte_metadata_without_executorch(pte):
    code = ("import sys; sys.modules['executorch'] = None\n"
            "import mobilenets, mobilenets.cli, mobilenets.deploy as d\n"
            "from mobilenets.deploy.formats.executorch import read_pte_metadata\n"
            "assert 'executorch' in d.FORMATS and not d.runtime_available('executorch')\n"
            f"print(d.exported_format({str(pte[3])!r}), read_pte_metadata({str(pte[3])!r})[:1])\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["executorch", "{"]


@needs_executorch
def test_running_a_pte_does_not_import_the_exporter(pte):
    """Opening a .pte loads ExecuTorch's runtime extension only: through ``executorch.runtime`` it
    would first import the exporter (``executorch.exir``, seconds) for a warning helper."""
    code = ("import sys, numpy as np\n"
            "from mobilenets.deploy import open_runtime\n"
            f"r = open_runtime({str(pte[3])!r}, 'executorch', threads=1)\n"
            "x = np.zeros((r.batch or 1, 3, 64, 64), np.float32)\n"
            "print(r(x).shape[1], any(m.startswith('executorch.exir') for m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(CLASSES)), "False"]
