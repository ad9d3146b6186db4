import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from mobilenets import MobileNetConfig, cost
from mobilenets.analysis import PAPER_ROWS, reproduce, round_like
from mobilenets.models import MobileNetV1


@pytest.fixture(scope="module")
def rows():
    return reproduce()


def _row(rows, table, model):
    (r,) = [r for r in rows if r["table"] == table and r["model"] == model]
    return r


def independent_mult_adds(model: nn.Module, resolution: int) -> int:
    """PyTorch's own FLOP counter (2 FLOPs per multiply-accumulate for conv and matmul)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, model.config.in_chans, resolution, resolution, device=next(model.parameters()).device))
    return counter.get_total_flops() // 2


def test_every_row_matches_or_is_an_explained_erratum(rows):
    assert len(rows) == len(PAPER_ROWS) == 25  # Tables 2–9 (22 rows) and Table 13 (3 detectors)
    for r in rows:
        assert r["status"] in ("match", "erratum"), r
        if r["status"] == "erratum":
            assert r["note"] and "no explanation" not in r["note"]


@pytest.mark.parametrize("table,model,mult_adds,params", [
    (4, "MobileNet", "569", "4.2"),
    (5, "0.75 MobileNet", "325", "2.6"),
    (5, "Shallow MobileNet", "307", "2.9"),
    (6, "1.0 MobileNet-224", "569", "4.2"),
    (6, "0.75 MobileNet-224", "325", "2.6"),
    (6, "0.5 MobileNet-224", "149", "1.3"),
    (6, "0.25 MobileNet-224", "41", "0.5"),
    (7, "1.0 MobileNet-192", "418", "4.2"),
    (7, "1.0 MobileNet-128", "186", "4.2"),
    (3, "Convolution", "462", "2.36"),
    (3, "Depthwise Separable Conv", "52.3", "0.27"),
    (3, "α = 0.75", "29.6", "0.15"),
    (3, "ρ = 0.714", "15.1", "0.15"),
])
def test_rows_at_paper_precision(rows, table, model, mult_adds, params):
    r = _row(rows, table, model)
    assert r["ours_mult_adds_printed"] == mult_adds
    assert r["ours_params_printed"] == params


def test_table2_shares(rows):
    t2 = [r for r in rows if r["table"] == 2]
    got = {r["model"]: (r["ours_mult_adds_printed"], r["ours_params_printed"]) for r in t2}
    assert got == {"Conv 1 × 1": ("94.86", "74.59"), "Conv DW 3 × 3": ("3.06", "1.06"),
                   "Conv 3 × 3": ("1.91", "0.02"), "Fully Connected": ("0.18", "24.33")}
    assert abs(sum(r["ours_mult_adds"] for r in t2) - 100) < 1e-3
    assert abs(sum(r["ours_params"] for r in t2) - 100) < 1e-3
    # The paper's printed 1.19 cannot be right: with it the shares do not sum to 100%.
    assert abs(94.86 + 3.06 + 1.19 + 0.18 - 100) > 0.5 and abs(94.86 + 3.06 + 1.91 + 0.18 - 100) < 0.02


def test_table4_conv_mobilenet(rows):
    r = _row(rows, 4, "Conv MobileNet")
    assert r["ours_params_printed"] == "29.3"
    assert r["ours_mult_adds_printed"] == "4867"
    # The paper's 4866 is our exact count without the FC layer's 1.024 M Mult-Adds.
    report = cost(MobileNetConfig(variant="conv"))
    fc = sum(l.mult_adds for l in report.layers if l.type == "fc")
    assert fc == 1024 * 1000
    assert round_like((report.mult_adds - fc) / 1e6, "4866") == "4866"


@pytest.mark.parametrize("table,model,width,res,paper,tfslim", [
    (7, "1.0 MobileNet-160", 1.0, 160, "290", 291),
    (9, "0.50 MobileNet-160", 0.5, 160, "76", 77),
])
def test_rho_scaled_rows(rows, table, model, width, res, paper, tfslim):
    r = _row(rows, table, model)
    assert r["ours_mult_adds_printed"] == str(tfslim)  # exact count, as TF-slim's table prints it
    base = cost(MobileNetConfig(width_multiplier=width, resolution=224)).mult_adds / 1e6
    assert round_like(base * (res / 224) ** 2, paper) == paper  # how the paper got its figure
    if table == 9:
        assert r["ours_params_printed"] == "1.32"


def test_exact_totals_mobilenet_224():
    report = cost(mobilenets.mobilenet_v1())
    assert report.mult_adds == 568_740_352
    assert report.paper_params == 4_209_088  # conv + FC weights
    assert report.params == 4_231_976 == sum(p.numel() for p in mobilenets.mobilenet_v1().parameters())
    assert sum(l.params for l in report.layers) == report.params


def test_summary_layers_have_shapes():
    report = cost(mobilenets.mobilenet_v1(0.5, resolution=160))
    first = report.layers[0]
    assert (first.name, first.type, first.output_shape) == ("features.0.conv", "conv 3x3", [16, 80, 80])
    assert report.layers[-1].type == "fc" and report.layers[-1].output_shape == [1000]
    assert report.meta["resolution"] == 160


def test_agrees_with_flop_counter_on_real_model():
    model = mobilenets.mobilenet_v1(0.75, 10, resolution=128, variant="shallow")
    assert cost(model).mult_adds == independent_mult_adds(model, 128)


def test_meta_and_real_device_agree():
    real = cost(mobilenets.mobilenet_v1(0.5, resolution=96)).mult_adds
    with torch.device("meta"):
        meta_model = mobilenets.mobilenet_v1(0.5, resolution=96)
    assert cost(meta_model).mult_adds == real
    assert cost(MobileNetConfig(width_multiplier=0.5, resolution=96)).mult_adds == real
    assert cost("mobilenet_v1_050_160").mult_adds == cost(mobilenets.create_model("mobilenet_v1_050_160")).mult_adds


def test_counts_a_users_modified_model():
    model = mobilenets.mobilenet_v1(0.25, 10)
    before = cost(model, 64).mult_adds
    model.classifier = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    after = cost(model, 64)
    assert after.mult_adds == before - 256 * 10 + 256 * 128 + 128 * 10
    model.config = MobileNetConfig(width_multiplier=0.25, num_classes=10)
    assert after.mult_adds == independent_mult_adds(model, 64)


def test_cost_restores_training_mode():
    model = mobilenets.mobilenet_v1(0.25).train()
    cost(model, 64)
    assert model.training


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.floats(min_value=0.01, max_value=2.0, allow_nan=False),
       resolution=st.integers(min_value=32, max_value=512),
       variant=st.sampled_from(["separable", "conv", "shallow"]))
def test_property_matches_independent_count(width, resolution, variant):
    config = MobileNetConfig(width_multiplier=width, resolution=resolution, variant=variant)
    with torch.device("meta"):
        model = MobileNetV1(config)
    assert cost(model).mult_adds == independent_mult_adds(model, resolution)


@settings(max_examples=40, deadline=None)
@given(width=st.floats(min_value=0.25, max_value=2.0), resolution=st.sampled_from([64, 96, 128, 160, 192, 224, 320, 448, 512]))
def test_property_scales_as_alpha2_rho2(width, resolution):
    # Away from min_depth and with ρ a multiple of 32, the body's cost is ~α²ρ² (the linear
    # depthwise and first-layer terms make it a little more than α² at small α).
    base = cost(MobileNetConfig(num_classes=0)).mult_adds
    got = cost(MobileNetConfig(width_multiplier=width, resolution=resolution, num_classes=0)).mult_adds
    ratio = got / (base * width ** 2 * (resolution / 224) ** 2)
    assert 0.93 < ratio < 1.3
    # And exactly ρ² when only the resolution changes (multiples of 32 tile without remainder).
    same_width = cost(MobileNetConfig(width_multiplier=width, resolution=224, num_classes=0)).mult_adds
    assert got * 224 ** 2 == same_width * resolution ** 2


def test_table13_detector_costs_match_the_paper(rows):
    """SSD300 1.2 B / 6.8 M, Faster-RCNN 300 25.2 B / 6.1 M, 600 30.5 B / 6.1 M (α = 1)."""
    t13 = {r["model"]: r for r in rows if r["table"] == 13}
    assert set(t13) == {"SSD300 MobileNet", "Faster-RCNN 300 MobileNet", "Faster-RCNN 600 MobileNet"}
    for r in t13.values():
        assert r["status"] == "match", r
    assert abs(t13["SSD300 MobileNet"]["ours_mult_adds"] - 1.237) < 0.001
    assert abs(t13["SSD300 MobileNet"]["ours_params"] - 6.820) < 0.001


def test_cost_counts_every_sample_of_a_batched_call():
    """A detector's box head runs once per proposal: its Mult-Adds scale with the crops."""
    head = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)

    class TwoCrops(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def cost_forward(self, x):
            return self.head(x.repeat(2, 1, 1, 1))

    one = mobilenets.cost(head, 10, in_chans=8).mult_adds
    assert one == 10 * 10 * 16 * 8 * 9
    assert mobilenets.cost(TwoCrops(), 10, in_chans=8).mult_adds == 2 * one
