"""The moving average of the weights: its update rule against a hand loop."""

import pytest
import torch
from torch import nn

from aehg.engine.ema import ModelEma


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())


def test_update_follows_the_warmed_up_decay_for_parameters_and_buffers():
    model = _model()
    ema = ModelEma(model, decay=0.8)
    # The reference in float64, from the starting state; the update is the plain formula.
    ref = {k: v.double().clone() for k, v in model.state_dict().items()}
    decays = []
    for t in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(4, 2, 5, 5))  # moves the batch-norm statistics
        d = min(0.8, (1 + t) / (10 + t))  # 0.1, 0.18, 0.25, ... capped at 0.8
        decays.append(ema.current_decay())
        ema.update(model)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                ref[k] = d * ref[k] + (1 - d) * v.double()
            else:
                ref[k] = v.double()
    assert decays == pytest.approx([min(0.8, (1 + t) / (10 + t)) for t in range(6)])
    assert ema.updates == 6
    got = ema.module.state_dict()
    assert got.keys() == ref.keys()
    for k, v in got.items():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # The batch count is copied, not averaged; and the average is not the model itself.
    assert int(got["1.num_batches_tracked"]) == 6
    assert not torch.allclose(got["0.weight"], model.state_dict()["0.weight"])


def test_average_is_a_frozen_copy_in_eval_mode():
    model = _model()
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert torch.equal(ema.module[0].weight, before)  # no shared storage


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_decay_out_of_range_is_an_error(decay):
    with pytest.raises(ValueError, match=r"EMA decay must be in \[0, 1\)"):
        ModelEma(_model(), decay)
