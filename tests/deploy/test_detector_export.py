"""Exporting a detector: the raw graph (box encodings + sigmoid scores), verified in its runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import need_data

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import export
from mobilenets.deploy.detector import open_detector_runtime

SSD = ("tflite", "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite")
pytest.importorskip("onnxruntime", reason="the detector export is checked in ONNX Runtime")


def test_onnx_and_openvino_exports_match_pytorch(tmp_path):
    detector = mobilenets.ssd_mobilenet_v1(0.25, resolution=128).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        boxes, logits = detector.forward_raw(x)
    for fmt, name in (("onnx", "d.onnx"), ("openvino", "d.xml")):
        if fmt == "openvino":
            pytest.importorskip("openvino")
        report = export(detector, fmt, tmp_path / name)
        assert report.max_abs_diff <= 1e-3 and report.path.endswith(name) and report.files
        run = open_detector_runtime(report.path, fmt)
        got_boxes, got_scores = run(np.ascontiguousarray(x[:1].numpy()))
        assert got_boxes.shape == (1, boxes.shape[1], 4) and got_scores.shape == (1, boxes.shape[1], 91)
        assert np.abs(got_scores - torch.sigmoid(logits[:1]).numpy()).max() < 1e-4
        assert np.abs(got_boxes - boxes[:1].numpy()).max() < 1e-3


def test_detector_export_bad_options_leave_nothing(tmp_path):
    detector = mobilenets.ssd_mobilenet_v1(0.25, resolution=128)
    with pytest.raises(ValueError, match="a detector exports to onnx, openvino"):
        export(detector, "tflite", tmp_path / "d.tflite")
    with pytest.raises(ValueError, match="--int8 needs --calibration"):
        export(detector, "onnx", tmp_path / "d.onnx", int8=True)
    with pytest.raises(ValueError, match="ends in .onnx"):
        export(detector, "onnx", tmp_path / "d.xml")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_googles_ssd_exports_fp32_and_int8_from_the_cli(tmp_path, capsys):
    weights = need_data(*SSD)
    assert main(["export", str(weights), "--format", "onnx", "--out", str(tmp_path / "ssd.onnx"), "--json"]) == 0
    assert main(["export", str(weights), "--format", "onnx", "--out", str(tmp_path / "ssd_int8.onnx"), "--int8",
                 "--calibration", str(need_data("coco128.tar.gz")), "--json"]) == 0
    import json

    fp32, int8 = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert fp32["max_abs_diff"] <= 1e-3 and fp32["resolution"] == 300
    assert int8["int8"] and int8["top1_agreement"] >= 0.9 and int8["calibration_images"] > 0
