import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def test_summary_json(capsys):
    assert main(["summary", "--width", "0.5", "--resolution", "160", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["mult_adds"], int) and isinstance(out["params"], int)
    assert out["mult_adds"] == 76_524_800 and out["params"] == 1_331_592
    assert set(out["layers"][0]) >= {"name", "type", "output_shape", "mult_adds", "params"}
    assert sum(l["params"] for l in out["layers"]) == out["params"]


def test_summary_text_and_variants(capsys):
    assert main(["summary", "--variant", "conv", "--num-classes", "10"]) == 0
    text = capsys.readouterr().out
    assert "Conv MobileNet-224" in text and "total Mult-Adds: 4,866," in text
    assert main(["summary", "--model", "mobilenet_v1_025_128", "--no-bn"]) == 0
    assert "batchnorm" not in capsys.readouterr().out


def test_table_json(capsys):
    assert main(["table", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 25 and {r["table"] for r in rows} == set(range(2, 10)) | {13}  # 13: the detectors
    assert all(r["status"] in ("match", "erratum") for r in rows)
    r = next(r for r in rows if r["model"] == "0.50 MobileNet-160")
    assert r["paper_params"] == 1.32 and r["ours_params_printed"] == "1.32"


def test_list_models_json(capsys):
    assert main(["list-models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 16
    r = next(r for r in rows if r["name"] == "mobilenet_v1_050_160")
    assert (r["top1"], r["quant_top1"], r["mult_adds"]) == (59.1, 57.7, 76_524_800)


@pytest.mark.parametrize("args,fragment", [
    (["summary", "--width", "0"], "width multiplier α must be a number > 0"),
    (["summary", "--width", "-1"], "width multiplier α must be a number > 0"),
    (["summary", "--width", "abc"], "'abc' is not a number"),
    (["summary", "--resolution", "31"], "resolution must be at least 32"),
    (["summary", "--resolution", "big"], "'big' is not an integer"),
    (["summary", "--variant", "deep"], "invalid choice: 'deep'"),
    (["summary", "--model", "mobilenet_v7"], "unknown model name 'mobilenet_v7'"),
    (["summary", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_errors_are_one_line_exit_2(args, fragment):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("mobilenets")
    assert "Traceback" not in r.stderr


def test_help_explains_alpha_and_rho():
    r = run("summary", "--help")
    assert r.returncode == 0 and "width multiplier α" in r.stdout and "resolution ρ" in r.stdout
    r = run("--help")
    assert r.returncode == 0 and "summary" in r.stdout and "table" in r.stdout


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.25, 1000, resolution=64)
    path = tmp_path / "tiny.pt"
    mobilenets.save_checkpoint(path, m)
    return path


def test_predict_json_and_bad_image(tmp_path, tiny_weights, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (80, 60), (200, 10, 10)).save(imgs / "red.png")
    Image.new("L", (40, 70), 128).save(imgs / "gray.bmp")
    (imgs / "broken.jpg").write_text("not an image")
    assert main(["predict", str(imgs), "--weights", str(tiny_weights), "--top", "3", "--json"]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(l) for l in captured.out.splitlines()]
    assert [l["image"].rsplit("/", 1)[-1] for l in lines] == ["gray.bmp", "red.png"]
    for line in lines:
        assert len(line["top"]) == 3
        assert set(line["top"][0]) == {"index", "label", "prob"}
        assert line["top"][0]["prob"] >= line["top"][1]["prob"]
        assert line["top"][0]["label"] == mobilenets.data.imagenet_names()[line["top"][0]["index"]]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and "not an image" in err[0]


def test_evaluate_imagenet_style_folder(tmp_path, tiny_weights, capsys):
    root = tmp_path / "val"
    (root / "n01440764").mkdir(parents=True)
    Image.new("RGB", (70, 70), (0, 90, 0)).save(root / "n01440764" / "a.JPEG")
    Image.new("RGB", (70, 70), (0, 0, 90)).save(root / "n01443537_goldfish.JPEG")
    Image.new("RGB", (70, 70), (0, 0, 90)).save(root / "unknown.JPEG")
    assert main(["evaluate", str(root), "--weights", str(tiny_weights), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 2 and res["unlabelled"] == 1 and 0 <= res["top1"] <= res["top5"] <= 100
    assert main(["evaluate", str(tiny_weights), "--data", str(root), "--json", "--no-progress"]) == 0


def test_evaluate_errors(tmp_path, tiny_weights):
    (tmp_path / "empty").mkdir()
    r = run("evaluate", str(tmp_path / "empty"), "--weights", str(tiny_weights), "--no-progress")
    assert r.returncode == 2 and "no images found" in r.stderr and "Traceback" not in r.stderr
    r = run("predict", str(tmp_path / "x.jpg"), "--weights", str(tmp_path / "nope.pt"))
    assert r.returncode == 2 and "no such weights file" in r.stderr
