import math

import pytest
import torch

from aehg.config import TrainConfig
from aehg.engine.optim import build_optimizer, build_scheduler, lr_factor


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_optimizers_and_decay_groups(name, cls):
    opt = build_optimizer(_model(), TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1))
    assert isinstance(opt, cls)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 4 for p in decay["params"])      # conv weights only
    assert all(p.ndim == 1 for p in no_decay["params"])   # biases and BN


def test_step_schedule_with_warmup():
    cfg = TrainConfig(scheduler="step", milestones=[2, 3], gamma=0.5, warmup_steps=4)
    f = [lr_factor(s, cfg, steps_per_epoch=10, total_steps=100) for s in range(40)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == f[19] == 1.0
    assert f[20] == f[29] == 0.5
    assert f[30] == 0.25


def test_cosine_schedule_hand_values():
    cfg = TrainConfig(scheduler="cosine", warmup_steps=0)
    assert lr_factor(0, cfg, 10, 100) == 1.0
    assert lr_factor(50, cfg, 10, 100) == pytest.approx(0.5)
    assert lr_factor(25, cfg, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(100, cfg, 10, 100) == pytest.approx(0.0)


def test_scheduler_applies_factor_per_step():
    cfg = TrainConfig(lr=1.0, scheduler="step", milestones=[1], gamma=0.1)
    opt = build_optimizer(_model(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=3, total_steps=9)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])


def test_cosine_follows_time_when_time_is_further_along():
    cfg = TrainConfig(scheduler="cosine", warmup_steps=2)
    assert lr_factor(1, cfg, 10, 100, time_fraction=0.9) == 1.0       # warm-up untouched
    assert lr_factor(2, cfg, 10, 100, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(2, cfg, 10, 100, time_fraction=2.0) == pytest.approx(0.0)
    # Steps further along than time: steps decide.
    assert lr_factor(51, cfg, 10, 100, time_fraction=0.0) == pytest.approx(0.5)
