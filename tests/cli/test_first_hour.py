"""What a new user meets in the first hour, as the README's examples run: a file without a
classifier, a tiny image, training's defaults on a small folder, fine-tuning at another size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder, need_data
from PIL import Image

import mobilenets
from mobilenets.cli import build_parser, main
from mobilenets.inference import Classifier


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(root / "dot.png")
    torch.manual_seed(0)
    mobilenets.save_checkpoint(root / "emb.pt", mobilenets.mobilenet_v1(0.25, 0, resolution=64))
    mobilenets.save_checkpoint(root / "cls.pt", mobilenets.mobilenet_v1(0.25, 10, resolution=64))
    return root


def test_predict_with_a_file_without_a_classifier_prints_embeddings(images, capsys):
    assert main(["predict", str(images / "photo.png"), "--weights", str(images / "emb.pt")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "has no classifier (it outputs 256-d embeddings, not labels)" in err
    assert "mobilenets train --init" in err and "Traceback" not in err
    assert out.splitlines()[1].startswith("  256-d embedding, L2 norm ")
    assert main(["predict", str(images / "photo.png"), "--weights", str(images / "emb.pt"), "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(row) == {"image", "dim", "norm", "embedding"} and row["dim"] == len(row["embedding"]) == 256
    assert row["norm"] == pytest.approx(float(np.linalg.norm(row["embedding"])), rel=1e-5)


def test_classifier_api_without_a_classifier(images):
    classifier = Classifier(mobilenets.load_pretrained(images / "emb.pt"))
    with pytest.raises(ValueError, match="has no classifier: it outputs 256-d image embeddings.*embed"):
        classifier.predict([images / "photo.png"])
    (e,) = list(classifier.embed(images / "photo.png"))  # one path, not its characters
    assert len(e.embedding) == 256 and e.error is None


def test_googles_embedding_extractor(capsys):
    path = need_data("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    cat = need_data("tflite", "cat.bmp")
    assert main(["predict", str(cat), "--weights", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["dim"] == 1024 and "has no classifier" in err and "Traceback" not in err


def test_an_image_far_smaller_than_the_input_is_warned_about(images, capsys):
    assert main(["predict", str(images / "dot.png"), str(images / "photo.png"), "--weights",
                 str(images / "cls.pt"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2  # both answered
    warning = (f"mobilenets: warning: {images / 'dot.png'}: the image is 1×1 px, far smaller than the model's "
               "64-px input (enlarged 64×): its answer means little")
    assert err.splitlines() == [warning]


def test_train_help_says_the_resolution_default_is_the_images_size():
    train = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "train" in a.choices)
    help_text = next(a.help for a in train.choices["train"]._actions if a.dest == "resolution")
    assert "the images' own size" in help_text and "32 for CIFAR-10" in help_text and "default 224" not in help_text


def test_small_training_set_caps_the_recipes_batch_and_fine_tuning_says_the_stem_changed(tmp_path, capsys):
    """The cifar recipe's batch is 512; a 12-image folder (or --subset 6) trains in one batch of all of
    it, said in the first line; a 64-px file fine-tuned on 32-px images gets the small-input stem."""
    data = make_image_folder(tmp_path / "data", {"train": 6, "val": 2}, classes=2, size=32)
    torch.manual_seed(0)
    init = tmp_path / "init.pt"
    mobilenets.save_checkpoint(init, mobilenets.mobilenet_v1(0.25, 10, resolution=64))
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--init", str(init), "--subset", "6",
                 "--epochs", "1", "--threads", "1", "--no-progress", "--no-tensorboard", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    first = out.splitlines()[0]
    assert "global batch 6" in first and "the cifar recipe's batch 512 is capped at the training set's 6 images" in first
    assert f"the small-input stem is switched on for 32-px input (stride 1 in the stem and Conv2d_2): {init} was " \
           "made for 64 px without it" in first
    assert json.loads(out.splitlines()[-1])["status"] == "finished"
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stored["settings"]["batch_size"] == 6 and stored["settings"]["train_images"] == 6
