"""The trainer: recipes, outputs, exact resumption, signals, divergence, fine-tuning, DDP, and
learning on real CIFAR-10."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder, need_data

import mobilenets
import mobilenets.train as T
from mobilenets.cli import main as cli_main
from mobilenets.config import MobileNetConfig
from mobilenets.inference import evaluate_dataset
from mobilenets.models import MobileNetV1
from mobilenets.quant import recalibrate_batchnorm
from mobilenets.tasks import ClassificationTask
from mobilenets.weights import load_pretrained, save_checkpoint


def make_folder(root, per_class=12, classes=3, size=32, val_per_class=6, seed=0):
    """A small learnable ImageFolder tree: one colour per class, plus noise."""
    return make_image_folder(root, {"train": per_class, "val": val_per_class}, classes=classes, size=size,
                             noise=40.0, seed=seed)


def strip_times(history):
    return [{k: v for k, v in h.items() if k not in T.TIME_KEYS} for h in history]


def read_metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A per-session cache (or the one the developer set), also for subprocesses."""
    path = os.environ.get("MOBILENETS_CACHE") or str(tmp_path_factory.mktemp("cache"))
    old = os.environ.get("MOBILENETS_CACHE")
    os.environ["MOBILENETS_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("MOBILENETS_CACHE", None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cache_env):
    return make_folder(tmp_path_factory.mktemp("tiny") / "data")


# One thread: on a busy shared machine PyTorch's OpenMP threads spin and a 2-thread run can be 5-10x
# slower than a 1-thread one; results are deterministic for a fixed thread count.
def quick(data, out, task=None, **kw):
    """A few-second CPU run: α = 0.25 at 32 px, small batches, no progress bar or TensorBoard."""
    opts = dict(data=data, out=out, width=0.25, epochs=2, batch_size=12, device="cpu", progress=False,
                tensorboard=False, verbose=False, threads=1)
    opts.update(kw)
    return T.train(T.TrainConfig(**opts), task=task)


# ----------------------------------------------------------------------------- pieces

@pytest.mark.parametrize("variant,tf_padding", [("separable", False), ("separable", True), ("conv", False),
                                                ("shallow", False)])
def test_cifar_stem_keeps_weights_and_ends_in_4x4(variant, tf_padding):
    config = MobileNetConfig(width_multiplier=0.25, resolution=32, num_classes=10, variant=variant,
                             tf_padding=tf_padding)
    plain = MobileNetV1(config).eval()
    small = T.build_model(config, cifar_stem=True).eval()
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
    assert small.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert plain.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (1, 1)
    strided = [m.stride for m in small.modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)]
    assert len(strided) == 3  # Conv2d_4, _6 and _12 keep their stride 2
    with pytest.raises(ValueError, match="output_stride 32"):
        T.build_model(config.replace(output_stride=16), cifar_stem=True)


def test_cifar_stem_cost_at_32px():
    model = T.build_model(MobileNetConfig(resolution=32, num_classes=10), cifar_stem=True)
    report = mobilenets.cost(model, 32)
    assert report.mult_adds == 175_556_608 and report.params == 3_217_226


# ----------------------------------------------------------------------------- a run and its files

def test_run_writes_everything_and_evaluate_agrees(tiny, tmp_path):
    run = tmp_path / "run"
    summary = quick(tiny, run, tensorboard=True)
    assert summary["status"] == "finished" and summary["epochs"] == 2
    for key in ("val_top1", "val_top5", "epochs", "mult_adds", "params", "wall_seconds"):
        assert summary[key] is not None, key
    assert summary["mult_adds"] == mobilenets.cost(T.load_trained(run / "checkpoint.pt"), 32).mult_adds
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["val_top1"] == summary["val_top1"]
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in ("epoch", "train_loss", "val_top1", "val_top5", "images_per_second", "lr", "train_top1",
                "epoch_time"):
        assert key in metrics[0], key
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # checkpoint.pt: loadable by the library's loader, with our extras
    model = load_pretrained(run / "checkpoint.pt")
    info = model.pretrained_cfg
    assert info.class_names == ["class0", "class1", "class2"] and info.extra["epoch"] == 2
    assert model.config.num_classes == 3 and model.config.width_multiplier == 0.25
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("optimizer", "scheduler", "scaler", "ema", "rng", "epoch", "step", "sampler", "best", "class_names",
                "config", "model", "format"):
        assert key in raw, key
    assert raw["config"]["cifar_stem"] is True and {"torch", "numpy", "python"} <= set(raw["rng"])
    assert (run / "best.pt").is_file() and not list(run.glob(".*.tmp"))
    # the accuracy logged in training is what evaluate_dataset reports for the same weights
    trained = T.load_trained(run / "checkpoint.pt")
    assert trained.config.cifar_stem
    assert mobilenets.load_pretrained(run / "checkpoint.pt").forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4
    result = evaluate_dataset(trained, tiny, split="val", progress=False)
    assert result["images"] == 18 and result["top1"] == pytest.approx(metrics[-1]["val_top1"], abs=100 / 18 + 1e-9)
    assert result["top5"] == 100.0


def test_cli_train_and_resume_with_stored_options(tiny, tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train", "--data", str(tiny), "--out", str(run), "--width", "0.25", "--epochs", "1", "--batch-size", "12",
            "--device", "cpu", "--no-progress", "--no-tensorboard", "--json", "--threads", "1"]
    assert cli_main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["epochs"] == 1
    assert cli_main(["train", "--out", str(run), "--resume", "--json"]) == 0  # finished: nothing to do
    assert cli_main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "not extended" in capsys.readouterr().err


@pytest.mark.parametrize("args,fragment", [
    (["--batch-size", "7", "--accum-steps", "2"], "must be divisible by processes × accumulation steps"),
    (["--batch-size", "1000"], "larger than the training set"),
    (["--num-classes", "2"], "fewer than the 3 class folders"),
    (["--amp", "fp16"], "needs --device cuda"),
    (["--sync-bn"], "needs --device cuda"),
    (["--freeze-epochs", "1"], "give the weights with --init"),
    (["--lr", "0"], "--lr must be a number > 0"),
    (["--ema", "1.5"], "--ema must be a number ≥ 0 and < 1"),
    (["--recipe", "fast"], "invalid choice: 'fast'"),
    (["--width", "0.5", "--init", "/no/such/file.pt"], "no such weights file"),
])
def test_cli_errors(tiny, tmp_path, capsys, args, fragment):
    base = ["train", "--data", str(tiny), "--out", str(tmp_path / "e"), "--width", "0.25", "--epochs", "1",
            "--device", "cpu", "--no-progress"]
    if "--batch-size" not in args:
        base += ["--batch-size", "12"]
    assert cli_main(base + args) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_bad_data_through_the_cli(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert cli_main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    assert "no class folders and no images" in capsys.readouterr().err


def test_unreadable_training_image_is_skipped_and_counted(tmp_path, cache_env, capsys):
    data = make_folder(tmp_path / "d")
    (data / "train" / "class2" / "zz_broken.png").write_bytes(b"garbage")
    summaries = {loader: quick(data, tmp_path / loader, loader=loader, epochs=1, workers=0)
                 for loader in ("tensor", "folder")}
    assert all(s["status"] == "finished" for s in summaries.values())
    assert summaries["tensor"]["unreadable_images"] == 1  # decoded up front: always found
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "zz_broken.png" in err
    folder_metrics = read_metrics(tmp_path / "folder")
    assert folder_metrics[0]["skipped_images"] in (0, 1)  # only if the broken file fell in a used batch


# ----------------------------------------------------------------------------- resumption, signals, divergence

class _SignalAt(ClassificationTask):
    """Classification whose loss sends this process SIGTERM at its n-th call (a preemption mid-epoch)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def criterion(self, logits, y):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().criterion(logits, y)


@pytest.mark.parametrize("loader,ema", [("tensor", 0.0), ("folder", 0.9)])
def test_sigterm_mid_epoch_then_resume_is_exact(tiny, tmp_path, loader, ema):
    common = dict(loader=loader, ema=ema, workers=0, epochs=3)
    quick(tiny, tmp_path / "ref", **common)
    stopped = quick(tiny, tmp_path / "cut", task=_SignalAt(at=5), **common)  # step 2 of epoch 2
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step_in_epoch"], ck["status"]) == (1, 2, "interrupted")
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = quick(tiny, tmp_path / "cut", resume=True, **common)
    assert resumed["status"] == "finished"
    assert strip_times(read_metrics(tmp_path / "cut")) == strip_times(read_metrics(tmp_path / "ref"))
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_qat_run_resumes_exactly_and_its_int8_export_keeps_the_simulated_accuracy(tiny, tmp_path):
    """--qat: fake-quantized training that checkpoints, resumes bit-for-bit (ranges included, with
    EMA), saves plain float weights, and whose int8 ONNX export predicts what training simulated."""
    from mobilenets.quant import enable_fake_quant, load_fake_quant_ranges

    common = dict(qat=True, ema=0.9, epochs=3)
    quick(tiny, tmp_path / "ref", **common)
    assert quick(tiny, tmp_path / "cut", task=_SignalAt(at=5), **common)["status"] == "interrupted"
    quick(tiny, tmp_path / "cut", resume=True, **common)
    assert strip_times(read_metrics(tmp_path / "cut")) == strip_times(read_metrics(tmp_path / "ref"))
    ck = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    assert ck["settings"]["qat"] and set(ck["qat_ranges"]) and all(v > 0 for v in ck["qat_ranges"].values())

    model = load_pretrained(tmp_path / "ref" / "checkpoint.pt")  # plain float MobileNetV1
    assert type(model.features[0].conv) is torch.nn.Conv2d
    simulated = enable_fake_quant(load_pretrained(tmp_path / "ref" / "checkpoint.pt")).eval()
    load_fake_quant_ranges(simulated, ck["qat_ranges"])
    torch.manual_seed(0)
    x = torch.rand(32, 3, 32, 32) * 2 - 1
    pytest.importorskip("onnxruntime")
    report = mobilenets.export(model, "onnx", tmp_path / "q.onnx", int8=True, calibration=x, calibration_images=32)
    from mobilenets.deploy import open_runtime

    int8 = open_runtime(report.path, "onnx", precision="int8").run_all(x.numpy())
    with torch.no_grad():
        sim = simulated(x).numpy()
        assert not torch.allclose(torch.from_numpy(sim), model.eval()(x))  # the simulation really rounds
    assert float((int8.argmax(1) == sim.argmax(1)).mean()) >= 0.9
    # the logged validation accuracy is the int8-simulated model's, not the float one's
    assert evaluate_dataset(simulated, tiny, progress=False)["top1"] == pytest.approx(
        read_metrics(tmp_path / "ref")[-1]["val_top1"])
    with pytest.raises(ValueError, match="--resume: qat differs"):
        state = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
        state["status"] = "running"
        torch.save(state, tmp_path / "ref" / "checkpoint.pt")
        quick(tiny, tmp_path / "ref", ema=0.9, epochs=3, resume=True)


def test_resume_refuses_changed_options(tiny, tmp_path):
    quick(tiny, tmp_path / "r", epochs=2, subset=None)
    ck = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    state["status"] = "running"  # pretend it was cut short
    torch.save(state, ck)
    with pytest.raises(ValueError, match="--resume: lr differs"):
        quick(tiny, tmp_path / "r", epochs=2, resume=True, lr=0.5)


@pytest.mark.parametrize("change,fragment", [
    ({"data": "other"}, "--resume: data differs"),
    ({"subset": 30}, "--resume: subset differs"),
    ({"val_subset": 9}, "--resume: val_subset differs"),
    ({"seed": 1}, "--resume: seed differs"),
    ({"width": 0.5}, "--resume: model differs"),
])
def test_resume_refuses_other_data_subsets_seed_or_model(tiny, tmp_path, change, fragment):
    quick(tiny, tmp_path / "r", epochs=1)
    ck = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    state["status"] = "running"  # pretend it was cut short
    torch.save(state, ck)
    if change.get("data") == "other":
        change = {"data": make_folder(tmp_path / "other", seed=1)}  # the same classes, other images
    with pytest.raises(ValueError, match=fragment) as e:
        quick(change.get("data", tiny), tmp_path / "r", epochs=1, resume=True,
              **{k: v for k, v in change.items() if k != "data"})
    message = str(e.value)
    assert len(message.splitlines()) == 1 and " there, " in message and " now)" in message
    if "data" in change:
        assert f"{str(tiny)!r} there, {str(change['data'])!r} now" in message


def test_resume_of_a_finished_run_refuses_a_changed_width_or_data(tiny, tmp_path):
    quick(tiny, tmp_path / "f", epochs=1)
    assert quick(tiny, tmp_path / "f", epochs=1, resume=True)["status"] == "finished"  # same options: nothing to do
    with pytest.raises(ValueError, match=r"--resume: width differs .*\(0.25 there, 0.5 now\)"):
        quick(tiny, tmp_path / "f", epochs=1, resume=True, width=0.5)
    with pytest.raises(ValueError, match="--resume: data differs"):
        quick(make_folder(tmp_path / "other", seed=1), tmp_path / "f", epochs=1, resume=True)


def test_run_settings_are_the_one_list_of_settings(tiny, tmp_path):
    import dataclasses

    from mobilenets.train.settings import IDENTITY, RUN_OPTIONS, RunSettings

    summary = quick(tiny, tmp_path / "s", epochs=1)
    stored = summary["settings"]
    settings = RunSettings.from_dict(stored)
    assert settings.to_dict() == stored and settings["lr"] == settings.lr
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0
    assert {"model", "data", "seed", "subset", "val_subset", "qat", "task"} <= set(IDENTITY)
    assert not {"accum_steps", "world_size", "workers", "device"} & set(IDENTITY)
    # every option either resolves into a setting or only says where/how to run
    sources = {o for f in dataclasses.fields(RunSettings) for o in f.metadata["options"]}
    options = {f.name for f in dataclasses.fields(T.TrainConfig)}
    assert options - sources - set(RUN_OPTIONS) == {"loader"}  # resolves to ``mode`` ("auto": either)
    assert sources <= options
    # a checkpoint from before a setting existed reads as its legacy value
    old = {k: v for k, v in stored.items() if k != "task"}
    assert RunSettings.from_dict(old).task == "classification"


class _NanAt(ClassificationTask):
    """Classification whose loss turns NaN from its n-th call on."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def criterion(self, logits, y):
        self.calls += 1
        out = super().criterion(logits, y)
        return out * float("nan") if self.calls >= self.at else out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    with pytest.raises(T.TrainingDiverged, match=r"NaN or infinite in epoch 2.*holds the last good state \(epoch 1\)"):
        quick(tiny, tmp_path / "nan", task=_NanAt(at=5), epochs=3)  # in epoch 2
    model = load_pretrained(tmp_path / "nan" / "checkpoint.pt")
    assert model.pretrained_cfg.extra["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(read_metrics(tmp_path / "nan")) == 1
    # and through the CLI: exit status 1, one line
    # the CLI builds the default task: make every ClassificationTask's loss NaN
    real = ClassificationTask.criterion
    monkeypatch.setattr(ClassificationTask, "criterion", lambda self, logits, y: real(self, logits, y) * float("nan"))
    code = cli_main(["train", "--data", str(tiny), "--out", str(tmp_path / "nan2"), "--width", "0.25", "--epochs",
                     "1", "--batch-size", "12", "--device", "cpu", "--no-progress", "--quiet", "--threads", "1"])
    assert code == 1


# ----------------------------------------------------------------------------- fine-tuning

def test_init_takes_the_files_architecture_and_freezes_the_body(tiny, tmp_path):
    foreign = MobileNetV1(MobileNetConfig(width_multiplier=0.25, activation="relu6", tf_padding=True, bn_eps=1e-3,
                                          num_classes=7))
    path = tmp_path / "foreign.pt"
    save_checkpoint(path, foreign)
    summary = quick(tiny, tmp_path / "ft", init=str(path), epochs=1, freeze_epochs=1, width=None)
    cfg = summary["config"]
    assert (cfg["activation"], cfg["tf_padding"], cfg["bn_eps"], cfg["num_classes"]) == ("relu6", True, 1e-3, 3)
    tuned = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)["model"]
    for k, v in foreign.named_parameters():
        if k.startswith("features.") and k.endswith("conv.weight"):
            assert torch.equal(tuned[k], v), k  # frozen (BatchNorm is re-expressed in the new data's statistics)
    assert not torch.equal(tuned["features.1.dw.bn.running_mean"], foreign.features[1].dw.bn.running_mean)
    assert tuned["classifier.weight"].shape == (3, 256)
    with pytest.raises(ValueError, match="holds α=0.25 weights but --width 0.5"):
        quick(tiny, tmp_path / "ft2", init=str(path), width=0.5)


def test_recalibrated_batchnorm_computes_the_same_in_both_modes():
    torch.manual_seed(0)
    model = T.build_model(MobileNetConfig(width_multiplier=0.25, num_classes=5, bn_eps=1e-3), cifar_stem=True)
    for m in model.modules():  # BatchNorm folded away, as in a TFLite file: identity BNs with a bias
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)
            m.bias.data.uniform_(-1, 1)
    x = torch.randn(64, 3, 32, 32)
    before = model.eval()(x)
    recalibrate_batchnorm(model, [x[:32], x[32:]])
    torch.testing.assert_close(model.eval()(x), before, rtol=1e-4, atol=1e-4)  # same function
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), before, rtol=1e-2, atol=1e-2)  # batch statistics agree


@pytest.mark.slow
@pytest.mark.data
def test_fine_tune_the_official_tflite_model_on_cifar10(tmp_path):
    archive = need_data("cifar10-jpeg.tar.gz")
    weights = need_data("tflite", "mobilenet_v1_0.5_160_quant.tflite")
    summary = quick(archive, tmp_path / "ft", init=str(weights), width=None, epochs=2, freeze_epochs=1,
                    batch_size=50, subset=300, val_subset=200, lr=0.01)
    cfg = summary["config"]
    assert (cfg["width_multiplier"], cfg["activation"], cfg["tf_padding"]) == (0.5, "relu6", True)
    assert cfg["num_classes"] == 10
    metrics = read_metrics(tmp_path / "ft")
    assert all(m["train_loss"] < 2.5 for m in metrics)  # no blow-up when the body is unfrozen
    assert summary["val_top1"] > 30.0  # from scratch, 300 images give about chance


# ----------------------------------------------------------------------------- subprocesses: SIGKILL, SIGTERM

def _cmd(data, out, *extra):
    return [sys.executable, "-m", "mobilenets", "train", "--data", str(data), "--out", str(out),
            "--width", "0.25", "--epochs", "3", "--batch-size", "25", "--device", "cpu", "--no-progress",
            "--no-tensorboard", "--seed", "7", "--threads", "1", *extra]


def _wait_for_epoch(run, proc, epoch, timeout=120):
    deadline = time.time() + timeout
    path = Path(run) / "metrics.jsonl"
    while time.time() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= epoch:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("training too slow")


@pytest.fixture(scope="module")
def medium(tmp_path_factory, cache_env):
    """Enough images that an epoch lasts a second or more on a small CPU."""
    return make_folder(tmp_path_factory.mktemp("medium") / "data", per_class=80, classes=4, val_per_class=20)


@pytest.fixture(scope="module")
def reference_run(medium, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(_cmd(medium, out), check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.slow
def test_sigkill_in_epoch_2_then_resume_equals_uninterrupted(medium, reference_run, tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(medium, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epoch(run, proc, 1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step_in_epoch"] == 0  # killed inside epoch 2
    assert len(read_metrics(run)) == 1
    done = subprocess.run([sys.executable, "-m", "mobilenets", "train", "--out", str(run), "--resume",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "epoch 2" in done.stderr
    assert strip_times(read_metrics(run)) == strip_times(read_metrics(reference_run))
    a, b = (json.loads((r / "summary.json").read_text()) for r in (reference_run, run))
    assert (a["val_top1"], a["val_top5"], a["train_loss"]) == (b["val_top1"], b["val_top5"], b["train_loss"])


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes_exactly(medium, reference_run, tmp_path):
    run = tmp_path / "term"
    proc = subprocess.Popen(_cmd(medium, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(run, proc, 1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["status"] == "interrupted" and (ck["epoch"], ck["step_in_epoch"] > 0) in ((1, True), (2, False))
    load_pretrained(run / "checkpoint.pt")  # a mid-epoch checkpoint is a valid weights file too
    done = subprocess.run([sys.executable, "-m", "mobilenets", "train", "--out", str(run), "--resume",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert strip_times(read_metrics(run)) == strip_times(read_metrics(reference_run))


# ----------------------------------------------------------------------------- DDP

@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, cache_env):
    data = make_folder(tmp_path / "d", per_class=40, classes=4, val_per_class=10)
    common = ["--width", "0.25", "--epochs", "2", "--batch-size", "40", "--device", "cpu", "--no-progress",
              "--no-tensorboard", "--seed", "3", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mobilenets", "train", "--data", str(data), "--out",
                          str(tmp_path / "one"), "--accum-steps", "2", *common],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "mobilenets", "train", "--data", str(data), "--out", str(tmp_path / "two"),
                          *common], capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("one", "two"))
    assert s2["settings"]["world_size"] == 2 and s2["settings"]["world_batch"] == 20
    assert s1["settings"]["world_batch"] == 40 and s1["settings"]["accum_steps"] == 2
    # Same samples, augmentation, dropout masks and micro-batches: the same gradients, so the
    # training losses agree to rounding. BatchNorm running statistics (used only to evaluate)
    # differ: one process updates them per micro-batch, DDP keeps rank 0's.
    for a, b in zip(read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["train_top1"] == pytest.approx(b["train_top1"], abs=1.0)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=0.05)
    assert abs(s1["val_top1"] - s2["val_top1"]) <= 10.0
    assert len(read_metrics(tmp_path / "two")) == 2  # rank 0 alone writes


# ----------------------------------------------------------------------------- real CIFAR-10

@pytest.mark.slow
@pytest.mark.data
def test_learns_cifar10_subset(tmp_path, cache_env):
    archive = need_data("cifar10-jpeg.tar.gz")
    summary = quick(archive, tmp_path / "c10", epochs=4, batch_size=50, subset=1000, val_subset=500)
    metrics = read_metrics(tmp_path / "c10")
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.1
    assert summary["val_top1"] > 16.0  # chance is 10%
    assert summary["settings"]["mode"] == "tensor" and summary["settings"]["cifar_stem"]
    trained = T.load_trained(tmp_path / "c10" / "best.pt")
    result = evaluate_dataset(trained, archive, split="test", subset=500, progress=False)
    assert result["images"] == 500 and result["top1"] == pytest.approx(summary["best_val_top1"], abs=0.5)
