"""Exporting a detector: the raw graph (box encodings + sigmoid scores), or with decoding + NMS in
it (ONNX NonMaxSuppression, TFLite's TFLite_Detection_PostProcess), verified in its runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import need_data

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import export
from mobilenets.deploy.detector import DetectorPostprocess, open_detector_runtime, runtime_detections

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
    with pytest.raises(ValueError, match="a detector exports to onnx, openvino, tflite"):
        export(detector, "torchscript", tmp_path / "d.pt")
    with pytest.raises(ValueError, match="unknown postprocess mode"):
        export(detector, "onnx", tmp_path / "d.onnx", postprocess="soft")
    with pytest.raises(ValueError, match="is for detectors"):
        export(mobilenets.mobilenet_v1(0.25, num_classes=10), "onnx", tmp_path / "c.onnx", postprocess=True)
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


def _small_detector(**kw):
    """α 0.25 at 128 px (330 anchors) with random BatchNorm statistics and predictor biases, so that
    scores differ from anchor to anchor (a fresh model scores every anchor about alike)."""
    torch.manual_seed(0)
    d = mobilenets.ssd_mobilenet_v1(0.25, resolution=128, **kw).eval()
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2)
                m.running_mean.normal_(0, 0.1)
                m.bias.normal_(0, 0.2)
        for m in d.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_(-3, 1)
    return d


def _same_detections(got, ref, top=10):
    k = min(top, len(ref["scores"]))
    assert k > 0 and len(got["scores"]) >= k
    assert torch.equal(got["labels"][:k], ref["labels"][:k])
    assert (got["scores"][:k] - ref["scores"][:k]).abs().max() < 1e-4
    assert (got["boxes"][:k] - ref["boxes"][:k]).abs().max() < 1e-2  # pixels of the 128-px input


def test_tflite_export_raw_and_with_tflite_detection_postprocess(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="TFLite files run in LiteRT")
    detector = _small_detector(tf_padding=True, detections_per_img=20)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        boxes, logits = detector.forward_raw(x)
    report = export(detector, "tflite", tmp_path / "d.tflite")
    assert report.max_abs_diff <= 1e-3
    got_boxes, got_scores = open_detector_runtime(report.path, "tflite")(x.numpy())
    assert np.abs(got_boxes - boxes.numpy()).max() < 1e-4
    assert np.abs(got_scores - torch.sigmoid(logits).numpy()).max() < 1e-5
    for mode in ("fast", "multiclass"):
        report = export(detector, "tflite", tmp_path / f"{mode}.tflite", postprocess=mode)
        assert "TFLite_Detection_PostProcess" in report.toolchain and report.top1_agreement >= 0.9
        got = runtime_detections(open_detector_runtime(report.path, "tflite")(x.numpy()), "tflite", 128)
        with torch.no_grad():  # the operator clips no box: boxes crossing the border are compared unclipped
            ref = DetectorPostprocess(detector, mode, clip_first=False)(boxes, torch.sigmoid(logits))
        _same_detections(got, dict(zip(("boxes", "scores", "labels"), ref)))


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])
def test_onnx_and_openvino_exports_with_nms_match_pytorch(tmp_path, fmt):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    detector = _small_detector(detections_per_img=20)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        boxes, logits = detector.forward_raw(x)
    scores = torch.sigmoid(logits)
    anchors = detector.anchors_xyxy()
    for mode in ("multiclass", "fast"):
        with torch.no_grad():
            graph = dict(zip(("boxes", "scores", "labels"), DetectorPostprocess(detector, mode)(boxes, scores)))
        ref = detector.detections_from_scores(boxes[0], scores[0], anchors, (128, 128), mode=mode)
        _same_detections(graph, ref, top=20)  # the in-graph version is the PyTorch model's decoding
    report = export(detector, fmt, tmp_path / ("d.onnx" if fmt == "onnx" else "d.xml"), postprocess=True)
    assert "NonMaxSuppression" in report.toolchain and report.top1_agreement >= 0.9
    got = runtime_detections(open_detector_runtime(report.path, fmt)(x.numpy()), fmt, 128)
    _same_detections(got, detector.detections_from_scores(boxes[0], scores[0], anchors, (128, 128)), top=20)


@pytest.mark.slow
def test_googles_ssd_as_tflite_with_nms_is_a_drop_in_for_googles_file(tmp_path):
    """Our TFLite file of Google's SSD (float, fast NMS as in Google's file) gives Google's uint8
    file's detections on a real photo: its boxes scoring over 0.3 are found with the same class,
    IoU > 0.9 and scores within 0.03 for the two best (a person, a tie), IoU > 0.5 for the rest."""
    pytest.importorskip("ai_edge_litert", reason="TFLite files run in LiteRT")
    from ai_edge_litert.interpreter import Interpreter
    from torchvision.ops import box_iou

    from mobilenets.data import load_image
    from mobilenets.inference.detect import resize_for_detector

    weights = need_data(*SSD)
    out = tmp_path / "ssd_nms.tflite"
    assert main(["export", str(weights), "--format", "tflite", "--out", str(out), "--nms", "fast", "--json"]) == 0
    image = resize_for_detector(load_image(need_data("tflite", "grace_hopper.bmp")), 300)
    google = Interpreter(model_path=str(weights), num_threads=2)
    google.allocate_tensors()
    google.set_tensor(google.get_input_details()[0]["index"], image[None])
    google.invoke()
    theirs = runtime_detections(tuple(google.get_tensor(d["index"]) for d in google.get_output_details()), "tflite",
                                300)
    ssd = mobilenets.load_detector(weights)
    mean = np.asarray(ssd.transform.image_mean, np.float32)[:, None, None]
    std = np.asarray(ssd.transform.image_std, np.float32)[:, None, None]
    x = ((image.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std)[None]
    ours = runtime_detections(open_detector_runtime(out, "tflite")(x), "tflite", 300)
    assert torch.equal(ours["labels"][:2], theirs["labels"][:2]) and ours["labels"][:2].tolist() == [1, 32]
    k = int((theirs["scores"] > 0.3).sum())  # a person, a tie, and lesser person boxes (close scores: order varies)
    iou = box_iou(theirs["boxes"][:k], ours["boxes"])
    for i in range(k):
        j = int(torch.argmax(torch.where(ours["labels"] == theirs["labels"][i], iou[i], torch.zeros(()))))
        assert ours["labels"][j] == theirs["labels"][i] and iou[i, j] > (0.9 if i < 2 else 0.5), i
        if i < 2:  # (lesser boxes' scores move more: the float port without the file's uint8 rounding)
            assert abs(float(ours["scores"][j] - theirs["scores"][i])) < 0.03, i
    int8 = tmp_path / "ssd_int8_nms.tflite"  # LiteRT's quantizer on the raw graph, then the operator appended
    assert main(["export", str(weights), "--format", "tflite", "--out", str(int8), "--nms", "fast", "--int8",
                 "--calibration", str(need_data("coco128.tar.gz")), "--json"]) == 0
    q = runtime_detections(open_detector_runtime(int8, "tflite")(x), "tflite", 300)
    assert q["labels"][:2].tolist() == [1, 32]
    assert box_iou(q["boxes"][:2], theirs["boxes"][:2]).diag().min() > 0.8
