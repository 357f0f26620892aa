"""Weight converters: the released networks' exact keys and shapes, tensor by tensor, and the
converted aehg model computing what the source network computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from released_nets import MmHourglassAENet, PaePoseNet, PshPoseNet, randomize

from aehg.config import ConfigError, ModelConfig, load_config
from aehg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from aehg.models import build_model
from aehg.models.convert import (
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    read_source_state,
    source_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# Narrow versions of the three networks (same keys per level, 128 channels so that aehg's stem
# keeps the papers' 64/128 widths), and the aehg model configs they convert to.
PAE_CFG = ModelConfig(num_stacks=2, channels=128, increase=16, block="conv", num_classes=3,
                      embedding_dim=1, input_norm="none")
PSH_CFG = ModelConfig(num_stacks=2, channels=128, block="residual", num_classes=16,
                      embedding_dim=0, input_norm="none")
MM_CFG = ModelConfig(num_stacks=2, channels=128, increase=16, block="conv", num_classes=3,
                     embedding_dim=1)


def _pae() -> PaePoseNet:
    # 12 = 4 · C channels, as 68 = 4 · 17: heatmaps 0-2, tags 3-5, 6 channels no loss reads.
    return randomize(PaePoseNet(2, 128, 12, increase=16), seed=1).eval()


def _psh() -> PshPoseNet:
    return randomize(PshPoseNet(2, 128, 16), seed=2).eval()


def _mm() -> MmHourglassAENet:
    return randomize(MmHourglassAENet(num_stacks=2, stage_channels=(128, 144, 160, 176, 192),
                                      feat_channel=128, out_channel=6), seed=3).eval()


def _convert(source, net, cfg):
    model = build_model(cfg).eval()
    out, unused = convert_state_dict(source, net.state_dict(), model.state_dict())
    model.load_state_dict(out, strict=True)
    return model, out, unused


def _inputs():
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return rgb, (rgb - mean) / std


def _assert_same_outputs(ref, got, c, e, tol):
    assert len(ref) == len(got)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g.objects.heatmaps, r[:, :c], rtol=0, atol=tol)
        if e:
            torch.testing.assert_close(g.objects.tags.flatten(1, 2), r[:, c:c + c * e],
                                       rtol=0, atol=tol)


# --------------------------------------------------------------------------- full size


def _full_size(source):
    with torch.device("meta"):
        if source == "pose-ae-train":
            net = PaePoseNet(4, 256, 68)
            cfg = load_config(CONFIGS / "coco_ae.yaml", ["model.input_norm=none"])
        elif source == "pytorch_stacked_hourglass":
            net = PshPoseNet(8, 256, 16)
            cfg = load_config(CONFIGS / "mpii_hourglass.yaml", ["model.input_norm=none"])
        else:
            net = MmHourglassAENet(num_stacks=4, out_channel=34)
            cfg = load_config(CONFIGS / "coco_ae.yaml")
        model = build_model(cfg.model)
    return net, model


@pytest.mark.parametrize("source", ["pose-ae-train", "pytorch_stacked_hourglass", "mmpose-ae"])
def test_tables_cover_the_full_size_networks_key_for_key(source):
    # The released sizes, on the meta device (shapes without memory): every aehg tensor is
    # filled with its own shape, every source tensor is read or known-unused.
    net, model = _full_size(source)
    target = model.state_dict()
    out, unused = convert_state_dict(source, net.state_dict(), target)
    assert list(out) == list(target)
    assert all(out[k].shape == target[k].shape for k in target)
    expected_unused = {
        "pose-ae-train": [],
        # The equal-width residuals of 8 stacks: per stack 4 levels × (up1, low1, low3) + the
        # bottom low2 + the features residual, plus pre.3 (128 -> 128): 8 · 14 + 1 = 113.
        "pytorch_stacked_hourglass": 113,
        # Batch norms: per stack 4 levels × (up1, low1, low3) + the bottom low2 + the two
        # convs after the hourglass; the stem's 4; the merges' 2 per gap between stacks.
        "mmpose-ae": 4 * (4 * 3 + 1 + 2) + 4 + 2 * 3,
    }[source]
    if source == "pose-ae-train":
        assert unused == []
    elif source == "pytorch_stacked_hourglass":
        assert len(unused) == 2 * expected_unused
        assert all(re.fullmatch(r".*\.skip_layer\.conv\.(weight|bias)", k) for k in unused)
        assert "pre.3.skip_layer.conv.weight" in unused
        assert "pre.1.skip_layer.conv.weight" not in unused  # 64 -> 128: aehg's skip conv
    else:
        assert len(unused) == expected_unused
        assert all(k.endswith("bn.num_batches_tracked") for k in unused)


def test_parameter_counts_of_the_released_networks():
    # The figures: pytorch_stacked_hourglass stores 8.43 M at 2 stacks, aehg runs 6.56 M.
    with torch.device("meta"):
        psh = PshPoseNet(2, 256, 16)
        aehg2 = build_model(load_config(CONFIGS / "mpii_hourglass_2stack.yaml").model)
        pae = PaePoseNet(4, 256, 68)
        mm = MmHourglassAENet(num_stacks=4, out_channel=34)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(psh) == 8_429_088
    assert count(aehg2) == 6_562_144
    assert count(pae) == 138_893_840
    assert count(mm) == 138_863_560


# --------------------------------------------------------------------------- values


def test_pose_ae_train_tensors_and_outputs():
    net = _pae()
    src = net.state_dict()
    model, out, unused = _convert("pose-ae-train", net, PAE_CFG)
    assert unused == []
    # Copies: the tensor itself.
    for aehg_key, key in [("stem.0.weight", "pre.0.conv.weight"),
                          ("stem.2.0.bias", "pre.1.conv.bias"),
                          ("stem.5.0.weight", "pre.4.conv.weight"),
                          ("hourglasses.1.0.up1.0.weight", "features.1.0.up1.conv.weight"),
                          ("hourglasses.0.0.low2.low2.low2.low2.0.bias",
                           "features.0.0.low2.low2.low2.low2.conv.bias"),
                          ("hourglasses.1.0.low2.low2.low3.0.weight",
                           "features.1.0.low2.low2.low3.conv.weight"),
                          ("hourglasses.0.2.0.weight", "features.0.2.conv.weight"),
                          ("merge_preds.0.bias", "merge_preds.0.conv.conv.bias")]:
        assert torch.equal(out[aehg_key], src[key]), aehg_key
    # Heads keep heatmaps and tags (rows 0-5); merge_preds reads those 6 channels.
    assert torch.equal(out["heads.1.weight"], src["outs.1.conv.weight"][:6])
    assert torch.equal(out["heads.1.bias"], src["outs.1.conv.bias"][:6])
    assert torch.equal(out["merge_preds.0.weight"], src["merge_preds.0.conv.conv.weight"][:, :6])
    # The 6 extra channels' path into the next stack lands in merge_features.
    wm = src["merge_preds.0.conv.conv.weight"][:, 6:, 0, 0].double()
    wo = src["outs.0.conv.weight"][6:, :, 0, 0].double()
    want_w = src["merge_features.0.conv.conv.weight"].double() + (wm @ wo)[..., None, None]
    want_b = (src["merge_features.0.conv.conv.bias"].double()
              + wm @ src["outs.0.conv.bias"][6:].double())
    assert torch.equal(out["merge_features.0.weight"], want_w.float())
    assert torch.equal(out["merge_features.0.bias"], want_b.float())
    rgb, normalised = _inputs()
    with torch.no_grad():
        _assert_same_outputs(net(rgb), model(normalised), 3, 1, 2e-6)


def test_pytorch_stacked_hourglass_tensors_and_outputs():
    net = _psh()
    src = net.state_dict()
    model, out, unused = _convert("pytorch_stacked_hourglass", net, PSH_CFG)
    for aehg_key, key in [("stem.0.weight", "pre.0.conv.weight"),
                          ("stem.1.weight", "pre.0.bn.weight"),
                          ("stem.1.running_var", "pre.0.bn.running_var"),
                          ("stem.1.num_batches_tracked", "pre.0.bn.num_batches_tracked"),
                          ("stem.3.body.0.running_mean", "pre.1.bn1.running_mean"),
                          ("stem.3.body.2.weight", "pre.1.conv1.conv.weight"),
                          ("stem.3.body.8.bias", "pre.1.conv3.conv.bias"),
                          ("stem.3.skip.weight", "pre.1.skip_layer.conv.weight"),
                          ("hourglasses.1.0.low2.low2.low2.low2.body.5.weight",
                           "hgs.1.0.low2.low2.low2.low2.conv2.conv.weight"),
                          ("hourglasses.0.1.body.6.bias", "features.0.0.bn3.bias"),
                          ("hourglasses.1.2.1.weight", "features.1.1.bn.weight"),
                          ("heads.1.weight", "outs.1.conv.weight"),
                          ("merge_features.0.bias", "merge_features.0.conv.conv.bias"),
                          ("merge_preds.0.weight", "merge_preds.0.conv.conv.weight")]:
        assert torch.equal(out[aehg_key], src[key]), aehg_key
    # A conv bias before a batch norm moves into its running mean.
    for aehg_key, mean, bias in [
            ("stem.1.running_mean", "pre.0.bn.running_mean", "pre.0.conv.bias"),
            ("stem.6.body.3.running_mean", "pre.4.bn2.running_mean", "pre.4.conv1.conv.bias"),
            ("hourglasses.0.0.up1.body.6.running_mean", "hgs.0.0.up1.bn3.running_mean",
             "hgs.0.0.up1.conv2.conv.bias"),
            ("hourglasses.1.2.1.running_mean", "features.1.1.bn.running_mean",
             "features.1.1.conv.bias")]:
        want = (src[mean].double() - src[bias].double()).float()
        assert torch.equal(out[aehg_key], want), aehg_key
    # Unused: exactly the skip_layers of the equal-width residuals (128 channels throughout,
    # so every residual but pre.1 (64 -> 128)).
    blocks = {k.rsplit(".skip_layer.", 1)[0] for k in src if ".skip_layer." in k}
    assert len(blocks) == 1 + 1 + 1 + 2 * (4 * 3 + 1 + 1)
    assert unused == sorted(f"{b}.skip_layer.conv.{t}" for b in blocks - {"pre.1"}
                            for t in ("bias", "weight"))
    rgb, normalised = _inputs()
    with torch.no_grad():
        _assert_same_outputs(net(rgb), model(normalised), 16, 0, 1e-5)


def test_mmpose_tensors_and_outputs():
    net = _mm()
    src = net.state_dict()
    model, out, unused = _convert("mmpose-ae", net, MM_CFG)
    assert torch.equal(out["heads.1.weight"], src["out_convs.1.conv.weight"])
    assert torch.equal(out["heads.0.bias"], src["out_convs.0.conv.bias"])
    # conv + batch norm folded: W·γ/√(σ²+ε), β − μ·γ/√(σ²+ε).
    for aehg_prefix, prefix in [("stem.0", "stem.0"), ("stem.5.0", "stem.4"),
                                ("hourglasses.1.0.low2.low2.low2.low2.0",
                                 "hourglass_modules.1.0.low2.low2.low2.low2"),
                                ("hourglasses.0.2.0", "hourglass_modules.0.2"),
                                ("merge_preds.0", "remap_out_convs.0"),
                                ("merge_features.0", "remap_feature_convs.0")]:
        g = src[f"{prefix}.bn.weight"].double() / torch.sqrt(
            src[f"{prefix}.bn.running_var"].double() + 1e-5)
        want_w = src[f"{prefix}.conv.weight"].double() * g[:, None, None, None]
        want_b = src[f"{prefix}.bn.bias"].double() - src[f"{prefix}.bn.running_mean"].double() * g
        assert torch.equal(out[f"{aehg_prefix}.weight"], want_w.float()), aehg_prefix
        assert torch.equal(out[f"{aehg_prefix}.bias"], want_b.float()), aehg_prefix
    assert unused == sorted(k for k in src if k.endswith("num_batches_tracked"))
    _, normalised = _inputs()
    with torch.no_grad():
        _assert_same_outputs(net(normalised), model(normalised), 3, 1, 2e-6)


# --------------------------------------------------------------------------- errors


def test_missing_unexpected_and_misshaped_keys_are_named():
    net = _psh()
    target = build_model(PSH_CFG).state_dict()
    state = dict(net.state_dict())
    del state["hgs.1.0.low2.low1.conv2.conv.bias"]
    with pytest.raises(ConversionError) as err:
        convert_state_dict("pytorch_stacked_hourglass", state, target, where="checkpoint x.pt")
    assert str(err.value) == (
        "checkpoint x.pt: missing key 'hgs.1.0.low2.low1.conv2.conv.bias' (needed for aehg "
        "'hourglasses.1.0.low2.low1.body.6.running_mean'; not a pytorch_stacked_hourglass "
        "network of this config's shape?)")
    state = dict(net.state_dict())
    state["pre.0.conv.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ConversionError) as err:
        convert_state_dict("pytorch_stacked_hourglass", state, target, where="checkpoint x.pt")
    assert str(err.value) == (
        "checkpoint x.pt: key 'pre.0.conv.weight' has shape (64, 3, 5, 5), expected "
        "(64, 3, 7, 7) for aehg 'stem.0.weight' (another architecture or config?)")
    state = dict(net.state_dict())
    state["pre.1.attention.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError) as err:
        convert_state_dict("pytorch_stacked_hourglass", state, target, where="checkpoint x.pt")
    assert str(err.value) == (
        "checkpoint x.pt: 1 unexpected key(s) that no row reads and that are not known-unused "
        "for pytorch_stacked_hourglass: 'pre.1.attention.weight' (more stacks or another "
        "layout than the config's?)")


def test_a_config_part_the_source_lacks_is_named():
    target = build_model(ModelConfig(num_stacks=2, channels=128, num_classes=16,
                                     embedding_dim=1, input_norm="none")).state_dict()
    # E = 1 widens the heads: 16 heatmaps + 16 tags, but the source has 16 channels.
    with pytest.raises(ConversionError, match=re.escape(
            "key 'outs.0.conv.weight' has shape (16, 128, 1, 1), expected (32, 128, 1, 1) for "
            "aehg 'heads.0.weight'")):
        convert_state_dict("pytorch_stacked_hourglass", _psh().state_dict(), target)


def _save(path, state, prefix="model.module."):
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 7}, path)
    return path


def test_checkpoint_of_another_source_is_refused(tmp_path):
    path = _save(tmp_path / "checkpoint.pt", _psh().state_dict())
    with pytest.raises(ConversionError) as err:
        read_source_state(path, "pose-ae-train")
    assert str(err.value) == (
        f"checkpoint {path}: not a pose-ae-train checkpoint: no key 'pre.1.conv.weight' "
        f"(after stripping model.module. / module. / model.); it looks like a "
        f"pytorch_stacked_hourglass checkpoint (use --from pytorch_stacked_hourglass)")
    mm = _save(tmp_path / "mm.pth", _mm().state_dict(), prefix="backbone.")
    with pytest.raises(ConversionError, match="it looks like a mmpose-ae checkpoint"):
        read_source_state(mm, "pytorch_stacked_hourglass")
    aehg = tmp_path / "aehg.pt"
    torch.save({"model": {}, "config": {}}, aehg)
    with pytest.raises(ConversionError, match=re.escape(
            f"checkpoint {aehg}: is an aehg checkpoint already")):
        read_source_state(aehg, "mmpose-ae")
    with pytest.raises(ValueError, match="source: expected one of pose-ae-train, "
                                         "pytorch_stacked_hourglass, mmpose-ae, got 'caffe'"):
        read_source_state(path, "caffe")


def test_read_source_state_strips_the_wrappers(tmp_path):
    net = _pae()
    state = read_source_state(_save(tmp_path / "checkpoint.pth.tar", net.state_dict()),
                              "pose-ae-train")
    assert list(state) == list(net.state_dict())
    assert source_overrides("pose-ae-train", state) == ["model.num_stacks=2",
                                                        "model.input_norm=none"]
    mm = read_source_state(_save(tmp_path / "mm.pth", _mm().state_dict(), "backbone."),
                           "mmpose-ae")
    assert source_overrides("mmpose-ae", mm) == ["model.num_stacks=2",
                                                 "model.input_norm=imagenet"]


def test_convert_checkpoint_writes_a_weights_only_checkpoint(tmp_path):
    path = _save(tmp_path / "checkpoint.pt", _psh().state_dict())
    config = tmp_path / "small.yaml"
    config.write_text((CONFIGS / "mpii_hourglass.yaml").read_text().replace(
        "channels: 256", "channels: 128"))
    report = convert_checkpoint("pytorch_stacked_hourglass", path, tmp_path / "out.pt", config)
    assert report["overrides"] == ["model.num_stacks=2", "model.input_norm=none"]
    assert report["tensors"] == len(build_model(PSH_CFG).state_dict())
    ckpt = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(ckpt) == {"model", "config", "converted_from"}
    assert ckpt["config"]["model"]["num_stacks"] == 2
    assert ckpt["config"]["model"]["input_norm"] == "none"
    assert ckpt["config"]["data"]["kind"] == "single_pose"
    assert ckpt["converted_from"]["source"] == "pytorch_stacked_hourglass"
    assert ckpt["converted_from"]["unused"] == report["unused"]
    with pytest.raises(ConfigError) as err:
        convert_checkpoint("pytorch_stacked_hourglass", path, tmp_path / "bad.pt", config,
                           ["model.num_stacks=8"])
    assert str(err.value) == (f"model.num_stacks: checkpoint {path} (pytorch_stacked_hourglass) "
                              f"needs 2, the config says 8")
    assert not (tmp_path / "bad.pt").exists()
