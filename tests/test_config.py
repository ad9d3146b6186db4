import pytest

import mobilenets
from mobilenets import MobileNetConfig


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(width_multiplier=0), "width multiplier α must be a number > 0"),
    (dict(width_multiplier=-0.5), "width multiplier α must be a number > 0"),
    (dict(width_multiplier=float("nan")), "width multiplier α must be a number > 0"),
    (dict(width_multiplier="abc"), "width multiplier α must be a number > 0"),
    (dict(resolution=31), "resolution must be an integer of at least 32"),
    (dict(resolution=224.5), "resolution must be an integer of at least 32"),
    (dict(variant="deep"), "unknown variant 'deep'; choose one of: separable, conv, shallow"),
    (dict(activation="gelu"), "unknown activation 'gelu'"),
    (dict(num_classes=-1), "num_classes must be an integer"),
    (dict(output_stride=4), "output_stride must be one of 8, 16, 32"),
    (dict(dropout=1.0), "dropout must be a probability"),
])
def test_bad_config_raises_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        MobileNetConfig(**kwargs)
    builder_kwargs = {("width_multiplier" if k == "width_multiplier" else k): v for k, v in kwargs.items()}
    with pytest.raises(ValueError):
        mobilenets.mobilenet_v1(**builder_kwargs)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model name 'mobilenet_v9'"):
        mobilenets.create_model("mobilenet_v9")


def test_unknown_override():
    with pytest.raises(ValueError, match="unknown option"):
        mobilenets.create_model("mobilenet_v1_100_224", colour="red")


def test_roundtrip_and_label():
    c = MobileNetConfig(width_multiplier=0.75, resolution=160, variant="shallow")
    assert MobileNetConfig.from_dict(c.to_dict()) == c
    assert c.label == "0.75 Shallow MobileNet-160"
    assert c.depth(1024) == 768 and MobileNetConfig(width_multiplier=0.01).depth(32) == 8
