"""The CLI's structure and its small usability rules: one module per command group, every
option explained in --help, misspellings and bad devices as one line with exit status 2."""

import argparse
import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import cli
from mobilenets.cli import base, main
from mobilenets.cli import train as cli_train

CLI_DIR = Path(cli.__file__).parent
GROUPS = ("model", "inference", "detect", "train", "deploy", "env")


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mobilenets") and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- structure

@pytest.mark.parametrize("group", GROUPS)
def test_command_groups_import_only_base_and_the_library(group):
    tree = ast.parse((CLI_DIR / f"{group}.py").read_text())
    relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert relative <= {"base"}, relative  # never another command module, at any depth
    assert callable(getattr(cli, group).register)


def test_every_command_is_registered_in_order():
    assert list(_subparsers(cli.build_parser())) == [
        "summary", "table", "list-models", "predict", "evaluate", "detect", "train", "experiment", "distill", "export",
        "bench", "select", "env"]


def test_every_option_and_argument_has_help():
    missing = []
    for name, sub in _subparsers(cli.build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_format_and_runtime_choices_are_the_registries():
    from mobilenets.deploy import FORMATS, RUNTIMES

    subs = _subparsers(cli.build_parser())
    choices = {a.dest: a.choices for a in subs["export"]._actions} | {
        a.dest: a.choices for a in subs["bench"]._actions}
    assert tuple(choices["format"]) == tuple(FORMATS) and tuple(choices["runtime"]) == tuple(RUNTIMES)


def test_train_options_cover_the_trainconfig_fields():
    from mobilenets.train import TrainConfig

    direct = set(cli_train._direct_fields())
    assert direct == {f.name for f in dataclasses.fields(TrainConfig)} - cli_train._NOT_DIRECT
    commands = _subparsers(cli.build_parser())
    dests = {a.dest for a in commands["train"]._actions}
    distill = {a.dest for a in commands["distill"]._actions}
    assert direct <= dests | distill, direct - dests - distill  # no TrainConfig field silently unsettable
    assert dests - {"task", "arch", "freeze_backbone", "num_classes", "json", "func"} <= distill  # distill has train's


def test_train_options_reach_the_trainconfig(tmp_path):
    args = cli.build_parser().parse_args([
        "train", "--out", str(tmp_path / "r"), "--data", "d", "--momentum", "0.5", "--warmup-epochs", "2",
        "--label-smoothing", "0.1", "--weight-decay", "0", "--activation", "relu6", "--no-progress", "--quiet"])
    cfg = cli_train.config_from_train_args(args)
    assert (cfg.momentum, cfg.warmup_epochs, cfg.label_smoothing, cfg.weight_decay) == (0.5, 2.0, 0.1, 0.0)
    assert cfg.model.activation == "relu6" and not cfg.progress and not cfg.verbose and cfg.tensorboard
    assert cfg.data == "d" and cfg.epochs is None and not cfg.resume


# ----------------------------------------------------------------------------- option types

@pytest.mark.parametrize("parse, text, message", [
    (base.width_type, "abc", "'abc' is not a number; width multiplier α must be a number > 0 (e.g. 1.0, 0.75"),
    (base.width_type, "0", "width multiplier α must be a number > 0 (e.g. 1.0, 0.75, 0.5, 0.25), got 0"),
    (base.width_type, "nan", "width multiplier α must be a number > 0"),
    (base.resolution_type, "31", "resolution must be at least 32 pixels (e.g. 224, 192, 160, 128), got 31"),
    (base.resolution_type, "big", "'big' is not an integer"),
    (base.count_type(1, "--top"), "0", "--top must be an integer ≥ 1, got 0"),
    (base.count_type(1, "--top"), "z", "'z' is not an integer; --top must be an integer ≥ 1"),
    (base.float_type("--ema", inclusive=True, below=1.0), "1", "--ema must be a number ≥ 0 and < 1, got 1"),
    (base.float_type("--lr"), "x", "'x' is not a number; --lr must be a number > 0"),
    (base.quantity_type("--max-params"), "0M", "--max-params must be a number > 0 (e.g. 4.2M or 4200000)"),
    (base.batch_type, "0", "--batch must be 'dynamic' or an integer ≥ 1, got 0"),
    (base.device_type, "tpu", "invalid choice: 'tpu'"),
])
def test_option_type_messages(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert message in str(info.value)


def test_option_types_accept():
    assert base.width_type("0.75") == 0.75 and base.resolution_type("160") == 160
    assert base.count_type(0, "--seed")("0") == 0 and base.float_type("--lr")("1e-3") == 1e-3
    assert base.quantity_type("--max-params")("4.2M") == pytest.approx(4.2e6)
    assert base.batch_type("dynamic") == "dynamic" and base.list_type(base.width_type, "--widths")("1, 0.5") == [1, 0.5]
    assert [base.device_type(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]


# ----------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv, command", [
    (["train", "--out", "r", "--frobnicate"], "train"),
    (["summary", "--frobnicate"], "summary"),
    (["bench", "--frobnicate", "x"], "bench"),
    (["evaluate", "d", "--weights", "w", "--frobnicate"], "evaluate"),
])
def test_misspelled_option_points_to_the_subcommand_help(capsys, argv, command):
    err = _one_line_error(capsys, argv)
    assert "unrecognized arguments: --frobnicate" in err and f"(see 'mobilenets {command} --help')" in err


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    mobilenets.save_checkpoint(path, mobilenets.mobilenet_v1(0.25, 1000, resolution=64))
    return path


def test_predict_on_an_empty_directory(tmp_path, tiny_weights, capsys):
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["predict", str(tmp_path / "empty"), "--weights", str(tiny_weights)])
    assert f"no images found in {tmp_path / 'empty'}" in err
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [
    ["evaluate", "DATA", "--weights", "W", "--device", "tpu"],
    ["train", "--data", "DATA", "--out", "RUN", "--device", "tpu"],
    ["experiment", "table6", "--data", "DATA", "--out", "RUN", "--device", "tpu"],
    ["bench", "--device", "tpu"],
    ["select", "--max-latency-ms", "5", "--device", "tpu"],
])
def test_unknown_device_is_one_line(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, argv)
    assert "argument --device: invalid choice: 'tpu'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("argv", [
    ["evaluate", "{data}", "--weights", "{weights}", "--device", "cuda", "--no-progress"],
    ["evaluate", "{data}", "--weights", "{weights}", "--device", "cuda:0", "--no-progress"],
    ["train", "--data", "{data}", "--out", "{out}", "--device", "cuda", "--no-progress"],
    ["bench", "--device", "cuda", "--runtime", "torch", "--widths", "0.25", "--resolutions", "64", "--out", "{out}"],
    ["select", "--max-latency-ms", "5", "--device", "cuda", "--runtime", "torch"],
])
def test_cuda_without_a_gpu_is_one_line(tmp_path, tiny_weights, capsys, argv):
    from PIL import Image

    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / "train" / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (200, 0, 0)).save(data / "train" / c / "x.png")
    argv = [a.format(data=data, weights=tiny_weights, out=tmp_path / "out") for a in argv]
    err = _one_line_error(capsys, argv)
    assert "cuda" in err and "GPU" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_still_reports_as_json(tmp_path, tiny_weights, capsys):
    from PIL import Image

    root = tmp_path / "val" / "n01440764"
    root.mkdir(parents=True)
    Image.new("RGB", (70, 70), (0, 90, 0)).save(root / "a.JPEG")
    assert main(["evaluate", str(tmp_path / "val"), "--weights", str(tiny_weights), "--json", "--no-progress",
                 "--device", "cpu", "--batch-size", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
