"""Training engine: optimisers and schedules, distributed set-up, the loop, the demo.

Checkpoint files are read and written by :mod:`aehg.checkpoint`, a layer below the engine.
"""

from __future__ import annotations

from aehg.engine.distributed import DistInfo, init_distributed
from aehg.engine.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "DistInfo",
    "NonFiniteLossError",
    "RunExistsError",
    "build_optimizer",
    "build_scheduler",
    "init_distributed",
    "lr_factor",
    "main",
    "train",
]


def __getattr__(name: str):
    # The loop imports the data and loss modules; load it on first use so that the light
    # helpers above (schedules, distributed set-up) import without them.
    if name in ("train", "NonFiniteLossError", "RunExistsError", "main"):
        from aehg.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
