import pytest
import torch
from torch import nn

from aehg.config import ConfigError, ModelConfig, load_config
from aehg.models import Hourglass, Residual, StackedHourglass, build_model
from aehg.models.layers import ConvBlock


def _small(**kw):
    args = dict(num_stacks=2, channels=16, depth=2)
    args.update(kw)
    return StackedHourglass(**args)


def test_residual_skip_only_when_channels_change():
    assert isinstance(Residual(8, 8).skip, torch.nn.Identity)
    assert isinstance(Residual(8, 16).skip, torch.nn.Conv2d)
    x = torch.randn(2, 8, 5, 7)
    assert Residual(8, 16)(x).shape == (2, 16, 5, 7)
    assert ConvBlock(8, 4)(x).shape == (2, 4, 5, 7)
    # The conv block has no normalisation layer (the original AE network).
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ConvBlock(8, 4).modules())


def test_hourglass_keeps_shape_and_grows_channels():
    hg = Hourglass(depth=3, channels=8, increase=4)
    assert hg(torch.randn(1, 8, 16, 16)).shape == (1, 8, 16, 16)
    # Innermost level works on channels + depth * increase.
    inner = hg.low2.low2.low2
    assert inner.body[2].in_channels == 8 + 3 * 4


def test_pose_config_output_shapes():
    model = _small(num_classes=17, embedding_dim=1)
    outs = model(torch.randn(2, 3, 64, 64))
    assert len(outs) == 2
    for o in outs:
        assert o.objects.heatmaps.shape == (2, 17, 16, 16)
        assert o.objects.tags.shape == (2, 17, 1, 16, 16)
        assert o.objects.sizes is None
        assert o.interactions is None


def test_graph_config_output_shapes():
    model = _small(num_stacks=3, num_classes=10, embedding_dim=8, tag_per_class=False,
                   num_link_classes=5, box_size=True)
    outs = model(torch.randn(1, 3, 64, 32))
    assert len(outs) == 3
    for o in outs:
        assert o.objects.heatmaps.shape == (1, 10, 16, 8)
        assert o.objects.tags.shape == (1, 1, 8, 16, 8)
        assert o.objects.sizes.shape == (1, 2, 16, 8)
        assert o.interactions.heatmaps.shape == (1, 5, 16, 8)
        assert o.interactions.src.shape == (1, 8, 16, 8)
        assert o.interactions.dst.shape == (1, 8, 16, 8)


@pytest.mark.parametrize("block", ["residual", "conv"])
def test_early_exit_equals_prefix_of_full_run(block):
    torch.manual_seed(0)
    model = _small(num_stacks=3, block=block, num_link_classes=2, box_size=True).eval()
    # Perturb the head weights so stacks differ visibly from their near-zero initialisation.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        for k in (1, 2):
            early = model(x, stacks=k)
            assert len(early) == k
            for a, b in zip(early, full[:k], strict=True):
                assert torch.equal(a.objects.heatmaps, b.objects.heatmaps)
                assert torch.equal(a.objects.tags, b.objects.tags)
                assert torch.equal(a.objects.sizes, b.objects.sizes)
                assert torch.equal(a.interactions.heatmaps, b.interactions.heatmaps)
                assert torch.equal(a.interactions.src, b.interactions.src)
                assert torch.equal(a.interactions.dst, b.interactions.dst)
        assert not torch.equal(full[0].objects.heatmaps, full[2].objects.heatmaps)


def test_every_parameter_gets_a_gradient_from_all_stacks():
    torch.manual_seed(0)
    model = _small(num_stacks=2, num_classes=3, embedding_dim=2, num_link_classes=2,
                   box_size=True)
    outs = model(torch.randn(2, 3, 32, 32))
    loss = sum(o.objects.heatmaps.square().mean() + o.objects.tags.square().mean()
               + o.objects.sizes.square().mean() + o.interactions.heatmaps.square().mean()
               + o.interactions.src.square().mean() + o.interactions.dst.square().mean()
               for o in outs)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_untrained_model_predicts_near_zero_heatmaps():
    torch.manual_seed(0)
    model = _small().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert outs[-1].objects.heatmaps.abs().max() < 0.05
    sig = _small(heatmap_activation="sigmoid").eval()
    with torch.no_grad():
        h = sig(torch.randn(1, 3, 64, 64))[-1].objects.heatmaps
    assert (h - 0.01).abs().max() < 0.01


def test_wrong_input_size_names_size_and_multiple():
    model = _small(depth=2)  # needs multiples of 4 * 2**2 = 16
    with pytest.raises(ValueError, match=r"40x64 is not a multiple of 16"):
        model(torch.randn(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"expected shape \(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="stacks"):
        model(torch.randn(1, 3, 64, 64), stacks=3)


def test_build_model_from_config():
    cfg = ModelConfig(num_stacks=1, channels=16, depth=2, num_classes=5, embedding_dim=2,
                      num_link_classes=3, box_size=True, tag_per_class=False)
    model = build_model(cfg)
    outs = model(torch.randn(1, 3, 32, 32))
    assert outs[0].objects.tags.shape == (1, 1, 2, 8, 8)
    assert outs[0].interactions.heatmaps.shape == (1, 3, 8, 8)
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model({"num_stacks": 1})


def test_ae_paper_network_parameter_count():
    # 4 stacks, 256 channels, increase 128, conv blocks, 17 heatmaps + 17 1-D tags: the
    # original AE network, about 138.9 M parameters (138.83 M with 34 output channels).
    with torch.device("meta"):
        model = StackedHourglass(num_stacks=4, channels=256, increase=128, block="conv",
                                 num_classes=17, embedding_dim=1)
    n = sum(p.numel() for p in model.parameters())
    assert 138.5e6 < n < 139.2e6


def test_light_stem_is_the_paper_stem_with_the_pool_moved_first():
    # Same parameters as the paper's stem, created in the same order: one seed gives both
    # models the same weights (and the default model the initialisation it had before the
    # option existed). The first block runs after the max-pool: rebuild that order by hand
    # from the paper model's own modules.
    torch.manual_seed(0)
    paper = StackedHourglass(num_stacks=1, channels=16, depth=2, num_classes=3).eval()
    torch.manual_seed(0)
    light = StackedHourglass(num_stacks=1, channels=16, depth=2, num_classes=3,
                             stem="light").eval()
    for p, q in zip(paper.parameters(), light.parameters(), strict=True):
        assert torch.equal(p, q)
    torch.manual_seed(0)  # the 7x7 conv is the first layer made, as before the option
    assert torch.equal(paper.stem[0].weight, nn.Conv2d(3, 16, 7, 2, 3, bias=False).weight)
    # The light stem's modules in order: conv, BN, ReLU, pool, block, block, block.
    s = paper.stem
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = s[6](s[5](s[3](nn.functional.max_pool2d(s[2](s[1](s[0](x))), 2))))
        assert torch.allclose(light.stem(x), want, atol=1e-6)
        # The paper's order gives another answer on the same weights.
        assert not torch.allclose(paper.stem(x), want, atol=1e-3)
        assert light(x)[0].objects.heatmaps.shape == paper(x)[0].objects.heatmaps.shape


def test_stem_kind_is_checked_and_reaches_the_model_from_the_config():
    with pytest.raises(ValueError, match="stem: expected 'paper' or 'light', got 'fast'"):
        StackedHourglass(num_stacks=1, channels=8, depth=1, stem="fast")
    with pytest.raises(ConfigError, match="model.stem"):
        load_config(None, ["model.stem=fast"])
    cfg = load_config(None, ["model.stem=light", "model.channels=8", "model.depth=1",
                             "model.num_stacks=1"])
    assert isinstance(build_model(cfg.model).stem[3], nn.MaxPool2d)
    assert isinstance(build_model(ModelConfig(channels=8, depth=1)).stem[4], nn.MaxPool2d)
