"""A model without tags (E = 0) for single-person pose, its heatmap-only loss, and the
``input_norm: none`` input of the hourglass code's released networks."""

from __future__ import annotations

import pytest
import torch

from aehg.config import LossConfig
from aehg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from aehg.models import MultiStackLoss, StackedHourglass


def _model(**kw):
    torch.manual_seed(0)
    return StackedHourglass(num_stacks=2, channels=16, depth=2, num_classes=16,
                            embedding_dim=0, **kw)


def test_no_tag_channels():
    model = _model()
    assert model.heads[0].out_channels == 16
    outs = model(torch.randn(2, 3, 32, 32))
    assert outs[-1].objects.heatmaps.shape == (2, 16, 8, 8)
    assert outs[-1].objects.tags.shape == (2, 16, 0, 8, 8)
    with pytest.raises(ValueError, match=r"embedding_dim: expected >= 1 \(or 0 without links: "
                                         r"num_link_classes = 0\), got 0 with num_link_classes 2"):
        StackedHourglass(num_classes=3, embedding_dim=0, num_link_classes=2)


def test_loss_is_the_heatmap_term_alone_without_parts():
    model = _model()
    outs = model(torch.randn(2, 3, 32, 32))
    target = torch.rand(2, 16, 8, 8)
    batch = {"heatmaps": target, "mask": torch.ones(2, 8, 8)}
    total, parts = MultiStackLoss(LossConfig())(outs, batch)
    want = sum(((o.objects.heatmaps - target) ** 2).mean() for o in outs)
    assert torch.allclose(total, want, rtol=1e-6, atol=0)
    assert set(parts) == {"stack0/heatmap", "stack1/heatmap", "heatmap", "total"}
    total.backward()


def test_input_norm_none_sees_rgb_in_unit_range():
    plain = _model()
    unit = _model(input_norm="none")
    unit.load_state_dict(plain.state_dict())  # the same keys: the buffers are not persistent
    assert set(unit.state_dict()) == set(plain.state_dict())
    rgb = torch.rand(1, 3, 32, 32)
    normalised = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = unit.eval()(normalised)[-1].objects.heatmaps
        want = plain.eval()(rgb)[-1].objects.heatmaps
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="input_norm: expected 'imagenet', or 'none' for RGB "
                                         "input"):
        StackedHourglass(in_channels=1, input_norm="none")
