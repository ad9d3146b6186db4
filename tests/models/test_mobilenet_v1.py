import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mobilenets
from mobilenets.layers import Conv2dSame, DepthwiseSeparable
from mobilenets.models import MOBILENET_V1_CONV_DEFS


def test_table1_as_data():
    defs = MOBILENET_V1_CONV_DEFS
    assert len(defs) == 14
    assert [d.channels for d in defs] == [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert [d.stride for d in defs] == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]  # last is s1 (paper typo)


@pytest.mark.parametrize("width,expected", [(1.0, 32), (0.75, 24), (0.5, 16), (0.25, 8), (0.1, 8)])
def test_channel_rule(width, expected):
    m = mobilenets.mobilenet_v1(width)
    assert m.features[0].conv.out_channels == expected
    assert m.num_features == max(int(1024 * width), 8)


@pytest.mark.parametrize("variant,n_layers,kind", [("separable", 14, DepthwiseSeparable),
                                                    ("conv", 14, nn.Sequential), ("shallow", 9, DepthwiseSeparable)])
@pytest.mark.parametrize("tf_padding", [False, True])
def test_variants_forward(variant, n_layers, kind, tf_padding):
    m = mobilenets.mobilenet_v1(0.25, 10, variant=variant, tf_padding=tf_padding).eval()
    assert len(m.features) == n_layers
    assert isinstance(m.features[1], kind)
    if variant == "conv":
        assert m.features[1].conv.groups == 1 and m.features[1].conv.kernel_size == (3, 3)
    out = m(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert m.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 256, 2, 2)


@pytest.mark.parametrize("name", mobilenets.list_models())
@pytest.mark.parametrize("tf_padding", [False, True])
def test_named_configs_forward(name, tf_padding):
    m = mobilenets.create_model(name, tf_padding=tf_padding).eval()
    r = m.resolution
    assert name.endswith(str(r))
    assert abs(m.config.width_multiplier * 100 - int(name.split("_")[2])) < 1e-9
    with torch.no_grad():
        assert m(torch.randn(1, 3, r, r)).shape == (1, 1000)
        assert m.forward_features(torch.randn(1, 3, r, r)).shape[-1] == r // 32


def test_list_models_and_overrides():
    names = mobilenets.list_models()
    assert len(names) == 16 and names[0] == "mobilenet_v1_100_224" and names[-1] == "mobilenet_v1_025_128"
    m = mobilenets.create_model("mobilenet_v1_050_160", num_classes=7, activation="relu6")
    assert m.num_classes == 7 and m.resolution == 160 and isinstance(m.features[0].act, nn.ReLU6)


@pytest.mark.parametrize("size", [32, 33, 57, 100, 224, 301])
def test_any_input_size(size):
    m = mobilenets.mobilenet_v1(0.25, 5).eval()
    assert m(torch.randn(1, 3, size, size)).shape == (1, 5)


def test_embeddings_without_classifier():
    m = mobilenets.mobilenet_v1(0.5, 0).eval()
    assert m(torch.randn(2, 3, 96, 96)).shape == (2, 512)


def test_tf_same_padding_is_asymmetric_at_stride_2():
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2, bias=False)
    ref = nn.Conv2d(3, 4, 3, stride=2, bias=False)
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(1, 3, 16, 16)  # even: TF pads 0 before, 1 after
    torch.testing.assert_close(conv(x), ref(F.pad(x, (0, 1, 0, 1))))
    x = torch.randn(1, 3, 15, 15)  # odd: symmetric 1/1
    torch.testing.assert_close(conv(x), ref(F.pad(x, (1, 1, 1, 1))))
    assert conv(torch.randn(1, 3, 224, 224)).shape[-1] == 112


def test_tf_padding_changes_outputs_but_not_shapes():
    torch.manual_seed(0)
    a = mobilenets.mobilenet_v1(0.25, 10).eval()
    b = mobilenets.mobilenet_v1(0.25, 10, tf_padding=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    fa, fb = a.forward_features(x), b.forward_features(x)
    assert fa.shape == fb.shape and a(x).shape == b(x).shape
    assert (fa - fb).abs().max() > 1e-3 * fa.abs().max()


def test_feature_maps_strides():
    m = mobilenets.mobilenet_v1(0.5, features_only=True).eval()
    maps = m(torch.randn(1, 3, 224, 224))
    assert [t.shape[1:] for t in maps] == [(128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert [i["stride"] for i in m.feature_info] == [8, 16, 32]
    assert [i["channels"] for i in m.feature_info] == [128, 256, 512]


@pytest.mark.parametrize("output_stride,final", [(16, 14), (8, 28)])
def test_output_stride_dilates(output_stride, final):
    m = mobilenets.mobilenet_v1(0.25, output_stride=output_stride).eval()
    assert m.forward_features(torch.randn(1, 3, 224, 224)).shape[-1] == final
    assert max(i["stride"] for i in m.feature_info) == output_stride
    dilations = {mod.dilation[0] for mod in m.modules() if isinstance(mod, nn.Conv2d)}
    assert max(dilations) == 32 // output_stride
    # Dilation keeps the receptive field: the same weights see the same context at stride 32.
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_channels_last_matches():
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.5, 10).eval()
    x = torch.randn(2, 3, 96, 96)
    ref = m(x)
    m_cl = m.to(memory_format=torch.channels_last)
    out = m_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tf_padding", [False, True])
def test_jit_trace_matches_without_tracer_warnings(tf_padding):
    import warnings

    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.25, 10, tf_padding=tf_padding).eval()
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(m, x)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    torch.testing.assert_close(traced(x), m(x))


def test_torch_export_matches():
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.25, 10, tf_padding=True).eval()
    x = torch.randn(1, 3, 64, 64)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


@pytest.mark.slow
def test_torch_compile_matches():
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.25, 10).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(m)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-5)


def test_onnx_export_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install '.[test]')")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install '.[test]')")
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(0.25, 10, tf_padding=True).eval()
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), m(x), rtol=1e-4, atol=1e-5)


def test_train_step_runs():
    m = mobilenets.mobilenet_v1(0.25, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_cifar_stem_keeps_weights_and_ends_at_4x4():
    m = mobilenets.mobilenet_v1(0.25, 10, cifar_stem=True)
    plain = mobilenets.mobilenet_v1(0.25, 10)
    assert [v.shape for v in m.state_dict().values()] == [v.shape for v in plain.state_dict().values()]
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4
    assert max(i["stride"] for i in m.feature_info) == 8
    assert mobilenets.cost(m, 32).mult_adds > 10 * mobilenets.cost(plain, 32).mult_adds


def test_bad_input_is_a_one_line_value_error_in_user_terms():
    m = mobilenets.mobilenet_v1(0.25, 10)
    with pytest.raises(ValueError, match="takes 3-channel images, got 1 channels"):
        m(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"takes a batch of images \(N, 3, H, W\), got a 3-D tensor"):
        m(torch.zeros(3, 64, 64))
    m.train()  # BatchNorm on a 1×1 map with one image: say so instead of PyTorch's internal error
    with pytest.raises(ValueError, match="a batch of 1 image of 32×32 px ends in a 1×1 map"):
        m(torch.zeros(1, 3, 32, 32))
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10) and m(torch.zeros(1, 3, 33, 33)).shape == (1, 10)
    with pytest.raises(ValueError, match="give the weights as a file path"):
        mobilenets.load_pretrained(None)
