"""Distillation runs through the one training engine: the teacher cache, resume, labels, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder, need_data
from PIL import Image

import mobilenets.train as T
from mobilenets.cli import main as cli_main
from mobilenets.tasks import EmbeddingDistillationTask, LogitDistillationTask, cosine_sum
from mobilenets.tasks.distill import CACHE_FILE


def _metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in T.TIME_KEYS} for r in rows]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    old = os.environ.get("MOBILENETS_CACHE")
    os.environ["MOBILENETS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("MOBILENETS_CACHE", None)
    else:
        os.environ["MOBILENETS_CACHE"] = old


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory, cache_env):
    """60 images, no class folders, in nested folders of two sizes: what a user's photo dump looks like."""
    root = tmp_path_factory.mktemp("photos")
    g = np.random.default_rng(0)
    for i in range(60):
        size = 40 if i % 2 else 56
        sub = root / ("a" if i < 30 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        base = g.integers(0, 255, 3)
        img = np.clip(base + g.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(sub / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, cache_env):
    return make_image_folder(tmp_path_factory.mktemp("lab") / "data", {"train": 16, "val": 6}, classes=3, size=32,
                             noise=40.0, seed=1)


class _Embedder(torch.nn.Module):
    """A fixed random teacher: 24-d embeddings of 32-px images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(3, 24, 5, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.flatten(self.pool(torch.relu(self.conv(x))), 1)


def _run(data, out, task, **kw):
    opts = {"data": data, "out": out, "width": 0.25, "resolution": 32, "epochs": 2, "batch_size": 12, "device": "cpu",
            "progress": False, "tensorboard": False, "verbose": False, "threads": 1, "task": task.name}
    opts.update(kw)
    return T.train(T.TrainConfig(**opts), task=task)


def _embed_task(**kw):
    return EmbeddingDistillationTask(teacher=_Embedder(), kind="embedding", input_size=32, **kw)


class _StopAt(EmbeddingDistillationTask):
    """Embedding distillation that sends this process SIGTERM at its n-th training step (a preemption)."""

    def __init__(self, at):
        super().__init__(teacher=_Embedder(), kind="embedding", input_size=32)
        self.at, self.steps = at, 0

    def train_step(self, model, batch, sums):
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step(model, batch, sums)


def test_teacher_runs_once_per_image_and_the_cache_file_serves_a_resume(unlabeled, tmp_path):
    task = _embed_task()
    summary = _run(unlabeled, tmp_path / "ref", task, epochs=3)
    n_train, n_val = summary["settings"]["train_images"], summary["settings"]["val_images"]
    assert (n_train, n_val) == (54, 6)  # a seeded tenth held out
    assert task.teacher.calls == n_train + n_val  # three epochs, one teacher pass per image
    assert (tmp_path / "ref" / CACHE_FILE).is_file()
    rows = _metrics(tmp_path / "ref")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"train_loss", "images_per_second", "val_cosine"} <= set(r)
    assert summary["val_cosine"] == rows[-1]["val_cosine"]
    assert summary["config"]["num_classes"] == 24  # the learned projection to the teacher's 24 dimensions

    cut = _StopAt(at=7)  # in epoch 2 (4 steps per epoch)
    stopped = _run(unlabeled, tmp_path / "cut", cut, epochs=3)
    assert stopped["status"] == "interrupted"
    again = _embed_task()
    resumed = _run(unlabeled, tmp_path / "cut", again, epochs=3, resume=True)
    assert resumed["status"] == "finished"
    assert again.teacher.calls == 0  # every output came from RUN/teacher_outputs.pt
    assert _strip(_metrics(tmp_path / "cut")) == _strip(rows)


def test_distillation_without_cache_runs_the_teacher_every_step(unlabeled, tmp_path):
    task = _embed_task()
    s = _run(unlabeled, tmp_path / "nocache", task, teacher_cache=False)
    steps = s["settings"]["steps_per_epoch"] * s["settings"]["epochs"]
    assert task.teacher.calls == steps * 12 + 6  # every training batch, and the validation images once


def test_a_changed_teacher_is_refused_on_resume(unlabeled, tmp_path):
    _run(unlabeled, tmp_path / "r", _StopAt(at=2))
    other = EmbeddingDistillationTask(teacher=torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                                                  torch.nn.Linear(3, 24)),
                                      kind="embedding", input_size=32)
    with pytest.raises(ValueError, match="distill differs"):
        _run(unlabeled, tmp_path / "r", other, resume=True)


@pytest.fixture(scope="module")
def classifier_teacher(labelled, tmp_path_factory):
    """A small classifier trained on the labelled folder: a kd teacher whose classes are the data's."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    T.train(T.TrainConfig(data=labelled, out=out, width=0.5, epochs=3, batch_size=12, device="cpu", progress=False,
                          tensorboard=False, verbose=False, threads=1))
    return out / "best.pt"


def test_kd_learns_from_labels_and_teacher_and_reports_top1(labelled, classifier_teacher, tmp_path):
    task = LogitDistillationTask()
    s = _run(labelled, tmp_path / "kd", task, teacher=str(classifier_teacher), epochs=2)
    assert s["settings"]["distill"]["labels"] == "both"  # the data's classes are the teacher's
    row = _metrics(tmp_path / "kd")[-1]
    assert {"val_agreement", "val_top1", "train_loss", "images_per_second"} <= set(row)
    assert s["num_classes"] == 3
    only = _run(labelled, tmp_path / "kd_t", LogitDistillationTask(), teacher=str(classifier_teacher), epochs=1,
                labels="teacher")
    assert only["settings"]["distill"]["labels"] == "teacher"


def test_labels_that_do_not_fit_the_teacher_are_refused(unlabeled, classifier_teacher, tmp_path):
    with pytest.raises(ValueError, match="--labels gt needs labels"):
        _run(unlabeled, tmp_path / "x", LogitDistillationTask(), teacher=str(classifier_teacher), labels="gt")


def _cli(capsys, *argv):
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.data
def test_distill_cli_bad_inputs_one_line_each(capsys, tmp_path, unlabeled):
    emb = need_data("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ("--teacher", str(not_model), "--data", str(unlabeled)),
        ("--teacher", str(emb), "--loss", "kd", "--data", str(unlabeled)),
        ("--teacher", str(emb), "--loss", "embedding", "--data", str(empty)),
        ("--teacher", str(emb), "--loss", "embedding", "--data", str(tmp_path / "missing")),
        ("--teacher", str(emb), "--loss", "embedding", "--labels", "gt", "--data", str(unlabeled)),
        ("--data", str(unlabeled)),
    ]
    for i, case in enumerate(cases):
        out = tmp_path / f"run{i}"
        code, lines = _cli(capsys, "distill", "--out", str(out), "--epochs", "1", "--no-progress", "--resolution", "32",
                           *case)
        assert code == 2, case
        assert len(lines) == 1 and "Traceback" not in lines[0], (case, lines)
        assert not out.exists() or not any(out.iterdir()), case


@pytest.mark.data
@pytest.mark.slow
def test_real_embedding_distillation_beats_the_untrained_student(tmp_path):
    """Google's 1.0-224 embedding extractor teaches an α=0.25 student (32 px) on 600 CIFAR-10 images;
    judged on 200 held-out test images (about 70 s on 2 idle cores: mostly the teacher's pass)."""
    emb = need_data("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    data = need_data("cifar10-jpeg.tar.gz")
    task = EmbeddingDistillationTask()
    s = _run(data, tmp_path / "emb", task, teacher=str(emb), resolution=32, epochs=6, batch_size=50, lr=5e-3,
             subset=600, val_subset=200, threads=2)  # CI's two cores: the teacher's pass dominates
    # the untrained student as the run built it (same seed; its projection's bias at the teacher's
    # mean training embedding) on the same held-out images
    from mobilenets._utils import mix_seed
    from mobilenets.config import MobileNetConfig
    from mobilenets.models import MobileNetV1

    torch.manual_seed(mix_seed(0, "init"))
    net = MobileNetV1(MobileNetConfig.from_dict(s["config"]))
    task.init_head(net)
    net.eval()
    assert torch.equal(net.classifier.bias, task.center)
    val = task.targets["val"]
    pre = s["settings"]["preprocess"]
    x = next(iter(_val_images(task, pre)))
    with torch.no_grad():
        out = net(x)
    untrained = float(cosine_sum(out, val)) / val.shape[0]
    untrained_centered = float(cosine_sum(out - task.center, val - task.center)) / val.shape[0]
    # the mean alone already points the right way (plain cosine ~0.8): training must beat that, and
    # must learn how the images differ from the mean, which the centered cosine measures (~0 untrained)
    assert s["val_cosine"] > untrained, (s["val_cosine"], untrained)
    assert s["val_centered_cosine"] > untrained_centered + 0.1, (s["val_centered_cosine"], untrained_centered)
    assert s["val_cosine"] > 0.5


def _val_images(task, pre):
    from mobilenets.data import to_input

    images = task.run_data.val.images
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    yield to_input(images, mean, std, channels_last=False)


@pytest.mark.data
@pytest.mark.slow
def test_multilabel_from_googles_detector_on_coco128(tmp_path):
    ssd = need_data("tflite", "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite")
    coco = need_data("coco128.tar.gz")
    from mobilenets.tasks import MultiLabelTask

    s = _run(coco, tmp_path / "ml", MultiLabelTask(), teacher=str(ssd), resolution=64, epochs=1, batch_size=16,
             subset=48, val_subset=40)
    assert s["settings"]["distill"]["labels"] == "both"  # COCO128's boxes give image-level labels
    row = _metrics(tmp_path / "ml")[-1]
    assert 0.0 < row["val_map"] <= 1.0
    assert row["val_teacher_map"] > 0.5  # Google's SSD as a multi-label classifier of COCO128 images


@pytest.mark.slow
def test_sigkill_then_resume_of_a_distillation_run_is_identical(labelled, classifier_teacher, tmp_path):
    def cmd(out):
        return [sys.executable, "-m", "mobilenets", "distill", "--teacher", str(classifier_teacher), "--data",
                str(labelled), "--out", str(out), "--loss", "kd", "--width", "0.25", "--epochs", "3", "--batch-size",
                "4", "--device", "cpu", "--no-progress", "--no-tensorboard", "--threads", "1"]

    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not ((run / "metrics.jsonl").is_file()
                                          and (run / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(_metrics(run)) < 3
    done = subprocess.run([sys.executable, "-m", "mobilenets", "distill", "--out", str(run), "--resume",
                           "--no-progress"], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "teacher" not in done.stderr.split("training")[0] or "from the cache" in done.stderr
    assert _strip(_metrics(run)) == _strip(_metrics(ref))


# ----------------------------------------------------------------------------- the experiments


def _fake_rows(table):
    base = {"table": table, "name": "a0.25-r128", "model": "0.25 MobileNet-128", "mult_adds": 14e6, "params": 0.5e6,
            "epochs": 2, "train_images": 100, "test_images": 50}
    if table == "table14":
        return [{**base, "test_cosine": 0.7, "test_centered_cosine": 0.3, "mean_only_cosine": 0.81, "lr": 5e-3,
                 "knn_top1": 40.0, "teacher_knn_top1": 60.0, "tar_at_far_1e-4": 1.0,
                 "teacher_tar_at_far_1e-4": 2.0}]
    if table == "table12":
        return [{**base, "labels": m, "val_map": 20.0 + i, "teacher_map": 69.0} for i, m in
                enumerate(("gt", "teacher", "both", "unlabeled"))]
    return [{**base, "role": r, "val_top1": 50.0 + i, "val_agreement": None if r == "teacher" else 70.0}
            for i, r in enumerate(("teacher", "plain", "kd"))]


@pytest.mark.parametrize("table", ["table14", "table12", "kd"])
def test_distillation_reports_are_written_with_the_papers_rows(tmp_path, table):
    from mobilenets.train.distill_experiments import Scale, _write

    files = _write(table, _fake_rows(table), tmp_path, Scale())
    assert [Path(f).suffix for f in files] == [".md", ".csv", ".png"]
    md = Path(files[0]).read_text()
    if table == "table14":
        assert "79.4%" in md and "TAR@FAR=1e-4" in md  # the paper's 1.0 MobileNet-160 row beside ours
        assert "| 0.700 | 0.300 |" in md and "0.810" in md  # centered cosine beside the plain; the mean's
    if table == "table12":
        assert "88.7%" in md and "| teacher |" in md and "| unlabeled |" in md
    assert Path(files[2]).stat().st_size > 1000


@pytest.mark.data
@pytest.mark.slow
def test_table14_experiment_at_a_tiny_scale(tmp_path, capsys):
    emb = need_data("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    cifar = need_data("cifar10-jpeg.tar.gz")
    code = cli_main(["experiment", "table14", "--data", str(cifar), "--teacher", str(emb), "--widths", "0.25",
                     "--resolutions", "32", "--out", str(tmp_path), "--subset", "60", "--val-subset", "40",
                     "--epochs", "1", "--batch-size", "20", "--threads", "1", "--no-progress", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = result["rows"]
    assert 0 <= row["knn_top1"] <= 100 and row["teacher_knn_top1"] > 15  # the teacher's embedding knows CIFAR
    assert -1 <= row["test_cosine"] <= 1 and -1 <= row["test_centered_cosine"] <= 1
    assert row["mean_only_cosine"] > 0.5  # every teacher embedding points near the teacher's mean
    assert row["lr"] == pytest.approx(1e-4 * 20)
    assert (tmp_path / "table14.md").is_file() and (tmp_path / "table14.png").is_file()


@pytest.mark.slow
def test_two_process_ddp_distillation_matches_one_process(labelled, classifier_teacher, tmp_path):
    """torchrun: the first process runs the teacher and writes the cache, the other reads it; the same
    global batches give the same losses as one process with two micro-batches."""
    common = ["--teacher", str(classifier_teacher), "--data", str(labelled), "--loss", "kd", "--width", "0.25",
              "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress", "--no-tensorboard",
              "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mobilenets", "distill", "--out", str(tmp_path / "one"),
                          "--accum-steps", "2", *common], check=False, capture_output=True, text=True, timeout=600,
                         env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "mobilenets", "distill", "--out", str(tmp_path / "two"), *common], check=False,
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["settings"]["world_size"] == 2
    for a, b in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two")):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_agreement"] == pytest.approx(b["val_agreement"], abs=34.0)  # 6 val images; BN stats differ


def test_a_distilled_embedding_student_predicts_embeddings(unlabeled, tmp_path, capsys):
    _run(unlabeled, tmp_path / "e", _embed_task(), epochs=1)
    img = next(unlabeled.rglob("*.png"))
    code = cli_main(["predict", str(img), "--weights", str(tmp_path / "e" / "best.pt"), "--json"])
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["dim"] == 24 and len(row["embedding"]) == 24  # the teacher's space, through the projection


def test_sources_combine_and_labels_survive_only_when_they_agree(unlabeled, labelled, tmp_path):
    from mobilenets.data.images import open_images

    lab = open_images(labelled)
    assert lab.label_kind == "single" and len(lab) == 48 and lab.class_names == ["class0", "class1", "class2"]
    both = open_images([labelled, unlabeled])
    assert both.label_kind == "none" and len(both) == 48 + 60 and both.class_names == []
    twice = open_images([labelled, labelled])
    assert twice.label_kind == "single" and len(twice) == 96
    assert open_images(unlabeled, "val", required=False) is None  # no val split: the task holds out a tenth
    archive = tmp_path / "photos.tar.gz"
    import tarfile

    with tarfile.open(archive, "w:gz") as t:
        t.add(unlabeled, arcname="photos")
    assert len(open_images(archive)) == 60  # an archive without class folders: every image in it


def test_table12_students_copy_the_teacher_cache_of_the_first_run_on_the_same_images(tmp_path, monkeypatch):
    """The teacher runs once per training set: every later student on COCO128 train copies the first
    one's cache, every later `unlabeled` student (COCO128 train + --extra-data) the first unlabeled one's."""
    from mobilenets.train import distill_experiments as dx

    seen: dict[str, str | None] = {}

    def fake_student(out, name, cache_from, **cfg):
        seen[name] = cache_from.name if cache_from is not None else None
        return {"mult_adds": 1e6, "params": 1e5, "epochs": 1, "settings": {"train_images": 8, "val_images": 4},
                "val_map": 0.1, "val_teacher_map": 0.7, "best_val_map": 0.1, "wall_seconds": 1.0}

    monkeypatch.setattr(dx, "_student", fake_student)
    rows = dx._table12(tmp_path, "coco.tar.gz", ["extra/"], "t.tflite", dx.Scale(), (0.5, 0.25), (128,))
    assert len(rows) == 8
    assert seen == {"a0.5-r128-gt": None, "a0.5-r128-teacher": None, "a0.5-r128-both": "a0.5-r128-teacher",
                    "a0.5-r128-unlabeled": None, "a0.25-r128-gt": None, "a0.25-r128-teacher": "a0.5-r128-teacher",
                    "a0.25-r128-both": "a0.5-r128-teacher", "a0.25-r128-unlabeled": "a0.5-r128-unlabeled"}
