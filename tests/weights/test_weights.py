import pytest
import torch

import mobilenets
from mobilenets.weights import load_pretrained, read_weights, save_checkpoint


def _model(**kw):
    torch.manual_seed(0)
    m = mobilenets.mobilenet_v1(**{"width_multiplier": 0.25, "num_classes": 10, **kw}).eval()
    for mod in m.modules():  # non-trivial BN statistics so a wrong mapping shows
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("variant", ["separable", "shallow", "conv"])
def test_our_checkpoint_roundtrip(tmp_path, suffix, variant):
    m = _model(variant=variant, activation="relu6", tf_padding=True, resolution=96)
    path = tmp_path / f"w{suffix}"
    save_checkpoint(path, m)
    loaded = load_pretrained(path)
    assert loaded.config == m.config
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(loaded(x), m(x))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_plain_state_dict(tmp_path, suffix):
    m = _model(width_multiplier=0.75)
    path = tmp_path / f"plain{suffix}"
    if suffix == ".pth":
        torch.save(m.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    loaded = load_pretrained(path)
    assert loaded.config.width_multiplier == 0.75 and loaded.num_classes == 10
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), m(x))


def test_timm_state_dict(tmp_path):
    timm = pytest.importorskip("timm", reason="timm not installed (pip install '.[bench]')")
    torch.manual_seed(0)
    peer = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=10).eval()
    for mod in peer.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "timm.pth"
    torch.save(peer.state_dict(), path)
    ours = load_pretrained(path)
    assert ours.config.width_multiplier == 1.0 and ours.config.activation == "relu6"
    x = torch.randn(2, 3, 128, 128)
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-4, atol=1e-5)
    assert ours.pretrained_cfg.format == "timm"


def test_truncated_and_garbage_files(tmp_path):
    m = _model()
    good = tmp_path / "good.pt"
    save_checkpoint(good, m)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_pretrained(trunc)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, definitely not weights" * 10)
    with pytest.raises(ValueError, match="not a weights file"):
        load_pretrained(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty or truncated"):
        load_pretrained(empty)
    with pytest.raises(ValueError, match="no such weights file"):
        load_pretrained(tmp_path / "missing.pt")
    st = tmp_path / "t.safetensors"
    save_checkpoint(st, m)
    st_trunc = tmp_path / "t2.safetensors"
    st_trunc.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt safetensors"):
        load_pretrained(st_trunc)


def test_mismatches_are_named(tmp_path):
    m = _model()
    sd = m.state_dict()
    sd["features.5.pw.conv.weight"] = torch.zeros(70, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"features\.5\.pw\.conv\.weight has shape \(70, 64, 1, 1\)"):
        load_pretrained(path)
    del sd["features.5.pw.conv.weight"]
    torch.save(sd, path)
    with pytest.raises(ValueError, match="missing tensor features.5.pw.conv.weight"):
        load_pretrained(path)
    torch.save({"foo": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a MobileNet V1 state dict"):
        load_pretrained(path)
    good = tmp_path / "good.pt"
    save_checkpoint(good, m)
    with pytest.raises(ValueError, match=r"holds α=0.25 weights, but α=0.5 was asked for"):
        load_pretrained(good, width_multiplier=0.5)
    with pytest.raises(ValueError, match="has 10 classes, but 1000 were asked for"):
        load_pretrained(good, num_classes=1000)


def test_run_directory(tmp_path):
    m = _model()
    save_checkpoint(tmp_path / "checkpoint.pt", m, epoch=3)
    config, _, info = read_weights(tmp_path)
    assert config == m.config and info["epoch"] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without best.pt or checkpoint.pt"):
        read_weights(tmp_path / "empty")
