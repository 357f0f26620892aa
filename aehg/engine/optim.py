"""Optimisers and per-step learning-rate schedules from :class:`aehg.config.TrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from aehg.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or RMSprop over the trainable parameters, with ``cfg.lr``.

    Weight decay is not applied to biases and normalisation parameters (1-D tensors).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr)
    raise ValueError(f"train.optimizer: expected adam, adamw or rmsprop, got {cfg.optimizer!r}")


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int,
              time_fraction: float | None = None) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warm-up over ``cfg.warmup_steps``, then ``step`` (×gamma at each epoch milestone),
    ``cosine`` (from 1 to 0 over ``total_steps``) or ``none``. A run limited by time
    (``cfg.max_minutes``) passes the fraction of its time used: the cosine then follows
    whichever of steps and time is further along, so it reaches 0 when the time is up.
    """
    warm = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        warm = (step + 1) / cfg.warmup_steps
    if cfg.scheduler == "step":
        epoch = step // max(steps_per_epoch, 1)
        return warm * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.scheduler == "cosine":
        span = max(total_steps - cfg.warmup_steps, 1)
        t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
        if time_fraction is not None and step >= cfg.warmup_steps:
            t = max(t, min(time_fraction, 1.0))
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    total_steps: int, time_fraction: Callable[[], float | None] | None = None
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step :class:`~torch.optim.lr_scheduler.LambdaLR` following :func:`lr_factor`.

    ``time_fraction`` returns the share of a time-limited run's budget used so far (or None).
    """
    def factor(step: int) -> float:
        frac = time_fraction() if time_fraction is not None else None
        return lr_factor(step, cfg, steps_per_epoch, total_steps, frac)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
