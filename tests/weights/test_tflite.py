"""TFLite MobileNet V1 reader: structure found in the file, weights checked against LiteRT.

The real files live in ../shared/data/tflite (tests skip without them). LiteRT
(``ai-edge-litert``) runs the same files as the reference; the tests that need it skip
when it is not installed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import need_data

pytest.importorskip("tflite", reason="the TFLite reader needs the 'tflite' package: pip install tflite")

from mobilenets.config import MobileNetConfig  # noqa: E402
from mobilenets.data import load_image, quantize_input, tf_slim_preprocess  # noqa: E402
from mobilenets.models import MobileNetV1  # noqa: E402
from mobilenets.weights.tflite import load_tflite, match_mobilenet_v1  # noqa: E402
from mobilenets.weights.tflite_graph import TensorInfo, TFLiteGraph, dequantize, is_tflite, read_tflite_graph  # noqa: E402

pytestmark = pytest.mark.data

QUANT_160 = ("tflite", "mobilenet_v1_0.5_160_quant.tflite")
EMBEDDER = ("tflite", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")


def _litert():
    return pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="LiteRT is the reference runtime for these checks: pip install ai-edge-litert",
    )


def _simple_uint8(path: Path, size: int) -> np.ndarray:
    """TF-slim's eval preprocessing, then the uint8 values the file's input quantization
    ((q - 128) / 128) implies: the exact input LiteRT and our model both get."""
    x = tf_slim_preprocess(load_image(path), size)
    return quantize_input(x, 1 / 128, 128).permute(1, 2, 0).numpy()


def _sample_images(size: int, step: int = 1) -> np.ndarray:
    files = sorted(need_data("imagenet-sample").glob("*.JPEG"))[::step]
    if not files:
        pytest.skip("no *.JPEG images in the imagenet-sample folder")
    return np.stack([_simple_uint8(p, size) for p in files])


def _to_float_nchw(images: np.ndarray, quant: tuple[float, int]) -> torch.Tensor:
    """The float input that the uint8 input stands for: (q − zero_point) × scale."""
    scale, zero_point = quant
    x = (images.astype(np.float32) - zero_point) * scale
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _run_litert(path: Path, images: np.ndarray) -> np.ndarray:
    interp = _litert().Interpreter(model_path=str(path), num_threads=2)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for image in images:
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(results)


def _loaded(parts: tuple[str, str]) -> tuple[MobileNetV1, dict]:
    config, state, info = load_tflite(need_data(*parts))
    model = MobileNetV1(config).eval()
    model.load_state_dict(state, strict=True)
    return model, info


@pytest.fixture(scope="module")
def quant_graph() -> TFLiteGraph:
    return read_tflite_graph(need_data(*QUANT_160))


# ---------------------------------------------------------------------------- loading


def test_quant_classifier_config_read_from_file() -> None:
    path = need_data(*QUANT_160)
    assert is_tflite(path)
    config, state, info = load_tflite(path)
    assert config.width_multiplier == 0.5
    assert config.resolution == 160
    assert config.num_classes == 1001
    assert config.activation == "relu6"
    assert config.tf_padding is True
    MobileNetV1(config).load_state_dict(state, strict=True)
    assert info["format"] == "tflite"
    assert info["quantized"] is True
    assert info["input_dtype"] == "uint8"
    assert info["input_quantization"] == (0.0078125, 128)
    assert info["has_background_class"] is True
    assert info["output"] == "probabilities"
    assert (info["num_classes"], info["width_multiplier"], info["resolution"]) == (1001, 0.5, 160)
    assert info["associated_files"] == ["imagenet_labels.txt"]  # Model Metadata's appended zip
    assert state["features.0.conv.weight"].shape == (16, 3, 3, 3)
    assert state["features.3.dw.conv.weight"].shape == (64, 1, 3, 3)
    assert state["classifier.weight"].shape == (1001, 512)
    # The folded BatchNorm is an exact identity plus bias.
    var = state["features.5.pw.bn.running_var"]
    assert torch.equal(torch.sqrt(var + config.bn_eps), torch.ones_like(var))
    assert torch.all(state["features.5.pw.bn.running_mean"] == 0)


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors:UserWarning")
def test_layer_by_layer_matches_litert(quant_graph: TFLiteGraph) -> None:
    """Each of our layers, fed LiteRT's (dequantized) input to that layer, reproduces
    LiteRT's uint8 output to within rounding: the weights and layouts are exact."""
    litert = _litert()
    path = need_data(*QUANT_160)
    model, _ = _loaded(QUANT_160)
    layout = match_mobilenet_v1(quant_graph, str(path))
    interp = litert.Interpreter(model_path=str(path), num_threads=2,
                                experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    interp.set_tensor(quant_graph.inputs[0], _simple_uint8(need_data("tflite", "grace_hopper.bmp"), 160)[None])
    interp.invoke()

    def value(i: int) -> np.ndarray:
        t = quant_graph.tensors[i]
        return (interp.get_tensor(i).astype(np.float32) - t.zero_point[0]) * t.scale[0]

    modules = dict(model.named_modules())
    convs = [op for op in quant_graph.ops if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == len(layout.convs) + 1  # + the logits conv
    for (key, _, _), op in zip(layout.convs, convs):
        x = torch.from_numpy(value(op.inputs[0])).permute(0, 3, 1, 2)
        with torch.no_grad():
            ours = modules[key](x).permute(0, 2, 3, 1).numpy()
        step = quant_graph.tensors[op.outputs[0]].scale[0]
        err = np.abs(ours - value(op.outputs[0])) / step
        assert err.max() <= 1.0 and err.mean() < 0.3, f"{key}: error {err.max():.2f} steps"
    logits_op = convs[-1]
    with torch.no_grad():
        ours = model.classifier(torch.from_numpy(value(logits_op.inputs[0]).reshape(1, -1))).numpy()
    step = quant_graph.tensors[logits_op.outputs[0]].scale[0]
    assert np.abs(ours - value(logits_op.outputs[0]).reshape(1, -1)).max() / step <= 1.0


def test_top1_agrees_with_litert_on_sample_images() -> None:
    path = need_data(*QUANT_160)
    model, info = _loaded(QUANT_160)
    images = _sample_images(160)
    lite = _run_litert(path, images).astype(np.int64)
    with torch.no_grad():
        ours = model(_to_float_nchw(images, info["input_quantization"])).numpy()
    agree, overlaps = 0, []
    for ref, mine in zip(lite, ours):
        tied_top = np.flatnonzero(ref == ref.max())  # uint8 scores can tie
        agree += int(mine.argmax() in tied_top)
        # LiteRT's top 5 is ambiguous when scores tie at its 5th value (most images: the
        # tail of a uint8 softmax is 1/256 or 0), so count ours as in it when it scores
        # at least that value. Without tie handling the mean overlap is about 4.1.
        fifth = np.sort(ref)[-5]
        overlaps.append(int(sum(ref[c] >= fifth for c in np.argsort(-mine)[:5])))
    assert agree >= 98 * len(images) // 100, f"top-1 agrees on {agree}/{len(images)}"
    assert np.mean(overlaps) >= 4.5, f"mean top-5 overlap {np.mean(overlaps):.2f}"


def test_embedding_extractor_matches_litert() -> None:
    path = need_data(*EMBEDDER)
    config, state, info = load_tflite(path)
    assert (config.width_multiplier, config.resolution, config.num_classes) == (1.0, 224, 0)
    assert info["output"] == "embedding" and info["has_background_class"] is False
    assert "classifier.weight" not in state
    model = MobileNetV1(config).eval()
    model.load_state_dict(state, strict=True)
    images = _sample_images(224, step=4)  # 25 images keep this at about a second
    scale, zero_point = info["output_quantization"]
    lite = (_run_litert(path, images).astype(np.float32) - zero_point) * scale
    with torch.no_grad():
        ours = model(_to_float_nchw(images, info["input_quantization"])).numpy()
    assert ours.shape == lite.shape == (len(images), 1024)
    cos = (ours * lite).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(lite, axis=1))
    assert cos.min() >= 0.99, f"cosine similarity min {cos.min():.4f}, mean {cos.mean():.4f}"


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("keep", [1000, 700_000, 1_360_000])
def test_truncated_file_is_rejected(tmp_path: Path, keep: int) -> None:
    """Cut in the weights or in the graph tables (which this file stores after the weights)."""
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(need_data(*QUANT_160).read_bytes()[:keep])
    assert is_tflite(cut)  # the header survives, the rest does not
    with pytest.raises(ValueError, match="truncated or not a TFLite model") as e:
        load_tflite(cut)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"TFL", np.random.default_rng(0).bytes(5000),
                                     b"PK\x03\x04" + bytes(200)])
def test_non_tflite_bytes_are_rejected(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "model.tflite"
    f.write_bytes(content)
    assert not is_tflite(f)
    with pytest.raises(ValueError, match="not a TFLite model"):
        load_tflite(f)


def test_random_bytes_behind_a_valid_header_are_rejected(tmp_path: Path) -> None:
    f = tmp_path / "model.tflite"
    f.write_bytes(b"\x10\x00\x00\x00TFL3" + np.random.default_rng(1).bytes(4000))
    with pytest.raises(ValueError, match="truncated or not a TFLite model"):
        load_tflite(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_tflite(tmp_path / "absent.tflite")


def _mutated_copy(tmp_path: Path, mutate) -> Path:
    """A real, valid TFLite file derived from the 0.5-160 model by ``mutate(ModelT)``."""
    pytest.importorskip("ai_edge_litert", reason="rewriting a .tflite needs ai-edge-litert's schema")
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(need_data(*QUANT_160).read_bytes(), 0)
    mutate(model)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = tmp_path / "mutated.tflite"
    out.write_bytes(bytes(builder.Output()))
    return out


def test_rewritten_file_loads_the_same(tmp_path: Path) -> None:
    """Control for the mutation tests: an unmodified round trip still loads."""
    config, state, _ = load_tflite(_mutated_copy(tmp_path, lambda m: None))
    ref_config, ref_state, _ = load_tflite(need_data(*QUANT_160))
    assert config == ref_config
    assert all(torch.equal(state[k], ref_state[k]) for k in ref_state)


def test_file_with_wrong_stride_is_not_mobilenet(tmp_path: Path) -> None:
    def stride2_on_conv2d_3(model) -> None:
        opts = model.subgraphs[0].operators[5].builtinOptions  # Conv2d_3_depthwise
        opts.strideH = opts.strideW = 2

    with pytest.raises(ValueError, match=r"not a MobileNet V1: operator 5 \(DEPTHWISE_CONV_2D.*"
                                         r"stride 2, expected 1") as e:
        load_tflite(_mutated_copy(tmp_path, stride2_on_conv2d_3))
    assert "\n" not in str(e.value)


def test_file_with_a_branch_is_not_mobilenet(tmp_path: Path) -> None:
    def skip_connection(model) -> None:
        ops = model.subgraphs[0].operators
        inputs = np.array(ops[3].inputs)  # the unpacked arrays are read-only
        inputs[0] = ops[0].outputs[0]  # Conv2d_2_depthwise now reads Conv2d_0's output
        ops[3].inputs = inputs

    with pytest.raises(ValueError, match="not a plain chain"):
        load_tflite(_mutated_copy(tmp_path, skip_connection))


# --------------------------------------------- structural checks on a parsed graph


def _with_op_options(graph: TFLiteGraph, index: int, **options) -> TFLiteGraph:
    ops = list(graph.ops)
    ops[index] = dataclasses.replace(ops[index], options={**ops[index].options, **options})
    return dataclasses.replace(graph, ops=tuple(ops))


def _with_tensor(graph: TFLiteGraph, index: int, **changes) -> TFLiteGraph:
    tensors = list(graph.tensors)
    tensors[index] = dataclasses.replace(tensors[index], **changes)
    return dataclasses.replace(graph, tensors=tuple(tensors))


def test_match_reads_the_parsed_graph(quant_graph: TFLiteGraph) -> None:
    layout = match_mobilenet_v1(quant_graph)
    assert layout.config == MobileNetConfig(width_multiplier=0.5, resolution=160, num_classes=1001,
                                            activation="relu6", tf_padding=True, bn_eps=1e-3)
    assert len(layout.convs) == 27 and layout.softmax
    assert layout.ops[-4:] == ("AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX")


def test_match_rejects_wrong_channel_count(quant_graph: TFLiteGraph) -> None:
    op = quant_graph.ops[4]  # Conv2d_2_pointwise: 128·0.5 = 64 filters
    w = quant_graph.tensors[op.inputs[1]]
    graph = _with_tensor(quant_graph, w.index, shape=(40,) + w.shape[1:], data=w.data[:40])
    with pytest.raises(ValueError, match="has 40 channels, expected 64 for α=0.5"):
        match_mobilenet_v1(graph, "m.tflite")


def test_match_rejects_wrong_activation_padding_and_pool(quant_graph: TFLiteGraph) -> None:
    # NONE is refused when the output range does not imply ReLU6 (here: a signed [-3, 3] range)
    out = quant_graph.tensors[quant_graph.ops[7].outputs[0]]
    signed = _with_tensor(_with_op_options(quant_graph, 7, activation="NONE"), out.index,
                          scale=(6.0 / 255,), zero_point=(128,))
    with pytest.raises(ValueError, match="fused activation NONE, expected RELU6 or RELU"):
        match_mobilenet_v1(signed)
    with pytest.raises(ValueError, match="VALID padding, expected SAME"):
        match_mobilenet_v1(_with_op_options(quant_graph, 1, padding="VALID"))
    with pytest.raises(ValueError, match="mix fused activations"):
        match_mobilenet_v1(_with_op_options(quant_graph, 9, activation="RELU"))
    with pytest.raises(ValueError, match="expected a global average pool"):
        match_mobilenet_v1(_with_op_options(quant_graph, 27, filter=(3, 3)))


def test_activation_none_with_a_0_to_6_output_range_is_relu6(quant_graph: TFLiteGraph) -> None:
    """Older exports (Google's SSD MobileNet file) fuse no activation and leave ReLU6 implicit in
    the quantized output range [0, 6]: such a classifier loads as ReLU6."""
    graph = quant_graph
    for op in graph.ops[:27]:
        out = graph.tensors[op.outputs[0]]
        assert abs(out.scale[0] * (255 - out.zero_point[0]) - 6.0) <= out.scale[0]  # the file's ranges are [0, 6]
        graph = _with_op_options(graph, op.index, activation="NONE")
    assert match_mobilenet_v1(graph).config == match_mobilenet_v1(quant_graph).config


def test_match_takes_relu_from_the_file(quant_graph: TFLiteGraph) -> None:
    graph = quant_graph
    for op in graph.ops[:27]:
        graph = _with_op_options(graph, op.index, activation="RELU")
    assert match_mobilenet_v1(graph).config.activation == "relu"


def test_match_rejects_a_cut_graph(quant_graph: TFLiteGraph) -> None:
    last = quant_graph.ops[20].outputs[0]
    graph = dataclasses.replace(quant_graph, ops=quant_graph.ops[:21], outputs=(last,))
    with pytest.raises(ValueError, match="ends after 21 layers"):
        match_mobilenet_v1(graph)


def test_match_rejects_wrong_op_type(quant_graph: TFLiteGraph) -> None:
    ops = list(quant_graph.ops)
    ops[3] = dataclasses.replace(ops[3], op="MAX_POOL_2D")
    with pytest.raises(ValueError, match=r"operator 3 is MAX_POOL_2D, expected DEPTHWISE_CONV_2D"):
        match_mobilenet_v1(dataclasses.replace(quant_graph, ops=tuple(ops)))


def test_match_rejects_non_square_input(quant_graph: TFLiteGraph) -> None:
    graph = _with_tensor(quant_graph, quant_graph.inputs[0], shape=(1, 160, 128, 3))
    with pytest.raises(ValueError, match=r"expected \[1, size, size, 3\]"):
        match_mobilenet_v1(graph)


# ---------------------------------------------------------------------- dequantize


def test_dequantize_per_tensor_and_per_channel() -> None:
    q = np.array([[0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    t = TensorInfo(0, "w", q.shape, "UINT8", q, scale=(0.5,), zero_point=(128,))
    np.testing.assert_array_equal(dequantize(t), (q.astype(np.float32) - 128) * 0.5)
    t = TensorInfo(0, "w", q.shape, "UINT8", q, scale=(0.5, 2.0), zero_point=(0, 10), axis=0)
    np.testing.assert_array_equal(dequantize(t), [[0, 64, 127.5], [0, 20, 40]])
    b = np.array([-3, 7], dtype=np.int32)
    t = TensorInfo(0, "b", b.shape, "INT32", b, scale=(0.25,), zero_point=(0,))
    np.testing.assert_array_equal(dequantize(t), [-0.75, 1.75])
    f = np.array([1.5, -2.0], dtype=np.float16)
    assert dequantize(TensorInfo(0, "f", f.shape, "FLOAT16", f)).dtype == np.float32
    with pytest.raises(ValueError, match="without quantization parameters"):
        dequantize(TensorInfo(0, "q", q.shape, "UINT8", q))
    with pytest.raises(ValueError, match="does not match dimension 1"):
        dequantize(TensorInfo(0, "w", q.shape, "UINT8", q, scale=(1.0, 1.0), axis=1))
