"""Recipes and the optimization pieces they name: schedules, weight-decay groups, optimizers, EMA."""

import pytest
import torch

import mobilenets.train.recipes as R
from mobilenets.config import MobileNetConfig
from mobilenets.models import MobileNetV1


def test_lr_schedules():
    f = lambda name, step, **kw: R.lr_factor(name, step, total_steps=100, steps_per_epoch=10, **kw)  # noqa: E731
    assert [f("exp", s) for s in (0, 24, 25, 50)] == [1.0, 1.0, 0.94, 0.94 ** 2]  # x0.94 every 2.5 epochs
    assert f("cosine", 0, warmup_steps=10) == pytest.approx(0.1) and f("cosine", 9, warmup_steps=10) == 1.0
    assert f("cosine", 10, warmup_steps=10) == 1.0 and f("cosine", 100, warmup_steps=10) == pytest.approx(0.0)
    assert f("onecycle", 0) == pytest.approx(1 / 25) and f("onecycle", 30) == pytest.approx(1.0)
    assert f("onecycle", 100) == pytest.approx(1 / 25 / 1e4) and f("constant", 77) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        f("linear", 0)


def test_weight_decay_skips_depthwise_bn_and_bias():
    model = MobileNetV1(MobileNetConfig(width_multiplier=0.25, num_classes=10))
    groups = R.param_groups(model, 4e-5, head=model.classifier)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            depthwise = module.groups == module.in_channels > 1
            assert (id(module.weight) in decayed) != depthwise, name
        if isinstance(module, torch.nn.BatchNorm2d):
            assert id(module.weight) not in decayed and id(module.bias) not in decayed
    assert id(model.classifier.weight) in decayed and id(model.classifier.bias) not in decayed
    head = [g for g in groups if g["head"]]
    assert {id(p) for g in head for p in g["params"]} == {id(model.classifier.weight), id(model.classifier.bias)}
    every = R.param_groups(model, 4e-5, wd_all=True)
    assert all(g["weight_decay"] == 4e-5 for g in every)
    assert sum(len(g["params"]) for g in every) == len(list(model.parameters()))


def test_paper_recipe_is_tf_slims_rmsprop():
    r = R.RECIPES["paper"]
    assert (r.optimizer, r.lr, r.lr_batch, r.decay_rate, r.decay_epochs, r.weight_decay) == \
        ("rmsprop", 0.045, 64, 0.94, 2.5, 4e-5)
    opt = R.make_optimizer("rmsprop", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1, momentum=0.9,
                           device=torch.device("cpu"))
    g = opt.param_groups[0]
    assert (g["alpha"], g["eps"], g["momentum"]) == (0.9, 1.0, 0.9)
    for recipe in R.RECIPES.values():
        assert len(recipe.source) > 80 and recipe.optimizer in R.OPTIMIZERS and recipe.schedule in R.SCHEDULES


def test_ema_ramps_up_and_copies_buffers_outside_the_state_dict():
    from mobilenets.quant import enable_fake_quant

    model = enable_fake_quant(MobileNetV1(MobileNetConfig(width_multiplier=0.25, resolution=32, num_classes=3)))
    ema = R.ModelEma(model, decay=0.99)
    model.train()(torch.randn(2, 3, 32, 32))  # sets the fake-quant ranges (non-persistent buffers)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    before = ema.module.classifier.weight.clone()
    ema.update(model)
    d = min(0.99, 2 / 11)  # the first update's ramped decay
    assert torch.allclose(ema.module.classifier.weight, d * before + (1 - d) * model.classifier.weight)
    assert torch.equal(ema.module.features[0].act.qat_max, model.features[0].act.qat_max)
    assert float(ema.module.features[0].act.qat_max) > 0
