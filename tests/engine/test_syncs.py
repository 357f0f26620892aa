"""Host synchronisations of the training step (tiny CPU runs of the real ``train()``).

A host synchronisation is any call that brings a tensor's value to Python: ``Tensor.item``,
``__bool__``, ``__float__``, ``__int__``, ``tolist``, ``nonzero`` (and ``torch.nonzero``, whose
output shape depends on the data). On the CPU they cost nothing, but on CUDA each one waits for
the queued kernels; the same calls are counted here on the CPU.

Not counted (they are not device synchronisations on CUDA either):
* the DataLoader's ``__next__`` (host-side batch assembly, before the batch moves to the device);
* ``optimizer.step``: torch keeps a non-fused, non-capturable optimiser's step counters on the
  host on purpose and reads them with ``item``.

Steady state: the steps after step 1 (which logs) and before the epoch ends (which writes a
checkpoint). The loss call of step k opens step k; what happens up to the next loss call
(backward, optimiser, logging, the stop check) counts for step k.
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data import DataLoader

from aehg.engine import train
from aehg.models.losses import MultiStackLoss

_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero")


class _SyncCounter:
    """Counts host synchronisations per training step while installed."""

    def __init__(self, loss) -> None:
        self.loss = loss
        # The trainer reads the deferred range checks of its loss along with the values.
        self.take_target_errors = loss.take_target_errors
        self.step = 0
        self.paused = 0
        self.per_step: collections.Counter[int] = collections.Counter()
        self.where: dict[int, list[str]] = collections.defaultdict(list)

    def __call__(self, outputs, batch):
        self.step += 1
        return self.loss(outputs, batch)

    def _wrap(self, fn, name):
        counter = self

        def wrapped(*args, **kwargs):
            if not counter.paused and counter.step > 0:
                counter.per_step[counter.step] += 1
                frame = traceback.extract_stack(limit=3)[0]
                counter.where[counter.step].append(f"{name} at {frame.filename.split('/')[-1]}"
                                                   f":{frame.lineno}")
            return fn(*args, **kwargs)

        return wrapped

    def _pausing(self, fn):
        counter = self

        def wrapped(*args, **kwargs):
            counter.paused += 1
            try:
                return fn(*args, **kwargs)
            finally:
                counter.paused -= 1

        return wrapped

    def install(self, monkeypatch) -> None:
        for name in _METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), name))
        monkeypatch.setattr(torch, "nonzero", self._wrap(torch.nonzero, "torch.nonzero"))
        iter_type = type(iter(DataLoader([0])))
        base = iter_type.__mro__[1]                       # the DataLoader iterators' base class
        monkeypatch.setattr(base, "__next__", self._pausing(base.__next__))

        def pause(*_):
            self.paused += 1

        def resume(*_):
            self.paused -= 1

        handles = [register_optimizer_step_pre_hook(pause),
                   register_optimizer_step_post_hook(resume)]
        monkeypatch.setattr(self, "_handles", handles, raising=False)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


@pytest.mark.parametrize(("kind", "extra"), [("pose", ()), ("graph", ()),
                                             ("pose", ("train.ema_decay=0.99",))])
def test_steady_state_step_syncs_at_most_once_per_log_interval(kind, extra, tiny_config,
                                                               tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "run", "model.num_stacks=2", "data.synthetic.num_train=48",
                      "data.synthetic.num_val=2", "train.batch_size=2", "train.lr=1e-3",
                      "train.epochs=5", "train.max_steps=22", "train.log_interval=10", *extra,
                      kind=kind)
    # 48 images, batch 2: one epoch of 24 steps holds the whole run of 22 steps.
    counter = _SyncCounter(MultiStackLoss(cfg.loss, defer_checks=True))
    counter.install(monkeypatch)
    try:
        summary = train(cfg, loss_fn=counter, validate=False)
    finally:
        counter.remove()
    assert summary["step"] == 22 and counter.step == 22
    per_step = [counter.per_step[s] for s in range(1, 23)]
    print(f"{cfg.data.kind}: host syncs per step 1..22: {per_step}")
    # Log intervals 2..10 (step 1 logs on its own) and 11..20; steps 21, 22 reach the stop.
    for first, last in ((2, 10), (11, 20)):
        syncs = sum(counter.per_step[s] for s in range(first, last + 1))
        where = [w for s in range(first, last + 1) for w in counter.where[s]]
        assert syncs <= 1, f"steps {first}..{last}: {syncs} syncs: {where[:20]}"
    # The counter sees the calls at all: the one read per interval happens at its last step.
    assert counter.per_step[10] >= 1 and counter.per_step[20] >= 1
