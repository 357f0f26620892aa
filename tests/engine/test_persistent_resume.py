"""Persistent loader workers: one stream of batches over every epoch, exact resume, and the
same augmentations as loading in the main process (tiny CPU runs on synthetic data)."""

import pytest
import torch
from torch.utils.data import DistributedSampler

from aehg.checkpoint import load_checkpoint
from aehg.data import build_dataset
from aehg.engine import train
from aehg.models.losses import MultiStackLoss


def _cfg(tiny_config, tmp_path, *extra):
    # 16 images, batch 4: 4 steps per epoch; 10 steps run through epochs 0, 1 and half of 2.
    # The default augmentation (rotation, scale, flip, colour) is on: a worker that missed the
    # epoch would draw epoch 0's augmentations again.
    return tiny_config(
        tmp_path / "run", "model.num_stacks=2", "data.num_workers=1",
        "data.persistent_workers=true", "train.lr=1e-3", "train.scheduler=cosine",
        "train.warmup_steps=2", "train.epochs=3", "train.max_steps=10", "train.log_interval=1",
        *extra)


class _StopAfter(Exception):
    pass


class _Recorder:
    """The real loss, recording the (image id, input transform) of every sample it trains on;
    call ``stop_at`` raises instead (a crash in the middle of an epoch)."""

    def __init__(self, cfg, stop_at=None):
        self.loss = MultiStackLoss(cfg.loss)
        self.stop_at = stop_at
        self.batches = []

    def __call__(self, outputs, batch):
        if len(self.batches) + 1 == self.stop_at:
            raise _StopAfter
        self.batches.append([(m["image_id"], m["input_transform"].tobytes())
                             for m in batch["meta"]])
        return self.loss(outputs, batch)


def _reference_batches(cfg, n):
    """The first ``n`` batches of a run, built naively in this process: the trainer's shuffle
    (one process: a DistributedSampler of one replica) and ``set_epoch`` on the dataset itself,
    as training loaded them before the loader was persistent."""
    ds = build_dataset(cfg, "train")
    ds.reseed([cfg.train.seed, 0])
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=cfg.train.seed,
                                 drop_last=True)
    b = cfg.train.batch_size
    out = []
    for epoch in range(cfg.train.epochs):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        order = list(sampler)
        for k in range(len(order) // b):
            metas = [ds[i]["meta"] for i in order[k * b:(k + 1) * b]]
            out.append([(m["image_id"], m["input_transform"].tobytes()) for m in metas])
    return out[:n]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_persistent_workers_resume_exactly_and_match_main_process_loading(tmp_path, tiny_config):
    cfg = _cfg(tiny_config, tmp_path / "a")
    seen = _Recorder(cfg)
    straight = train(cfg, loss_fn=seen, validate=False)
    assert (straight["step"], straight["epoch"]) == (10, 2)
    # The persistent worker loaded each epoch's own augmentations (they differ between epochs).
    reference = _reference_batches(cfg, 10)
    assert seen.batches == reference
    first = dict(p for batch in reference[:4] for p in batch)
    second = dict(p for batch in reference[4:8] for p in batch)
    assert first.keys() == second.keys() and all(first[i] != second[i] for i in first)

    cfg = _cfg(tiny_config, tmp_path / "b", "train.checkpoint_interval=3")
    crashed = _Recorder(cfg, stop_at=8)
    with pytest.raises(_StopAfter):
        train(cfg, loss_fn=crashed, validate=False)
    ck = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert (ck["step"], ck["epoch"], ck["step_in_epoch"]) == (6, 1, 2)
    again = _Recorder(cfg)
    resumed = train(cfg, resume="auto", loss_fn=again, validate=False)
    assert resumed["step"] == 10
    assert crashed.batches[:6] + again.batches == reference
    _assert_equal(_params(straight["model"]), _params(resumed["model"]))

    # The same weights with every sample loaded in the main process, and with new workers
    # every epoch (data.persistent_workers=false).
    for i, extra in enumerate(("data.num_workers=0", "data.persistent_workers=false")):
        other = train(_cfg(tiny_config, tmp_path / f"c{i}", extra), validate=False)
        _assert_equal(_params(straight["model"]), _params(other["model"]))

    # Training moved the weights at all (not a comparison of two initialisations).
    fresh = train(_cfg(tiny_config, tmp_path / "e", "train.max_steps=1", "data.num_workers=0"),
                  validate=False)
    assert not torch.equal(straight["model"].state_dict()["heads.1.weight"],
                           fresh["model"].state_dict()["heads.1.weight"])
