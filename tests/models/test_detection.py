"""SSD and Faster R-CNN with a MobileNet V1 body: shapes, anchors, training and inference paths."""

from __future__ import annotations

import math

import pytest
import torch

import mobilenets
from mobilenets.models import PretrainedInfo
from mobilenets.models.detection import SSDAnchorGenerator, faster_rcnn_mobilenet_v1, ssd_box_specs, ssd_mobilenet_v1


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
@pytest.mark.parametrize("head", ["ssd", "ssdlite"])
def test_ssd_shapes_and_1917_anchors_at_300(width, head):
    model = ssd_mobilenet_v1(width, head=head).eval()
    codes, logits = model.forward_raw(torch.randn(2, 3, 300, 300))
    assert codes.shape == (2, 1917, 4) and logits.shape == (2, 1917, 91)
    assert model.grid_sizes() == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.anchors_xyxy().shape == (1917, 4)
    depth = lambda c: max(int(c * width), 8)
    assert model.backbone.out_channels[:2] == [depth(512), depth(1024)]
    assert model.backbone.out_channels[2:] == [max(int(d * width), 8) for d in (512, 256, 256, 128)]


def test_anchor_boxes_follow_create_ssd_anchors():
    specs = ssd_box_specs()
    assert [len(s) for s in specs] == [3, 6, 6, 6, 6, 6]
    assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    assert specs[5][-1] == pytest.approx((math.sqrt(0.95 * 1.0), 1.0))
    boxes = SSDAnchorGenerator().cxcywh([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    assert boxes.shape == (1917, 4)
    # first location of the lowest map: centre (0.5/19, 0.5/19), box 0 square 0.1, box 1 wide (2:1)
    assert boxes[0].tolist() == pytest.approx([0.5 / 19, 0.5 / 19, 0.1, 0.1])
    assert boxes[1, 2] / boxes[1, 3] == pytest.approx(2.0)
    assert (boxes[:, 2:] > 1).any()  # not clipped: the largest boxes leave the image
    assert SSDAnchorGenerator().cxcywh([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]).shape[0] == 2034


def test_ssd_trains_and_detects_in_original_pixels():
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(0.25)
    model.train()
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 200.0]]), "labels": torch.tensor([3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    losses = model([torch.rand(3, 300, 300), torch.rand(3, 300, 300)], targets)
    assert set(losses) == {"bbox_regression", "classification"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.head.classification_head.module_list[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 240, 400)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 100
    assert (out["labels"] >= 1).all()  # background never reported
    assert (out["boxes"][:, 2] <= 400).all() and (out["boxes"][:, 3] <= 240).all()


def test_faster_rcnn_shapes_training_and_inference():
    torch.manual_seed(0)
    model = faster_rcnn_mobilenet_v1(0.25, min_size=300)
    model.train()
    t = {"boxes": torch.tensor([[10.0, 20.0, 100.0, 200.0]]), "labels": torch.tensor([3])}
    losses = model([torch.rand(3, 300, 300)] * 2, [t, t])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 300, 400)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    assert model.rpn._post_nms_top_n["testing"] == 300


def test_detector_costs_and_table13_scale_with_alpha():
    ssd = mobilenets.cost(ssd_mobilenet_v1(1.0))
    assert ssd.mult_adds == pytest.approx(1.237e9, rel=1e-3) and ssd.params == pytest.approx(6.82e6, rel=1e-3)
    assert mobilenets.cost(ssd_mobilenet_v1(0.75)).mult_adds < 0.65 * ssd.mult_adds
    frcnn = mobilenets.cost(faster_rcnn_mobilenet_v1(1.0, min_size=300), 300)
    assert frcnn.mult_adds == pytest.approx(25.2e9, rel=2e-3)


def test_backbone_from_a_classifier_shares_its_weights_and_freezes_folded_bn():
    body = mobilenets.mobilenet_v1(0.5, num_classes=0, activation="relu6", tf_padding=True)
    body.pretrained_cfg = PretrainedInfo("tflite")  # as load_pretrained marks Google's files
    model = ssd_mobilenet_v1(backbone=body)
    assert model.backbone.features[0].conv.weight is body.features[0].conv.weight
    assert model.backbone.frozen_bn
    model.train()
    bn = model.backbone.features[3].dw.bn
    assert not bn.training and not bn.weight.requires_grad
    assert model.backbone.extras[0].reduce.bn.training  # the new layers train
    with pytest.raises(ValueError, match="unknown SSD head"):
        ssd_mobilenet_v1(head="yolo")
    with pytest.raises(ValueError, match="backbone must be a MobileNetV1"):
        ssd_mobilenet_v1(backbone=torch.nn.Conv2d(3, 3, 1))


def _crowded_outputs(model, seed=0):
    """Box encodings and sigmoid scores with clusters of overlapping, high-scoring boxes in a few
    classes (so NMS suppresses, classes compete and the per-class cap binds)."""
    g = torch.Generator().manual_seed(seed)
    anchors = model.anchors_xyxy()
    n = anchors.shape[0]
    codes = torch.randn(n, 4, generator=g) * 0.5
    logits = torch.randn(n, model.num_classes, generator=g) * 2 - 6
    hot = torch.randint(0, n, (n // 3,), generator=g)
    logits[hot, torch.randint(1, 4, (hot.numel(),), generator=g)] += 8  # three busy classes
    return codes, torch.sigmoid(logits), anchors


@pytest.mark.parametrize("thresh,pool", [(1e-8, 40), (1e-8, 1000), (0.01, 25), (0.5, 1000)])
def test_multiclass_nms_gives_the_exact_paths_detections(thresh, pool):
    model = ssd_mobilenet_v1(0.25, resolution=128, score_thresh=thresh, pre_nms_top_n=pool, detections_per_img=50,
                             topk_candidates=30).eval()
    r = model.resolution
    for seed in range(3):
        codes, scores, anchors = _crowded_outputs(model, seed)
        exact = model.detections_from_scores(codes, scores, anchors, (r, r), mode="exact")
        fast = model.detections_from_scores(codes, scores, anchors, (r, r))  # "multiclass": the default
        assert len(exact["scores"]) > 0
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(exact[k], fast[k]), (k, seed)
    with pytest.raises(ValueError, match="unknown nms_mode"):
        model.detections_from_scores(codes, scores, anchors, (r, r), mode="soft")
    with pytest.raises(ValueError, match="unknown nms_mode"):
        ssd_mobilenet_v1(0.25, nms_mode="soft")


def test_fast_nms_keeps_one_class_per_box_and_suppresses_across_classes():
    from torchvision.ops import box_iou

    model = ssd_mobilenet_v1(0.25, resolution=128, nms_mode="fast", detections_per_img=50).eval()
    codes, scores, anchors = _crowded_outputs(model)
    out = model.detections_from_scores(codes, scores, anchors, (128, 128))
    iou = box_iou(out["boxes"], out["boxes"]).fill_diagonal_(0)
    assert len(out["scores"]) > 5 and iou.max() <= model.nms_thresh  # no two boxes overlap, whatever their class
    assert (out["scores"][:-1] >= out["scores"][1:]).all() and (out["labels"] >= 1).all()
    best = scores[:, 1:].max(1).values
    assert out["scores"][0] == best.max()  # the best anchor's best class comes first


def test_bf16_autocast_training_keeps_the_extras_gradients_finite():
    """PyTorch 2.14's CPU bf16 weight gradient of a 3×3 stride-2 conv on a 1×1 map is NaN in
    20–60% of calls on a CPU with AVX512_BF16 (AMD Zen 4): the SSD extras at a small input hit that
    shape, so they run in fp32. The dtypes check the guard on every CPU; on an affected one, with two
    such extras per pass and ≥ 20% per call, 20 unguarded passes would all be finite with probability
    below 0.8⁴⁰ ≈ 10⁻⁴ (it failed here without the guard)."""
    torch.manual_seed(0)
    model = ssd_mobilenet_v1(0.25, resolution=128).train()
    assert model.grid_sizes()[-3:] == [(1, 1)] * 3  # the last two extras take a 1×1 map: the ones guarded
    x = torch.randn(4, 3, 128, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the guard itself, on every CPU: 1×1 extras in fp32
        maps = model.backbone(x)
    assert [maps[f"extra_{i}"].dtype for i in range(4)] == [torch.bfloat16] * 2 + [torch.float32] * 2
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # no gradient, no hazard: bf16 throughout
        assert model.backbone(x)["extra_3"].dtype == torch.bfloat16
    for _ in range(20):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            codes, logits = model.forward_raw(x)
        (codes.float().square().mean() + logits.float().square().mean()).backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, bad
