"""Training engine: optimisers and schedules, distributed set-up, checkpoints, the loop."""

from __future__ import annotations

from aehg.engine.checkpoint import (
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap_model,
)
from aehg.engine.distributed import DistInfo, init_distributed
from aehg.engine.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "DistInfo",
    "NonFiniteLossError",
    "build_optimizer",
    "build_scheduler",
    "init_distributed",
    "load_checkpoint",
    "load_model_weights",
    "lr_factor",
    "main",
    "save_checkpoint",
    "train",
    "unwrap_model",
]


def __getattr__(name: str):
    # The loop imports the data and loss modules; load it on first use so that the light
    # helpers above (checkpoints, schedules) import without them.
    if name in ("train", "NonFiniteLossError", "main"):
        from aehg.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
