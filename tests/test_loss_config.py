"""Default loss weights: by heatmap loss, pose (MSE) unchanged, focal embedding terms that count."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from aehg.config import (
    DEFAULT_EMBEDDING_WEIGHTS,
    ConfigError,
    LossConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]
EMBEDDING = ("push_weight", "pull_weight", "link_weight")


def _weights(loss: LossConfig) -> tuple[float, ...]:
    return tuple(getattr(loss, n) for n in EMBEDDING)


def test_mse_defaults_are_the_ae_papers():
    assert DEFAULT_EMBEDDING_WEIGHTS == {"mse": 1e-3, "focal": 1.0}
    loss = LossConfig()
    assert loss.heatmap == "mse" and _weights(loss) == (1e-3, 1e-3, 1e-3)
    assert loss.heatmap_weight == 1.0 and loss.box_weight == 0.1
    assert _weights(load_config(None).loss) == (1e-3, 1e-3, 1e-3)
    # Pose configs read exactly what they read before.
    assert _weights(load_config(ROOT / "configs" / "coco_ae.yaml").loss) == (1e-3, 1e-3, 1e-3)
    assert _weights(load_config(ROOT / "configs" / "demo_pose.yaml").loss) == (1e-2, 1e-2, 1e-3)


def test_focal_defaults_and_explicit_values():
    assert _weights(LossConfig(heatmap="focal")) == (1.0, 1.0, 1.0)
    assert _weights(LossConfig(heatmap="focal", link_weight=0.5)) == (1.0, 1.0, 0.5)
    assert _weights(LossConfig(push_weight=0.2)) == (0.2, 1e-3, 1e-3)
    cfg = load_config(None, ["model.heatmap_activation=sigmoid", "loss.heatmap=focal",
                             "loss.pull_weight=null"])
    assert _weights(cfg.loss) == (1.0, 1.0, 1.0)
    # The resolved numbers are what a saved config holds, and they load back unchanged.
    saved = config_to_dict(cfg)
    assert saved["loss"]["push_weight"] == 1.0
    assert config_from_dict(saved).loss == cfg.loss
    for name in ("vg_graph", "demo_graph", "demo_graph_slots"):
        loss = load_config(ROOT / "configs" / f"{name}.yaml").loss
        assert loss.heatmap == "focal" and _weights(loss) == (1.0, 1.0, 1.0), name


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"^loss\.heatmap: expected 'mse' or 'focal', got 'l1'"):
        LossConfig(heatmap="l1").validate()
    with pytest.raises(ConfigError, match=r"^loss\.link_weight: expected a non-negative"):
        LossConfig(link_weight=-1.0).validate()
    loss = LossConfig()
    loss.push_weight = None
    with pytest.raises(ConfigError, match=r"^loss\.push_weight: expected a number, got None"):
        loss.validate()


def test_focal_embedding_terms_weigh_at_initialisation(tmp_path):
    """On synthetic graph data, the focal defaults give push and link a share of the loss at
    initialisation that 1e-3 does not (benchmarks/loss_shares.py measures it in full)."""
    from aehg.data import build_dataloader, build_dataset
    from aehg.models import build_model
    from aehg.models.losses import MultiStackLoss

    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "demo_graph.yaml", [
        f"data.root={tmp_path}", "data.num_workers=0", "train.batch_size=4",
        "data.synthetic.num_train=4", "data.synthetic.num_val=4", "model.channels=16"])
    batch = next(iter(build_dataloader(build_dataset(cfg, "val"), cfg, "val")))
    model = build_model(cfg.model)
    with torch.no_grad():
        outputs = model(batch["image"])
    shares = {}
    for weight in (1e-3, None):
        loss_cfg = dataclasses.replace(LossConfig(heatmap="focal"), **dict.fromkeys(
            EMBEDDING, weight)) if weight else LossConfig(heatmap="focal")
        total, parts = MultiStackLoss(loss_cfg)(outputs, batch)
        embed = loss_cfg.push_weight * parts["push"] + loss_cfg.link_weight * parts["link"]
        shares[weight] = embed / float(total)
    assert shares[1e-3] < 1e-3            # ~1e-4: these terms would not move the network
    assert shares[None] > 0.02
