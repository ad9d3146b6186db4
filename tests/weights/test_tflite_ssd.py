"""Google's TFLite SSD MobileNet V1 COCO detector, read into our SSD: structure, anchors, and agreement
with LiteRT running the same file (raw tensors decoded identically: sigmoid, NMS 0.6, top 100)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import need_data

import mobilenets
from mobilenets.data import load_image
from mobilenets.data.detection import open_detection_data
from mobilenets.inference.detect import Detector, resize_for_detector
from mobilenets.tasks.coco_eval import coco_map
from mobilenets.weights.tflite_graph import read_tflite_graph

SSD_FILE = ("tflite", "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite")
pytest.importorskip("ai_edge_litert", reason="the reference runtime is LiteRT (pip install ai-edge-litert)")


class _LiteRTRaw:
    """LiteRT on the file, returning the box encodings and sigmoid scores before post-processing."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        self.graph = read_tflite_graph(path)
        post = next(op for op in self.graph.ops if "PostProcess" in op.op)
        self.box_t, self.score_t = post.inputs[0], post.inputs[1]
        with warnings.catch_warnings():  # LiteRT warns that keeping every tensor is for debugging: it is
            warnings.simplefilter("ignore")
            self.it = Interpreter(model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True)
        self.it.allocate_tensors()

    def _deq(self, i):
        t, d = self.graph.tensors[i], self.it.get_tensor(i)
        return (d.astype(np.float32) - t.zero_point[0]) * t.scale[0] if t.quantized else d.astype(np.float32)

    def __call__(self, uint8_hwc):
        self.it.set_tensor(self.it.get_input_details()[0]["index"], uint8_hwc[None])
        self.it.invoke()
        codes = self._deq(self.box_t)[0][:, [1, 0, 3, 2]]  # TF (ty, tx, th, tw) → torchvision order
        return torch.from_numpy(codes.copy()), torch.from_numpy(self._deq(self.score_t)[0].copy())


@pytest.fixture(scope="module")
def ssd():
    return mobilenets.load_detector(need_data(*SSD_FILE))


def test_reads_alpha_anchors_and_classes_from_the_file(ssd):
    info = ssd.pretrained_cfg.extra
    assert ssd.config.width_multiplier == 0.75  # the file's name says 1.0; its channels say 0.75
    assert ssd.num_classes == 91 and ssd.head_kind == "ssd" and ssd.resolution == 300
    assert info["anchors"].shape == (1917, 4) and info["anchors_per_location"] == [3, 6, 6, 6, 6, 6]
    anchors = read_tflite_graph(need_data(*SSD_FILE)).tensors
    step = max(t.scale[0] for t in anchors if t.shape == (1917, 4) and t.quantized)
    assert info["anchor_max_diff"] <= step / 2 + 1e-6  # our generator = the file's anchors up to their rounding
    assert ssd.backbone.frozen_bn  # folded weights: BN is an identity carrying the bias
    with pytest.raises(ValueError, match="an SSD detector, not a classifier; load it with mobilenets.load_detector"):
        mobilenets.load_pretrained(need_data(*SSD_FILE))


def test_top20_anchors_agree_with_litert(ssd):
    """With activations rounded to the file's uint8 grids (its ranges), per image the 20 best
    anchors have LiteRT's class and scores within 0.02 of LiteRT's."""
    from mobilenets.quant import fake_quantize_activations

    lite = _LiteRTRaw(need_data(*SSD_FILE))
    handles = fake_quantize_activations(ssd, ssd.pretrained_cfg.extra["activation_ranges"])
    index = open_detection_data(need_data("coco128.tar.gz"), "val")
    mean = torch.tensor(ssd.transform.image_mean)[:, None, None]
    std = torch.tensor(ssd.transform.image_std)[:, None, None]
    try:
        worst, agree = 0.0, []
        for sample in index.samples[:12]:
            a = resize_for_detector(load_image(sample.path), 300)
            _, theirs = lite(a)
            x = (torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255 - mean) / std
            with torch.no_grad():
                ours = torch.sigmoid(ssd.forward_raw(x[None])[1][0])
            top = theirs[:, 1:].max(1).values.argsort(descending=True)[:20]
            agree.append((theirs[top, 1:].argmax(1) == ours[top, 1:].argmax(1)).float().mean().item())
            worst = max(worst, (theirs[top, 1:].max(1).values - ours[top, 1:].max(1).values).abs().max().item())
    finally:  # the module-scoped detector is shared with the mAP test: leave it float
        for h in handles:
            h.remove()
    assert min(agree) == 1.0, agree
    assert worst <= 0.02, worst


@pytest.mark.slow
def test_map_on_coco128_val_is_within_half_a_point_of_litert(ssd):
    """Measured: ours 25.18 mAP / 40.37 AP50, LiteRT 25.38 / 40.46 on the 128 val images."""
    lite = _LiteRTRaw(need_data(*SSD_FILE))
    index = open_detection_data(need_data("coco128.tar.gz"), "val")
    detector = Detector(ssd)
    anchors = ssd.anchors_xyxy()
    ours, theirs = [], []
    for sample in index.samples:
        a = resize_for_detector(load_image(sample.path), 300)
        scale = torch.tensor([sample.width, sample.height] * 2, dtype=torch.float32) / 300
        d = detector.run_arrays([a])[0]
        ours.append({**d, "boxes": d["boxes"] * scale})
        codes, scores = lite(a)
        raw = {"bbox_regression": codes[None], "cls_logits": torch.logit(scores.clamp(1e-6, 1 - 1e-6))[None]}
        t = ssd.postprocess_detections(raw, [anchors], [(300, 300)])[0]
        theirs.append({**t, "boxes": t["boxes"] * scale})
    m_ours, m_lite = coco_map(ours, index.samples), coco_map(theirs, index.samples)
    assert m_lite["map"] == pytest.approx(0.2525, abs=0.005)  # the shared data README's LiteRT figure
    assert abs(m_ours["map"] - m_lite["map"]) <= 0.005, (m_ours, m_lite)
    assert abs(m_ours["map50"] - m_lite["map50"]) <= 0.01
