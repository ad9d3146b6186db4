import io

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import central_crop, dequantize_input, list_images, load_image
from mobilenets.data import quantize_input, resize_bilinear_legacy, tf_slim_preprocess

# Generated once with TensorFlow 2.21 (not needed to run this test):
#   img = tf.image.convert_image_dtype(arr, tf.float32); img = tf.image.central_crop(img, 0.875)
#   img = tf.compat.v1.image.resize_bilinear(img[None], [5, 5], align_corners=False)[0]; (img - 0.5) * 2
# for arr[i, j, c] = (37 i + 11 j + 53 c) % 256 of shape (11, 13, 3). Checked the same way on the 100
# ImageNet sample images at 160 and 224: max difference 3.6e-7.
TF_REFERENCE = [
    [[-1.00000000, -0.58431369, -0.16862738], [-0.77568626, -0.36000001, 0.05568635], [-0.55137253, -0.13568622, 0.27999997], [-0.32705885, 0.08862746, 0.50431383], [-0.10274506, 0.31294119, 0.72862756]],
    [[-0.36156857, 0.05411768, 0.46980405], [-0.13725483, 0.27843142, 0.69411778], [0.08705878, 0.50274515, 0.51686275], [0.31137264, 0.72705889, -0.86509800], [0.53568637, 0.54980397, -0.64078432]],
    [[0.27686286, 0.69254923, 0.30509794], [0.50117660, 0.11372542, -0.67529404], [0.72549033, -0.86666667, -0.45098037], [0.14666653, -0.64235294, -0.22666663], [-0.83372545, -0.41803920, -0.00235289]],
    [[-0.28941238, -0.67686260, -0.26117629], [-0.06509864, -0.45254892, -0.03686255], [-0.64392143, -0.22823513, 0.18745112], [-0.41960776, -0.00392145, 0.41176486], [-0.19529396, 0.22039223, 0.63607860]],
    [[-0.45411754, -0.03843129, 0.37725496], [-0.22980386, 0.18588245, 0.60156882], [-0.00549018, 0.41019619, 0.82588243], [0.21882355, 0.63450992, -0.55607879], [0.44313729, 0.85882366, -0.73333329]],
]


def _fixture_image():
    return np.fromfunction(lambda i, j, c: (i * 37 + j * 11 + c * 53) % 256, (11, 13, 3)).astype(np.uint8)


def test_matches_tensorflow_reference():
    ours = tf_slim_preprocess(_fixture_image(), 5).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, np.array(TF_REFERENCE, dtype=np.float32), atol=1e-6)


def test_legacy_resize_differs_from_half_pixel():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    legacy = resize_bilinear_legacy(x, 2, 2)
    assert legacy.tolist() == [[[0.0, 2.0], [8.0, 10.0]]]  # samples at 0 and 2: no half-pixel offset
    half = torch.nn.functional.interpolate(x[None], size=(2, 2), mode="bilinear", align_corners=False)[0]
    assert not torch.equal(legacy, half)


def test_central_crop_like_tf():
    a = np.zeros((224, 300, 3), np.uint8)
    assert central_crop(a, 0.875).shape == (196, 264, 3)  # int(224*0.0625)=14, int(300*0.0625)=18


def test_range_and_shape():
    x = tf_slim_preprocess(Image.new("RGB", (50, 40), (255, 0, 128)), 32)
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[0], torch.ones(32, 32)) and torch.allclose(x[1], -torch.ones(32, 32))


def test_quantize_roundtrip():
    x = torch.linspace(-1, 1, 11)
    q = quantize_input(x, 1 / 128, 128)
    assert q.dtype == torch.uint8 and int(q[0]) == 0 and int(q[-1]) == 255
    assert (dequantize_input(q, 1 / 128, 128) - x).abs().max() <= 1 / 128


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_modes_convert_to_rgb(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (10, 200, 30)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = img.convert("I;16")
    path = tmp_path / "x.png" if mode not in ("CMYK",) else tmp_path / "x.jpg"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_formats(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, format=fmt)
    assert load_image(path).size == (8, 8)


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        load_image(bad)
    trunc = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    trunc.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ValueError, match="truncated|not an image"):
        load_image(trunc)
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_list_images(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.jpg", "b.PNG", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["b.PNG", "1.jpg"] or \
        sorted(p.name for p in list_images([tmp_path])) == ["1.jpg", "b.PNG"]


def test_16_bit_png_is_scaled_to_8_bits_not_saturated(tmp_path):
    """PIL's convert("RGB") of a mode I;16 PNG clips every value above 255 (a white image);
    load_image and the in-archive decoder scale to 8 bits instead."""
    from PIL import Image

    from mobilenets.data import to_rgb8
    from mobilenets.data.tensor import _decode_bytes

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # a real 16-bit file, as PIL opens it
    got = np.asarray(load_image(path))
    want = np.round(ramp / 257.0).astype(np.uint8)
    assert got.shape == (64, 64, 3)
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 1], want)
    assert np.array_equal(np.asarray(_decode_bytes(path.read_bytes())), got)
    # a float image in [0, 1] and an 8-bit one are mapped the same way
    f = Image.fromarray((ramp / 65535.0).astype(np.float32), mode="F")
    assert np.abs(np.asarray(to_rgb8(f))[..., 0].astype(int) - want.astype(int)).max() <= 1
    gray = Image.fromarray(want, mode="L")
    assert np.array_equal(np.asarray(to_rgb8(gray))[..., 2], want)
