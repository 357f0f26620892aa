"""Exponential moving average of a model's weights (docs/design.md §9).

A copy of the model whose floating-point parameters and buffers (batch-norm statistics too)
follow the trained ones as ``ema = decay * ema + (1 - decay) * model`` after every optimiser
step. The decay warms up as ``min(decay, (1 + t) / (10 + t))`` over the first updates ``t``, so
that a short run does not keep the random initial weights in its average.

``torch.optim.swa_utils.AveragedModel`` computes the same update but tests ``n_averaged == 0``
on every call: a host synchronisation per step, which the training loop avoids
(docs/design.md §9). The update here reads nothing from the device.

Example:
    >>> ema = ModelEma(model, decay=0.99)
    >>> for batch in loader:
    ...     optimizer.step()
    ...     ema.update(model)
    >>> evaluate(ema.module)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """Moving average of ``model``'s state.

    Args:
        model: the trained model (unwrapped from DDP). Its current state starts the average.
        decay: the long-run decay in [0, 1); 0.99 averages roughly the last 100 steps.

    Attributes:
        module: the averaged copy, in eval mode and without gradients; evaluate or save it.
        updates: how many updates the average has received.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses (the warm-up rule, capped by ``decay``)."""
        t = self.updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (same architecture)."""
        weight = 1.0 - self.current_decay()
        mine = self.module.state_dict()
        theirs = model.state_dict()
        floats_ema, floats_new = [], []
        for name, value in mine.items():
            new = theirs[name].detach()
            if value.is_floating_point():
                floats_ema.append(value)
                floats_new.append(new.to(value.device))
            else:
                value.copy_(new)  # e.g. num_batches_tracked: a count, not a quantity to average
        if floats_ema:
            torch._foreach_lerp_(floats_ema, floats_new, weight)
        self.updates += 1
