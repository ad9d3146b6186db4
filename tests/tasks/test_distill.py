"""Distillation losses and metrics against hand-computed values, timm, torchmetrics and brute force."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilenets.tasks import (
    embedding_loss,
    kd_loss,
    knn_accuracy,
    linear_probe_accuracy,
    load_teacher,
    mean_average_precision,
    multilabel_loss,
    tar_at_far,
)

# ----------------------------------------------------------------------------- losses


def test_kd_loss_by_hand():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (math.exp(0.5) + 1), math.exp(0.5) / (math.exp(0.5) + 1)]
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt)) * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(kl, rel=1e-6)
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    y = torch.tensor([0])
    assert kd_loss(s, t, T, y, alpha=0.3).item() == pytest.approx(0.7 * ce + 0.3 * kl, rel=1e-6)


def test_kd_loss_equals_timm_logit_distillation():
    """timm's LogitDistillationTask computes KL(teacher ‖ student) · T² with 'batchmean': the mean of ours."""
    from timm.task.distillation import LogitDistillationTask

    g = torch.Generator().manual_seed(0)
    s_logits, t_logits = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)

    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
            self.num_classes, self.in_chans = 10, 3

        def forward(self, x, **kw):
            return self.out + 0 * self.w

    task = LogitDistillationTask(Fixed(s_logits), Fixed(t_logits), temperature=3.0, distill_loss_weight=0.6,
                                 task_loss_weight=0.4, verbose=False)
    out = task(torch.zeros(8, 3, 4, 4), y)
    assert kd_loss(s_logits, t_logits, 3.0).mean().item() == pytest.approx(out["kd_loss"].item(), rel=1e-5)
    ours = kd_loss(s_logits, t_logits, 3.0, y, alpha=0.6).mean()
    assert ours.item() == pytest.approx(out["loss"].item(), rel=1e-5)


def test_embedding_loss_by_hand():
    s = torch.tensor([[1.0, 2.0, 2.0]])
    t = torch.tensor([[0.0, 2.0, 4.0]])
    assert embedding_loss(s, t).item() == pytest.approx(1 + 0 + 4)
    cos = (0 + 4 + 8) / (3 * math.sqrt(20))
    assert embedding_loss(s, t, normalize=True).item() == pytest.approx(2 - 2 * cos, rel=1e-6)


def test_multilabel_loss_by_hand():
    s = torch.tensor([[0.0, 2.0]])
    p = torch.tensor([[0.5, 1.0]])
    y = torch.tensor([[1.0, 0.0]])
    sig = 1 / (1 + math.exp(-2))
    bce_p = (-(0.5 * math.log(0.5) + 0.5 * math.log(0.5)) - math.log(sig)) / 2
    bce_y = (-math.log(0.5) - math.log(1 - sig)) / 2
    assert multilabel_loss(s, p).item() == pytest.approx(bce_p, rel=1e-6)
    assert multilabel_loss(s, None, y).item() == pytest.approx(bce_y, rel=1e-6)
    assert multilabel_loss(s, p, y, alpha=0.25).item() == pytest.approx(0.75 * bce_y + 0.25 * bce_p, rel=1e-6)


# ----------------------------------------------------------------------------- metrics


def _brute_tar(emb, labels, far):
    x = F.normalize(emb.double(), dim=1)
    gen, imp = [], []
    for i, j in itertools.combinations(range(len(labels)), 2):
        (gen if labels[i] == labels[j] else imp).append(float(x[i] @ x[j]))
    imp = sorted(imp, reverse=True)
    keep = math.floor(far * len(imp))
    thr = imp[keep]
    return sum(g > thr for g in gen) / len(gen), thr


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1e-3, 1e-2, 0.1, 0.3]), st.integers(2, 5))
def test_tar_at_far_equals_brute_force(seed, far, ids):
    g = torch.Generator().manual_seed(seed)
    n = 60
    labels = torch.randint(0, ids, (n,), generator=g)
    centers = torch.randn(ids, 8, generator=g)
    emb = centers[labels] + torch.randn(n, 8, generator=g)
    got = tar_at_far(emb, labels, far=far, block=17)  # blocks smaller than the set: the streaming path
    tar, thr = _brute_tar(emb, labels.tolist(), far)
    assert got["tar"] == pytest.approx(tar, abs=1e-9)
    assert got["threshold"] == pytest.approx(thr, abs=1e-6)
    assert got["far"] <= far + 1e-12


def _brute_ap(scores, truth):
    """AP of one class: the mean over positives of the precision at their rank (no ties)."""
    order = np.argsort(-scores)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, 1):
        if truth[i]:
            hits += 1
            total += hits / rank
    return total / truth.sum()


def test_mean_average_precision_matches_torchmetrics_and_brute_force():
    pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(1)
    truth = (torch.rand(200, 12, generator=g) < 0.2).long()
    truth[:, 5] = 0  # a class without a positive is left out
    scores = (truth.float() * 0.3 + torch.rand(200, 12, generator=g)).clamp(0, 1)
    ours = mean_average_precision(scores, truth)
    present = [c for c in range(12) if truth[:, c].any()]
    brute = np.mean([_brute_ap(scores[:, c].numpy(), truth[:, c].numpy()) for c in present])
    assert ours == pytest.approx(brute, abs=1e-9)
    from torchmetrics.classification import MultilabelAveragePrecision

    tm = MultilabelAveragePrecision(num_labels=len(present), average="macro", thresholds=None)
    assert ours == pytest.approx(float(tm(scores[:, present], truth[:, present])), abs=1e-6)


def test_knn_and_linear_probe_on_separable_clusters():
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(4, 16, generator=g) * 5
    ytr, yte = torch.arange(200) % 4, torch.arange(80) % 4
    tr = centers[ytr] + torch.randn(200, 16, generator=g)
    te = centers[yte] + torch.randn(80, 16, generator=g)
    assert knn_accuracy(tr, ytr, te, yte, k=10) == 100.0
    assert linear_probe_accuracy(tr, ytr, te, yte) == 100.0
    assert knn_accuracy(torch.randn(200, 16, generator=g), ytr, te, yte) < 60.0


# ----------------------------------------------------------------------------- teachers


def test_module_teacher_needs_a_kind_and_a_fitting_loss():
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 5))
    with pytest.raises(ValueError, match="kind="):
        load_teacher(net)
    t = load_teacher(net, kind="embedding", input_size=16)
    assert t.output_dim == 5 and t.identity
    with pytest.raises(ValueError, match="use --loss embedding"):
        load_teacher(net, kind="embedding", input_size=16, loss="kd")
    assert load_teacher(net, kind="embedding", input_size=16).identity == t.identity  # weights name it


def test_a_classifier_teaches_embeddings_with_its_pooled_features():
    from mobilenets import mobilenet_v1

    net = mobilenet_v1(0.25, num_classes=7, resolution=32)
    t = load_teacher(net, kind="logits", input_size=32, loss="embedding")
    assert t.kind == "embedding" and t.output_dim == 256


def test_a_teacher_runs_bn_folded_on_a_copy_with_the_same_outputs():
    """The teacher folds its BatchNorms (a quarter of its pass) on a frozen copy: the caller's
    module keeps its mode and grads, the outputs are the unfolded ones, and a BatchNorm that cannot
    fold (no running statistics: outputs that depend on the batch, which the per-image cache cannot
    hold) is refused with one line."""
    from mobilenets import mobilenet_v1
    from mobilenets.quant import is_fused

    torch.manual_seed(0)
    net = mobilenet_v1(0.25, num_classes=7, resolution=32).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    t = load_teacher(net, kind="logits", input_size=32)
    assert net.training and all(p.requires_grad for p in net.parameters())  # the caller's module: as given
    assert is_fused(t.module) and not any(p.requires_grad for p in t.module.parameters())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(t.module(x), net.eval()(x), rtol=1e-4, atol=1e-5)
    assert load_teacher(net, kind="logits", input_size=32).identity == t.identity

    odd = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="BatchNorm without running statistics"):
        load_teacher(odd, kind="embedding", input_size=16)


def test_new_heads_start_at_the_targets_mean_embedding_and_class_priors():
    """init_head: an embedding student's projection bias is the teacher's mean training embedding (a
    student that must first learn that shared offset collapsed to a constant in short runs); a
    multi-label student's biases are each class's prior logit, blended as its loss blends the targets."""
    from mobilenets.config import MobileNetConfig
    from mobilenets.models import MobileNetV1
    from mobilenets.tasks import EmbeddingDistillationTask, MultiLabelTask

    g = torch.Generator().manual_seed(0)
    emb = EmbeddingDistillationTask()
    emb.targets = {"train": torch.rand(50, 8, generator=g) * 6, "val": None}
    emb.normalize = False
    emb.center = emb.targets["train"].mean(0)
    net = MobileNetV1(MobileNetConfig(width_multiplier=0.25, resolution=32, num_classes=8))
    emb.init_head(net)
    assert torch.allclose(net.classifier.bias, emb.targets["train"].mean(0))

    teacher = torch.rand(40, 5, generator=g) * 0.2
    gt = (torch.rand(40, 5, generator=g) < 0.1).float()
    for mode, expect in (("teacher", teacher.mean(0)), ("gt", gt.mean(0)),
                         ("both", 0.5 * teacher.mean(0) + 0.5 * gt.mean(0))):
        task = MultiLabelTask()
        task.targets, task.label_mode, task.alpha = {"train": teacher, "train_gt": gt}, mode, 0.5
        net = MobileNetV1(MobileNetConfig(width_multiplier=0.25, resolution=32, num_classes=5))
        task.init_head(net)
        assert torch.allclose(net.classifier.bias.sigmoid(), expect.clamp(1e-3, 1 - 1e-3), atol=1e-6), mode
