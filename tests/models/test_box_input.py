"""Box input channels of the stem (docs/design.md §2 "Tasks") and the config fields that set
them."""

from pathlib import Path

import pytest
import torch

from aehg.config import ConfigError, ModelConfig, load_config, task_box_channels
from aehg.models import StackedHourglass, build_model

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "configs" / "demo_graph.yaml"


def _tiny(**kw):
    return StackedHourglass(num_stacks=1, channels=8, depth=1, num_classes=3, embedding_dim=2,
                            tag_per_class=False, num_link_classes=2, **kw)


def test_stem_takes_image_plus_box_channels():
    torch.manual_seed(0)
    m = _tiny(box_channels=5).eval()
    assert m.stem[0].in_channels == 8
    assert len(m(torch.randn(1, 8, 16, 16))) == 1
    with pytest.raises(ValueError, match=r"expected shape \(B, 8, H, W\) \(3 image channels "
                                         r"\+ 5 box channels\), got \(1, 3, 16, 16\)"):
        m(torch.randn(1, 3, 16, 16))
    assert _tiny().stem[0].in_channels == 3  # default: image only
    with pytest.raises(ValueError, match="box_channels: expected >= 0"):
        _tiny(box_channels=-1)


def test_input_norm_none_undoes_only_the_image_channels():
    torch.manual_seed(0)
    raw = _tiny(box_channels=2, input_norm="none").eval()
    ref = _tiny(box_channels=2).eval()
    ref.load_state_dict(raw.state_dict())
    x = torch.randn(2, 5, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    undone = torch.cat([x[:, :3] * std + mean, x[:, 3:]], dim=1)
    with torch.no_grad():
        a, b = raw(x)[-1], ref(undone)[-1]
    torch.testing.assert_close(a.objects.heatmaps, b.objects.heatmaps)


def test_box_channels_follow_the_task():
    assert [task_box_channels(t, 4) for t in ("sgdet", "sgcls", "predcls")] == [0, 2, 6]
    for task, want in (("sgdet", 0), ("sgcls", 2), ("predcls", 6)):
        cfg = load_config(GRAPH, [f"data.task={task}"])
        assert cfg.model.box_channels == want
        assert build_model(cfg.model).stem[0].in_channels == 3 + want
    # A ModelConfig outside a Config (box_channels unset) sees the image only.
    assert build_model(ModelConfig(num_stacks=1, channels=8, depth=1)).stem[0].in_channels == 3


def test_task_and_box_channels_that_disagree_are_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"model.box_channels: data.task 'predcls' needs 2 \+ "
                                          r"model.num_classes = 6 .*got 0 \(a model without box "
                                          r"input channels"):
        load_config(GRAPH, ["data.task=predcls", "model.box_channels=0"])
    with pytest.raises(ConfigError, match=r"model.box_channels: data.task 'sgdet' needs none"):
        load_config(GRAPH, ["model.box_channels=2"])
    with pytest.raises(ConfigError, match="data.task: 'sgcls' needs data.kind 'relations'"):
        load_config(None, ["data.task=sgcls"])
    with pytest.raises(ConfigError, match="data.task"):
        load_config(GRAPH, ["data.task=detect"])
