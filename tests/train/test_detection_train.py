"""Detection training through the one engine: SSD on COCO128, resume after a signal gives the same
metrics, the run's files load as detectors, bad input is one line and exit status 2."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, need_data

from mobilenets.cli import main
from mobilenets.tasks import DetectionTask
from mobilenets.train import TIME_KEYS, TrainConfig, train


def _metrics(run):
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIME_KEYS} for line in lines]


class _SignalAt(DetectionTask):
    """SIGTERM to itself at the n-th training step (the engine stops after that step and saves)."""

    def __init__(self, at, **kw):
        super().__init__(**kw)
        self.at, self.calls = at, 0

    def train_step(self, model, batch, sums):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step(model, batch, sums)


def _small(data, out, **kw):
    # 8 images, α 0.25 at 128 px (grids 8, 4, 2, 1, 1, 1), 2 steps an epoch
    return TrainConfig(task="detection", arch="ssd", data=data, out=out, width=0.25, resolution=128, subset=8,
                       val_subset=8, batch_size=4, device="cpu", workers=0, threads=1, progress=False,
                       tensorboard=False, verbose=False, **{"epochs": 3, **kw})


def test_detection_run_resumes_exactly_after_a_signal_and_loads_as_a_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    ref = train(_small(data, tmp_path / "ref"))
    assert ref["status"] == "finished" and ref["settings"]["task"] == "detection"
    metrics = _metrics(tmp_path / "ref")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train_loss", "val_map", "val_map50", "best_val_map"} <= set(metrics[0])
    assert "images_per_second" in json.loads((tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[0])

    cut = train(_small(data, tmp_path / "cut"), task=_SignalAt(3))  # SIGTERM in epoch 2, after its 1st step
    assert cut["status"] == "interrupted"
    assert train(_small(data, tmp_path / "cut", resume=True))["status"] == "finished"
    assert _metrics(tmp_path / "cut") == metrics

    from mobilenets.weights import load_detector

    for f in ("best.pt", "checkpoint.pt"):
        model = load_detector(tmp_path / "ref" / f)
        assert type(model).__name__ == "SSDMobileNetV1" and model.resolution == 128
    payload = torch.load(tmp_path / "ref" / "best.pt", weights_only=True)
    assert payload["format"] == "mobilenets-detector" and payload["arch"] == "ssd"


def test_detection_run_stopped_mid_epoch_2_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    ref = train(_small(data, tmp_path / "ref", freeze_backbone=True, epochs=2))
    cut = train(_small(data, tmp_path / "cut", freeze_backbone=True, epochs=2), task=_SignalAt(3))
    assert cut["status"] == "interrupted"
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 1)
    done = train(_small(data, tmp_path / "cut", freeze_backbone=True, epochs=2, resume=True))
    assert done["status"] == "finished" and ref["status"] == "finished"
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "ref")


def test_bad_detection_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "cls", {"train": 2, "val": 1}, classes=2)
    assert main(["train", "--task", "detection", "--data", str(folder), "--out", str(tmp_path / "r"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "YOLO" in err
    assert main(["train", "--task", "detection", "--arch", "yolo", "--data", str(folder), "--out",
                 str(tmp_path / "r")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="unknown detection architecture"):
        train(TrainConfig(task="detection", arch="yolo", data=folder, out=tmp_path / "r"))


@pytest.mark.slow
def test_ssd_overfits_16_coco128_images_from_googles_file_on_a_cpu(tmp_path, monkeypatch):
    """Backbone frozen (maps cached), fine-tuned from Google's TFLite SSD: mAP@[.5:.95] > 0.5 on the
    16 training images within 5 minutes."""
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    init = need_data("tflite", "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite")
    t0 = time.perf_counter()
    s = train(TrainConfig(task="detection", arch="ssd", data=data, out=tmp_path / "run", init=init, subset=16,
                          epochs=12, batch_size=4, lr=0.004, freeze_backbone=True, device="cpu", workers=0,
                          threads=1, progress=False, tensorboard=False, verbose=False),
              task=DetectionTask(val_split="train"))
    took = time.perf_counter() - t0
    assert s["status"] == "finished" and s["best_val_map"] > 0.5, s["best_val_map"]
    assert took < 300, took


# ----------------------------------------------------------------------------- SIGKILL, in a subprocess

_KILLED_AT_STEP = """
import os, signal, sys
from mobilenets.tasks import DetectionTask

step, calls = DetectionTask.train_step, [0]

def train_step(self, model, batch, sums):  # SIGKILL, which no handler sees, at the n-th training step
    calls[0] += 1
    if calls[0] == int(os.environ["MOBILENETS_TEST_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, model, batch, sums)

DetectionTask.train_step = train_step
from mobilenets.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _detection_cmd(data, out):
    # 8 images, α 0.25 at 128 px, body frozen (maps cached), batch 4: 2 steps an epoch, 2 epochs
    return ["train", "--task", "detection", "--arch", "ssd", "--data", str(data), "--out", str(out), "--width", "0.25",
            "--resolution", "128", "--subset", "8", "--val-subset", "8", "--batch-size", "4", "--epochs", "2",
            "--freeze-backbone", "--device", "cpu", "--workers", "0", "--threads", "1", "--seed", "3", "--no-progress",
            "--no-tensorboard"]


@pytest.mark.slow  # three CLI processes (about 30 s on 2 idle cores)
def test_sigkill_mid_epoch_2_then_resume_gives_the_same_metrics(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")

    def run(*args, **env):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, **env})

    ref = run("-m", "mobilenets", *_detection_cmd(data, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    killed = run("-c", _KILLED_AT_STEP, *_detection_cmd(data, tmp_path / "cut"), MOBILENETS_TEST_KILL_AT="4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # killed in epoch 2's second (last) step
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 0)  # the end-of-epoch-1 checkpoint survived the kill
    assert len(_metrics(tmp_path / "cut")) == 1
    done = run("-m", "mobilenets", "train", "--out", str(tmp_path / "cut"), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "ref")
    a, b = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("ref", "cut"))
    assert (a["val_map"], a["val_map50"], a["train_loss"]) == (b["val_map"], b["val_map50"], b["train_loss"])


# ----------------------------------------------------------------------------- EMA, AMP, DDP: as classification

def test_detection_run_with_ema_resumes_exactly_and_saves_the_averaged_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    ref = train(_small(data, tmp_path / "ref", ema=0.9, epochs=2))
    plain = train(_small(data, tmp_path / "plain", epochs=2))
    assert ref["settings"]["ema"] == 0.9 and ref["status"] == plain["status"] == "finished"
    cut = train(_small(data, tmp_path / "cut", ema=0.9, epochs=2), task=_SignalAt(3))
    assert cut["status"] == "interrupted"
    assert "ema" in torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    train(_small(data, tmp_path / "cut", ema=0.9, epochs=2, resume=True))
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "ref")
    # the same gradients, but best.pt holds the average: its weights differ from the plain run's
    a = torch.load(tmp_path / "ref" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "plain" / "best.pt", weights_only=True)["model"]
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved and _metrics(tmp_path / "ref")[0]["train_loss"] == _metrics(tmp_path / "plain")[0]["train_loss"]


def test_detection_run_under_bf16_autocast_trains_and_saves_float_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    data = need_data("coco128.tar.gz")
    fp32 = train(_small(data, tmp_path / "fp32", epochs=2))
    bf16 = train(_small(data, tmp_path / "bf16", epochs=2, amp="bf16"))
    assert bf16["status"] == "finished" and bf16["settings"]["amp"] == "bf16"
    a, b = _metrics(tmp_path / "fp32"), _metrics(tmp_path / "bf16")
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in b)
    assert b[0]["train_loss"] != a[0]["train_loss"]  # autocast really ran: bf16 rounding moves the loss
    assert b[0]["train_loss"] == pytest.approx(a[0]["train_loss"], rel=0.1)  # ... by bf16's ~1% per op
    sd = torch.load(tmp_path / "bf16" / "best.pt", weights_only=True)["model"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float32}
    assert fp32["status"] == "finished"


@pytest.mark.slow  # two torchrun processes and one plain one (about 40 s on 2 idle cores)
def test_two_process_ddp_detection_matches_one_process(tmp_path):
    import subprocess
    import sys

    data = need_data("coco128.tar.gz")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOBILENETS_CACHE": str(tmp_path / "cache")}
    def cmd(out):  # body frozen, its maps cached on each process: the CPU-practical path
        return _detection_cmd(data, out)

    one = subprocess.run([sys.executable, "-m", "mobilenets", *cmd(tmp_path / "one"), "--accum-steps", "2"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "mobilenets", *cmd(tmp_path / "two")], capture_output=True, text=True, timeout=600,
                         env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("one", "two"))
    assert s2["settings"]["world_size"] == 2 and s1["settings"]["accum_steps"] == 2
    assert s2["settings"]["world_batch"] == 2 and s1["settings"]["world_batch"] == 4  # per process
    # the same images, crops and flips per micro-batch: the same gradients, the same losses to rounding
    m1, m2 = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(m1) == len(m2) == 2  # rank 0 alone writes
    for a, b in zip(m1, m2):
        for key in ("train_loss", "train_box_loss", "train_cls_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert two.stdout.count("-> ") == 1, two.stdout  # one final line, not one per process
    assert "val_map" in s2 and "val_map50" in s2
