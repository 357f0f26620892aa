"""Networks: the stacked hourglass, its blocks and :func:`build_model`."""

from __future__ import annotations

from aehg.config import ModelConfig
from aehg.models.hourglass import (
    Hourglass,
    InteractionMaps,
    ObjectMaps,
    StackedHourglass,
    StackOutput,
)
from aehg.models.layers import ConvBlock, Residual
from aehg.models.losses import MultiStackLoss, ae_loss, box_loss, heatmap_loss, link_loss

__all__ = [
    "ConvBlock",
    "Hourglass",
    "InteractionMaps",
    "MultiStackLoss",
    "ObjectMaps",
    "Residual",
    "StackOutput",
    "StackedHourglass",
    "ae_loss",
    "box_loss",
    "build_model",
    "heatmap_loss",
    "link_loss",
]


def build_model(cfg: ModelConfig) -> StackedHourglass:
    """Build the network described by ``cfg`` (the ``model`` section of a config)."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg: expected aehg.config.ModelConfig, got {type(cfg).__name__}")
    cfg.validate()
    return StackedHourglass(
        num_stacks=cfg.num_stacks,
        channels=cfg.channels,
        depth=cfg.depth,
        increase=cfg.increase,
        block=cfg.block,
        num_classes=cfg.num_classes,
        embedding_dim=cfg.embedding_dim,
        tag_per_class=cfg.tag_per_class,
        num_link_classes=cfg.num_link_classes,
        box_size=cfg.box_size,
        in_channels=cfg.in_channels,
        heatmap_activation=cfg.heatmap_activation,
        input_norm=cfg.input_norm,
        object_slots=cfg.object_slots,
        relation_slots=cfg.relation_slots,
        # None (a ModelConfig outside a Config): no box input (docs/design.md §2 "Tasks").
        box_channels=cfg.box_channels or 0,
        stem=cfg.stem,
    )
