"""Tasks: the one top-k count, the classification task, and a new task run through the real
engine (checkpoint, resume, best.pt) with no change to the engine."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_folder

from mobilenets.tasks import ClassificationTask, Sums, Task, masked_mean, topk_correct
from mobilenets.train import TIME_KEYS, TrainConfig, train


def test_topk_correct_counts_caps_k_and_masks():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.0, 0.2], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert topk_correct(logits, target, (1, 2, 5)).tolist() == [1.0, 2.0, 3.0]  # k = 5 is capped at 3 classes
    valid = torch.tensor([True, False, True])
    assert topk_correct(logits, target, (1, 5), valid).tolist() == [1.0, 2.0]


def test_classification_task_sums_and_metrics():
    task = ClassificationTask(label_smoothing=0.0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    valid = torch.tensor([True] * 5 + [False])
    sums = Sums(task.train_sums)
    out = task.train_step(model, (x, y, valid), sums)
    logits = model(x)
    expected = F.cross_entropy(logits[:5], y[:5]).detach()
    torch.testing.assert_close(out["loss"], expected)
    m = task.train_metrics(sums.as_dict())
    assert m["skipped_images"] == 1 and m["train_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert m["train_top1"] == pytest.approx(100 * float((logits[:5].argmax(1) == y[:5]).float().mean()))
    val = Sums(task.val_sums)
    task.eval_step(model, (x, y, None), val)
    v = task.val_metrics(val.as_dict())
    assert v["val_images"] == 6 and v["val_top5"] == 100.0
    assert task.improved(50.0, None) and task.improved(51.0, 50.0) and not task.improved(49.0, 50.0)


class MeanTask(Task):
    """Regression: the first output predicts the mean of the input image. Its own sums and metric
    (``val_mse``, lower is better, decides best.pt); nothing in the engine knows of it."""

    name = "predict-mean"
    train_sums = ("se", "seen")
    val_sums = ("se", "seen")
    best_metric = "val_mse"
    higher_is_better = False
    log_keys = ("train_loss", "val_mse")
    summary_keys = ("val_mse", "train_loss")

    def __init__(self, signal_at=None):
        self.signal_at, self.calls = signal_at, 0

    def _errors(self, model, x):
        return (model(x)[:, 0].float() - x.float().mean(dim=(1, 2, 3))) ** 2

    def train_step(self, model, batch, sums):
        self.calls += 1
        if self.calls == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        x, _, valid = batch
        se = self._errors(model, x)
        sums["se"] += se.detach().sum()
        sums["seen"] += se.shape[0]
        return {"loss": masked_mean(se, valid), "output": se}

    @torch.no_grad()
    def eval_step(self, model, batch, sums):
        se = self._errors(model, batch[0])
        sums.add(torch.stack([se.double().sum(), torch.tensor(float(se.shape[0]), dtype=torch.float64)]))
        return {"loss": se, "output": se}

    def train_metrics(self, sums):
        return {"train_loss": sums["se"] / max(sums["seen"], 1.0)}

    def val_metrics(self, sums):
        return {"val_mse": sums["se"] / max(sums["seen"], 1.0)}


def _run(data, out, task, **kw):
    cfg = TrainConfig(data=data, out=out, width=0.25, epochs=2, batch_size=12, device="cpu", progress=False,
                      tensorboard=False, verbose=False, threads=1, **kw)
    return train(cfg, task=task)


def _metrics(run):
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIME_KEYS} for line in lines]


def test_a_new_task_trains_stops_and_resumes_exactly_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "data", {"train": 12, "val": 6}, classes=3, noise=40.0)
    ref = _run(data, tmp_path / "ref", MeanTask())
    assert ref["status"] == "finished" and ref["best_val_mse"] is not None and "val_mse" in ref
    assert ref["settings"]["task"] == "predict-mean"
    metrics = _metrics(tmp_path / "ref")
    assert [m["epoch"] for m in metrics] == [1, 2] and {"train_loss", "val_mse", "best_val_mse"} <= set(metrics[0])
    assert "val_top1" not in metrics[0]
    best = torch.load(tmp_path / "ref" / "best.pt", weights_only=True)
    assert best["epoch"] == min(metrics, key=lambda m: m["val_mse"])["epoch"]

    # SIGTERM in epoch 2 (3 steps an epoch: the 5th step), then resume: the same metrics
    cut = _run(data, tmp_path / "cut", MeanTask(signal_at=5))
    assert cut["status"] == "interrupted"
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 2) and set(ck["partial"]) == {"se", "seen", "train_time"}
    assert _run(data, tmp_path / "cut", MeanTask(), resume=True)["status"] == "finished"
    assert _metrics(tmp_path / "cut") == metrics

    # a run is not resumed with another task
    ck["status"] = "running"
    torch.save(ck, tmp_path / "cut" / "checkpoint.pt")
    with pytest.raises(ValueError, match="--resume: task differs"):
        _run(data, tmp_path / "cut", ClassificationTask(), resume=True)
