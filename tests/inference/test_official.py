"""Google's official TFLite files through the public API and the CLI (needs ../shared/data)."""

import json

import pytest
from conftest import need_data

import mobilenets
from mobilenets.cli import main

pytest.importorskip("tflite", reason="reading TFLite files needs the 'tflite' package: pip install '.[test]'")
pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def quant_file():
    return need_data("tflite", "mobilenet_v1_0.5_160_quant.tflite")


def test_load_pretrained_reads_config_from_file(quant_file):
    model = mobilenets.load_pretrained(quant_file)
    c = model.config
    assert (c.width_multiplier, c.resolution, c.num_classes, c.activation, c.tf_padding) == (0.5, 160, 1001, "relu6", True)
    info = model.pretrained_cfg
    assert info.format == "tflite" and info.quantized and info.has_background_class
    assert info.input_quantization == (0.0078125, 128)
    assert info.published is not None and info.published.quant_top1 == 57.7  # TF-slim's figure for this file
    assert info.preprocess["crop"] == 0.875 and info.config == model.config
    with pytest.raises(ValueError, match="holds α=0.5 weights, but α=0.25"):
        mobilenets.load_pretrained(quant_file, width_multiplier=0.25)


def test_predict_cli_json(quant_file, capsys):
    cat = need_data("tflite", "cat.bmp")
    hopper = need_data("tflite", "grace_hopper.bmp")
    assert main(["predict", str(cat), str(hopper), "--weights", str(quant_file), "--json", "--top", "5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [l["image"] for l in lines] == [str(cat), str(hopper)]
    cat_top = lines[0]["top"][0]
    assert cat_top["label"] == "Egyptian cat" and cat_top["index"] == 286  # index in the 1001-way output
    hopper_labels = [t["label"] for t in lines[1]["top"]]
    # This 0.5-160 model (and LiteRT running it: mortarboard 113/256, academic gown 84/256,
    # military uniform 17/256) sees the cap and gown first; "military uniform" is third.
    assert set(hopper_labels[:2]) == {"academic gown", "mortarboard"}
    assert "military uniform" in hopper_labels[:3]


def test_evaluate_on_sample_images(quant_file, capsys):
    sample = need_data("imagenet-sample")
    assert main(["evaluate", str(sample), "--weights", str(quant_file), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 100
    # Training-set images (see the data README): not a validation estimate, but a wrong label
    # mapping or preprocessing would collapse this far below the model's 57.7% val top-1.
    assert result["top1"] >= 65 and result["top5"] >= 85


def test_embedding_extractor_loads_as_body():
    model = mobilenets.load_pretrained(need_data("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    assert model.num_classes == 0 and model.config.width_multiplier == 1.0 and model.resolution == 224
    clf = mobilenets.Classifier(model)
    emb = model(clf.preprocess(need_data("tflite", "parrot.jpg"))[None])
    assert emb.shape == (1, 1024)
