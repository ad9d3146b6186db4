"""A new user's bad inputs, across every subcommand and the Python API: each gets exit status 2
(a ``ValueError`` from Python) with exactly one line on stderr, no traceback, and nothing left
behind where the output would have gone.

The CLI cases run in-process (``mobilenets.cli.main``) in an empty working folder, so that any
file a failed command left there is seen; two run as real subprocesses. The inputs are tiny
synthetic files (PIL images, α = 0.25 models) made once for the module.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import mobilenets
from mobilenets._utils import atomic_write, error_line, os_error_message
from mobilenets.cli import main

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
NEEDS_ORT = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The inputs every case reads: images, folders, weights files; none is ever written to."""
    w = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(w / "img.png")
    (w / "empty").mkdir()
    (w / "outfile").write_text("a file, not a folder\n")
    (w / "garbage.onnx").write_bytes(b"not an onnx model")
    (w / "bad_calib").mkdir()
    (w / "bad_calib" / "broken.png").write_bytes(b"not an image")
    (w / "plain").mkdir()  # images, but none named by an ImageNet WordNet id
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(w / "plain" / "x.png")
    for split in ("train", "val"):
        for c in ("a", "b"):
            (w / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(w / "data" / split / c / f"{i}.png")
    torch.manual_seed(0)
    mobilenets.save_checkpoint(w / "w.pt", mobilenets.mobilenet_v1(0.25, 10, resolution=64))
    mobilenets.save_checkpoint(w / "emb.pt", mobilenets.mobilenet_v1(0.25, 0, resolution=64))
    return w


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# (id, argv with {w} for the inputs' folder, a fragment of the one error line); outputs go to the
# (empty) working folder or under {w}/outfile, which is a file.
CLI_CASES = [
    ("summary-width", ["summary", "--width", "0"], "width multiplier α must be a number > 0"),
    ("summary-resolution", ["summary", "--resolution", "16"], "resolution must be at least 32"),
    ("summary-misspelled", ["summary", "--widht", "0.5"], "(see 'mobilenets summary --help')"),
    ("table-option", ["table", "--table", "9"], "unrecognized arguments: --table 9 (see 'mobilenets table --help')"),
    ("list-models-extra", ["list-models", "extra"], "unrecognized arguments: extra"),
    ("predict-missing-weights", ["predict", "{w}/img.png", "--weights", "{w}/nope.pt"], "no such weights file"),
    ("predict-empty-dir", ["predict", "{w}/empty", "--weights", "{w}/w.pt"], "no images found"),
    ("predict-top-0", ["predict", "{w}/img.png", "--weights", "{w}/w.pt", "--top", "0"], "--top must be an integer ≥ 1"),
    ("predict-batch-0", ["predict", "{w}/img.png", "--weights", "{w}/w.pt", "--batch-size", "0"],
     "--batch-size must be an integer ≥ 1"),
    ("predict-device-tpu", ["predict", "{w}/img.png", "--weights", "{w}/w.pt", "--device", "tpu"],
     "argument --device: invalid choice: 'tpu'"),
    pytest.param("predict-device-cuda", ["predict", "{w}/img.png", "--weights", "{w}/w.pt", "--device", "cuda"],
                 "no CUDA GPU is available", marks=NO_GPU),
    ("predict-image-as-weights", ["predict", "{w}/img.png", "--weights", "{w}/img.png"], "not a weights file"),
    pytest.param("predict-garbage-onnx", ["predict", "{w}/img.png", "--weights", "{w}/garbage.onnx"],
                 "not an ONNX model", marks=NEEDS_ORT),
    ("evaluate-nothing", ["evaluate"], "give the data folder and --weights FILE"),
    ("evaluate-device-tpu", ["evaluate", "{w}/plain", "--weights", "{w}/w.pt", "--device", "tpu"],
     "invalid choice: 'tpu'"),
    pytest.param("evaluate-device-cuda", ["evaluate", "{w}/plain", "--weights", "{w}/w.pt", "--device", "cuda:0"],
                 "no CUDA GPU is available", marks=NO_GPU),
    ("evaluate-batch-0", ["evaluate", "{w}/plain", "--weights", "{w}/w.pt", "--batch-size", "0"],
     "--batch-size must be an integer ≥ 1"),
    ("evaluate-file-as-data", ["evaluate", "{w}/img.png", "--weights", "{w}/w.pt", "--no-progress"],
     "not a directory"),
    ("evaluate-no-wnid", ["evaluate", "{w}/plain", "--weights", "{w}/w.pt", "--no-progress"],
     "no image is named by an ImageNet WordNet id"),
    ("evaluate-no-classifier", ["evaluate", "{w}/plain", "--weights", "{w}/emb.pt", "--no-progress"],
     "has no classifier"),
    ("detect-classifier", ["detect", "{w}/img.png", "--weights", "{w}/w.pt"], "not a detector"),
    ("detect-score", ["detect", "{w}/img.png", "--weights", "{w}/w.pt", "--score", "1.5"],
     "--score must be a number ≥ 0 and < 1"),
    ("train-no-out", ["train", "--data", "{w}/data"], "the following arguments are required: --out"),
    ("train-misspelled", ["train", "--data", "{w}/data", "--out", "run", "--epohcs", "1"],
     "unrecognized arguments: --epohcs 1 (see 'mobilenets train --help')"),
    ("train-out-under-a-file", ["train", "--data", "{w}/data", "--out", "{w}/outfile/run"],
     "cannot be written: {w}/outfile is a file, not a folder"),
    ("train-out-is-a-file", ["train", "--data", "{w}/data", "--out", "{w}/outfile"], "is a file; give a folder"),
    ("train-missing-data", ["train", "--data", "nowhere", "--out", "run"], "nowhere: no such file or folder"),
    ("train-device-tpu", ["train", "--data", "{w}/data", "--out", "run", "--device", "tpu"], "invalid choice: 'tpu'"),
    pytest.param("train-device-cuda", ["train", "--data", "{w}/data", "--out", "run", "--device", "cuda"],
                 "no CUDA GPU", marks=NO_GPU),
    ("train-threads-0", ["train", "--data", "{w}/data", "--out", "run", "--threads", "0"],
     "--threads must be an integer ≥ 1"),
    ("train-batch-0", ["train", "--data", "{w}/data", "--out", "run", "--batch-size", "0"],
     "--batch-size must be an integer ≥ 1"),
    ("train-lr", ["train", "--data", "{w}/data", "--out", "run", "--lr", "-1"], "--lr must be a number > 0"),
    ("train-batchnorm-1x1", ["train", "--data", "{w}/data", "--out", "run", "--width", "0.25", "--batch-size", "1",
                             "--no-cifar-stem", "--no-progress"], "ends in a 1×1 map"),
    ("experiment-table", ["experiment", "table9", "--data", "{w}/data", "--out", "x"], "invalid choice: 'table9'"),
    ("experiment-out-under-a-file", ["experiment", "table6", "--data", "{w}/data", "--out", "{w}/outfile/x"],
     "{w}/outfile is a file, not a folder"),
    ("experiment-widths-for-table6", ["experiment", "table6", "--data", "{w}/data", "--out", "x", "--widths", "0.5"],
     "--widths is for the distillation tables (table12, table14, kd); table6 trains the paper's models of that table"),
    ("experiment-teacher-for-table13", ["experiment", "table13", "--data", "{w}/data", "--out", "x", "--teacher",
                                        "t.tflite", "--resolutions", "128"], "--teacher and --resolutions are for"),
    pytest.param("experiment-device-cuda", ["experiment", "table6", "--data", "{w}/data", "--out", "x", "--device",
                                            "cuda"], "no CUDA GPU", marks=NO_GPU),
    ("export-onnx-as-xml", ["export", "{w}/w.pt", "--format", "onnx", "--out", "m.xml"],
     "m.xml: .xml is for openvino files, but this export is onnx; give a .onnx path"),
    ("export-openvino-as-onnx", ["export", "{w}/w.pt", "--format", "openvino", "--out", "m.onnx"], "give a .xml path"),
    ("export-tflite-as-onnx", ["export", "{w}/w.pt", "--format", "tflite", "--out", "m.onnx"],
     ".onnx is for onnx files, but this export is tflite"),
    ("export-unknown-suffix", ["export", "{w}/w.pt", "--out", "m.caffemodel"], "give --format"),
    ("export-out-under-a-file", ["export", "{w}/w.pt", "--out", "{w}/outfile/m.tflite"],
     "{w}/outfile/m.tflite: cannot be written: {w}/outfile is a file, not a folder"),
    ("export-out-is-a-dir", ["export", "{w}/w.pt", "--out", "{w}/empty", "--format", "tflite"], "is a directory"),
    ("export-calibration-empty", ["export", "{w}/w.pt", "--out", "m.tflite", "--int8", "--calibration", "{w}/empty"],
     "no images found for calibration"),
    ("export-calibration-unreadable", ["export", "{w}/w.pt", "--out", "m.tflite", "--int8", "--calibration",
                                       "{w}/bad_calib"], "none of the 1 calibration images could be read"),
    ("bench-width", ["bench", "--widths", "0"], "width multiplier α must be a number > 0"),
    ("bench-device-tpu", ["bench", "--device", "tpu"], "invalid choice: 'tpu'"),
    ("bench-threads-0", ["bench", "--threads", "0"], "--threads must be an integer ≥ 1"),
    ("select-latency", ["select", "--max-latency-ms", "0"], "--max-latency-ms must be a number > 0"),
    ("select-device-tpu", ["select", "--max-latency-ms", "5", "--device", "tpu"], "invalid choice: 'tpu'"),
    ("select-params", ["select", "--max-latency-ms", "5", "--max-params", "0M"], "--max-params must be a number > 0"),
    ("env-option", ["env", "--frobnicate"], "unrecognized arguments: --frobnicate (see 'mobilenets env --help')"),
    ("no-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
]


def _case_params(cases):
    out = []
    for case in cases:
        if hasattr(case, "marks"):  # a pytest.param with marks: its id is its first value
            name, *values = case.values
            out.append(pytest.param(*values, id=name, marks=case.marks))
        else:
            out.append(pytest.param(*case[1:], id=case[0]))
    return out


def _command(case) -> str:
    return (case.values if hasattr(case, "marks") else case)[1][0]


def test_the_table_covers_every_subcommand():
    import argparse

    from mobilenets.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    commands = {_command(c) for c in CLI_CASES}
    assert set(subcommands) - {"distill"} <= commands, set(subcommands) - commands  # distill: its own tests
    assert len(CLI_CASES) + len(API_CASES) >= 30


@pytest.mark.parametrize("argv, fragment", _case_params(CLI_CASES))
def test_bad_cli_input_is_one_line_exit_2_and_leaves_nothing(world, tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(world)
    code = main([a.format(w=world) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("mobilenets: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert out == ""  # nothing half-done on stdout either
    assert fragment.format(w=world) in err, err
    assert "Errno" not in err and ".tmp" not in err  # no raw OS text, no temporary names
    assert os.listdir(tmp_path) == [] and _snapshot(world) == before  # nothing written, nothing changed


# ----------------------------------------------------------------------------- the Python API

def _model(**kw):
    torch.manual_seed(0)
    return mobilenets.mobilenet_v1(0.25, kw.pop("num_classes", 10), resolution=64, **kw).eval()


API_CASES = [
    ("load_pretrained-None", lambda w: mobilenets.load_pretrained(None), "give the weights as a file path"),
    ("load_pretrained-missing", lambda w: mobilenets.load_pretrained(w / "nope.pt"), "no such weights file"),
    ("load_pretrained-image", lambda w: mobilenets.load_pretrained(w / "img.png"), "not a weights file"),
    ("load_pretrained-onnx", lambda w: mobilenets.load_pretrained(w / "garbage.onnx"), "load_exported"),
    ("model-1-channel", lambda w: _model()(torch.zeros(1, 1, 64, 64)), "takes 3-channel images, got 1 channels"),
    ("model-3d", lambda w: _model()(torch.zeros(3, 64, 64)), "takes a batch of images (N, 3, H, W), got a 3-D"),
    ("model-uint8", lambda w: _model()(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), "takes float images"),
    ("model-numpy", lambda w: _model()(np.zeros((1, 3, 64, 64), np.float32)), "got ndarray"),
    ("model-train-1x1", lambda w: _model().train()(torch.zeros(1, 3, 32, 32)), "ends in a 1×1 map"),
    ("mobilenet_v1-width", lambda w: mobilenets.mobilenet_v1("a"), "width multiplier α must be a number > 0"),
    ("create_model-name", lambda w: mobilenets.create_model("mobilenet_v7"), "unknown model name"),
    ("Classifier-None", lambda w: mobilenets.Classifier(None), "Classifier needs a MobileNetV1"),
    ("Classifier-no-classifier", lambda w: mobilenets.Classifier(_model(num_classes=0)).predict([w / "img.png"]),
     "has no classifier"),
    ("Classifier-batch-0", lambda w: mobilenets.Classifier(_model()).predict([w / "img.png"], batch_size=0),
     "batch_size must be an integer ≥ 1"),
    ("export-None", lambda w: mobilenets.export(None, "onnx", w / "x.onnx"), "needs a model or a weights file"),
    ("export-suffix", lambda w: mobilenets.export(_model(), "onnx", w / "m.xml"), ".xml is for openvino files"),
    ("export-format", lambda w: mobilenets.export(_model(), "caffe", w / "m.onnx"), "unknown export format"),
    ("load_exported-weights", lambda w: __import__("mobilenets.deploy").deploy.load_exported(w / "w.pt"),
     "not a file written by `mobilenets export`"),
    ("fuse-None", lambda w: mobilenets.fuse(None), "fuse() needs a torch.nn.Module"),
]


@pytest.mark.parametrize("call, fragment", _case_params(API_CASES))
def test_python_api_misuse_is_a_one_line_value_error(world, call, fragment):
    before = _snapshot(world)
    with pytest.raises(ValueError) as info:
        result = call(world)
        if hasattr(result, "__next__"):
            next(result)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    assert _snapshot(world) == before


# ----------------------------------------------------------------------------- one-line reasons

@settings(max_examples=200, deadline=None)
@given(message=st.text(), limit=st.integers(1, 300), with_type=st.booleans())
def test_error_line_is_one_non_empty_line_within_its_limit(message, limit, with_type):
    line = error_line(RuntimeError(message), limit, with_type=with_type)
    assert line and len(line) <= limit and not line.splitlines()[1:]
    assert line.strip() == line or len(line) == limit  # trimmed, unless cut at the limit


def test_a_loader_error_with_an_empty_message_is_still_one_line(tmp_path, monkeypatch):
    """``str(e).splitlines()[0]`` of a message-less exception was an IndexError: a traceback where
    the user was owed one line."""
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, path)  # a PyTorch file by its content; torch.load then fails, saying nothing

    def load(*args, **kwargs):
        raise RuntimeError()
    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(ValueError) as info:
        mobilenets.load_pretrained(path)
    assert str(info.value) == f"{path}: truncated or corrupt PyTorch file (RuntimeError)"


# ----------------------------------------------------------------------------- unwritable outputs

def test_os_errors_name_the_users_path_and_the_reason(tmp_path):
    (tmp_path / "outfile").write_text("x")
    e = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "outfile" / "tb"))
    assert os_error_message(e) == f"{tmp_path / 'outfile' / 'tb'}: cannot be used: {tmp_path / 'outfile'} is a file, not a folder"
    e = PermissionError(errno.EPERM, "Operation not permitted", str(tmp_path / ".m.onnx.e3jzzk18"))
    message = os_error_message(e, writing=True)
    assert message.startswith(f"{tmp_path / 'm.onnx'}: cannot be written: permission denied") and "e3jzzk18" not in message
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".m.onnx.k2j4h1x9" / "m.onnx"))
    assert os_error_message(e, writing=True) == f"{tmp_path / 'm.onnx'}: cannot be written: no space left on the device"


def test_atomic_write_names_the_final_path_not_the_temporary_one(tmp_path):
    def refuse(tmp):
        raise PermissionError(errno.EPERM, "Operation not permitted", tmp)

    with pytest.raises(PermissionError) as info:
        atomic_write(tmp_path / "m.json", refuse)
    assert str(info.value).startswith(f"{tmp_path / 'm.json'}: cannot be written: permission denied")
    assert os.listdir(tmp_path) == []


def test_unwritable_export_folder_is_one_line_naming_the_file(world, tmp_path, monkeypatch, capsys):
    """As root (CI containers) no folder is unwritable, so the refusal is what the OS would say."""
    import tempfile

    def refuse(*args, dir=None, prefix="", **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}e3jzzk18"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    out = tmp_path / "sub" / "m.tflite"
    assert main(["export", str(world / "w.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"mobilenets: error: {out}: cannot be written: permission denied (no permission to write in " \
                  f"{tmp_path / 'sub'})\n"
    assert os.listdir(tmp_path) == []  # the folder it made for the file is gone again


# ----------------------------------------------------------------------------- as a user runs them

@pytest.mark.parametrize("argv, fragment", [
    (["export", "{w}/w.pt", "--format", "onnx", "--out", "m.xml"], ".xml is for openvino files"),
    (["train", "--data", "{w}/data", "--out", "{w}/outfile/run"], "is a file, not a folder"),
])
def test_real_subprocess(world, tmp_path, argv, fragment):
    r = subprocess.run([sys.executable, "-m", "mobilenets", *[a.format(w=world) for a in argv]], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []
