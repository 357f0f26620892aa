"""Training loop: exact resume, DDP agreement, non-finite loss handling (tiny CPU runs)."""

import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from aehg.checkpoint import load_checkpoint
from aehg.engine import NonFiniteLossError, train
from aehg.models.losses import MultiStackLoss


def _cfg(tiny_config, tmp_path, *extra):
    return tiny_config(tmp_path / "run", "model.num_stacks=2", "train.lr=1e-3",
                       "train.scheduler=cosine", "train.warmup_steps=2", "train.epochs=3",
                       "train.log_interval=1", *extra)


class _StopAfter(Exception):
    pass


class _Hook:
    """Wraps the real loss: stops the run or makes the loss NaN at a given call."""

    def __init__(self, cfg, stop_at=None, nan_at=None):
        self.loss = MultiStackLoss(cfg.loss)
        self.calls = 0
        self.stop_at, self.nan_at = stop_at, nan_at

    def __call__(self, outputs, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise _StopAfter
        total, terms = self.loss(outputs, batch)
        if self.calls == self.nan_at:
            total = total * float("nan")
        return total, terms


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_config):
    # 16 images, batch 4: 4 steps per epoch; stop inside epoch 1 (after step 6) and resume.
    ref = train(_cfg(tiny_config, tmp_path / "a", "train.max_steps=10"), validate=False)
    assert ref["step"] == 10

    cfg = _cfg(tiny_config, tmp_path / "b", "train.max_steps=10", "train.checkpoint_interval=3")
    with pytest.raises(_StopAfter):
        train(cfg, loss_fn=_Hook(cfg, stop_at=8), validate=False)
    ck = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert (ck["step"], ck["epoch"], ck["step_in_epoch"]) == (6, 1, 2)
    resumed = train(cfg, resume="auto", validate=False)
    assert resumed["step"] == 10
    a, b = _params(ref["model"]), _params(resumed["model"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Training moved the weights at all (the comparison is not between two initialisations).
    fresh = train(_cfg(tiny_config, tmp_path / "c", "train.max_steps=1"), validate=False)
    assert not torch.equal(a["heads.1.weight"], _params(fresh["model"])["heads.1.weight"])
    assert (tmp_path / "b" / "run" / "config.yaml").exists()
    assert (tmp_path / "b" / "run" / "metrics.jsonl").read_text().count("\n") >= 10


def test_moving_average_resumes_exactly_and_is_the_checkpoints_model(tmp_path, tiny_config):
    ema = ("train.ema_decay=0.9", "train.max_steps=10")
    train(_cfg(tiny_config, tmp_path / "a", *ema), validate=False)
    cfg = _cfg(tiny_config, tmp_path / "b", *ema, "train.checkpoint_interval=3")
    with pytest.raises(_StopAfter):
        train(cfg, loss_fn=_Hook(cfg, stop_at=8), validate=False)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["ema_updates"] == 6
    resumed = train(cfg, resume="auto", validate=False)
    a = load_checkpoint(tmp_path / "a" / "run" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert a["ema_updates"] == b["ema_updates"] == 10
    for entry in ("model", "train_model"):
        assert a[entry].keys() == b[entry].keys()
        for k in a[entry]:
            assert torch.equal(a[entry][k], b[entry][k]), (entry, k)
    # "model" (what inference loads) is the average, which the run returns too; the trained
    # weights are kept apart for resuming, and differ from it.
    for k, v in _params(resumed["model"]).items():
        assert torch.equal(v, b["model"][k]), k
    assert not torch.equal(b["model"]["heads.1.weight"], b["train_model"]["heads.1.weight"])
    plain = train(_cfg(tiny_config, tmp_path / "c", "train.max_steps=10"), validate=False)
    for k, v in _params(plain["model"]).items():
        assert torch.equal(v, b["train_model"][k]), k  # the average does not steer training


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, tiny_config):
    cfg = _cfg(tiny_config, tmp_path, "train.checkpoint_interval=1")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 \(epoch 0\): "
                                                 r"total=nan, .*heatmap=.*last\.pt"):
        train(cfg, loss_fn=_Hook(cfg, nan_at=3), validate=False)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, tmp_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = train(cfg, validate=False)
    params = {k: v.detach().clone() for k, v in out["model"].named_parameters()}
    torch.save(params, tmp_path / f"rank{rank}.pt")


def test_ddp_two_processes_end_with_identical_parameters(tmp_path, tiny_config):
    # Generate the data once before the processes start.
    train(_cfg(tiny_config, tmp_path / "warm", "train.max_steps=1"), validate=False)
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=3", "train.device=cpu")
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, tmp_path), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and len(p0) > 10
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    # Training moved the weights away from the shared initialisation (lr 1e-12: the init).
    init = train(_cfg(tiny_config, tmp_path / "init", "train.max_steps=1", "train.lr=1e-12"),
                 validate=False)["model"]
    assert not torch.equal(p0["heads.1.weight"], dict(init.named_parameters())["heads.1.weight"])
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 3 and set(ck["rng"]) == {0, 1}


def test_non_finite_loss_is_caught_before_a_checkpoint_between_log_steps(tmp_path, tiny_config):
    # Read once per 10 steps, but a checkpoint every 2: the NaN of step 3 is read before the
    # checkpoint of step 4 is written, and named with its own step and terms.
    cfg = _cfg(tiny_config, tmp_path, "train.checkpoint_interval=2", "train.log_interval=10")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 \(epoch 0\): "
                                                 r"total=nan, .*heatmap=.*pull=.*last\.pt"):
        train(cfg, loss_fn=_Hook(cfg, nan_at=3), validate=False)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_log_records_hold_the_logged_steps_values(tmp_path, tiny_config):
    # log_interval 2 over 5 steps: records at steps 1, 2, 4 with the loss of that very step.
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=5", "train.log_interval=2")
    hook = _Hook(cfg)
    seen = []

    def loss_fn(outputs, batch):
        total, terms = hook(outputs, batch)
        seen.append(float(total.detach()))
        return total, terms

    train(cfg, loss_fn=loss_fn, validate=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 4]
    for r in steps:
        assert r["loss"] == pytest.approx(seen[r["step"] - 1], rel=1e-6)
        assert r["total"] == pytest.approx(r["loss"], rel=1e-6)
        assert {"heatmap", "push", "pull", "lr", "time"} <= set(r)


class _LateClock:
    """A ``time`` module whose clock jumps a day ahead after its first reading."""

    def __init__(self):
        self.calls = 0

    def perf_counter(self):
        self.calls += 1
        return time.perf_counter() + (0.0 if self.calls == 1 else 86400.0)


def _ddp_time_worker(rank, world, port, cfg, tmp_path, late_rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if rank == late_rank:
        import aehg.engine.trainer as trainer

        trainer.time = _LateClock()
    out = train(cfg, validate=False)
    torch.save({"step": out["step"]}, tmp_path / f"rank{rank}.pt")


@pytest.mark.parametrize("late_rank, steps", [(1, 4), (0, 1)])
def test_ddp_time_budget_is_decided_by_rank_0(tmp_path, tiny_config, late_rank, steps):
    # Rank 1's clock alone runs late: ignored, both ranks train all 4 steps (with each rank's
    # own clock, rank 1 would stop early and rank 0 hang). Rank 0's clock runs late: both stop
    # at the first read (step 1).
    train(_cfg(tiny_config, tmp_path / "warm", "train.max_steps=1"), validate=False)
    cfg = _cfg(tiny_config, tmp_path, "train.max_steps=4", "train.max_minutes=600",
               "train.log_interval=2", "train.device=cpu")
    mp.spawn(_ddp_time_worker, args=(2, _free_port(), cfg, tmp_path, late_rank), nprocs=2,
             join=True)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["step"] == steps


def test_out_of_range_targets_stop_the_run_at_the_next_read(tmp_path, tiny_config):
    # The loss checks index targets on the device (no read per step); the trainer reads the
    # counts with the logged values: here at the end of epoch 0 (step 4), before last.pt.
    cfg = _cfg(tiny_config, tmp_path, "train.log_interval=10")
    loss = MultiStackLoss(cfg.loss, defer_checks=True)
    calls = []

    def loss_fn(outputs, batch):
        calls.append(1)
        if len(calls) == 3:
            batch = dict(batch)
            parts = batch["parts"].clone()
            parts[0, 0, 0] = torch.tensor([10**6, 1])
            batch["parts"] = parts
        return loss(outputs, batch)

    loss_fn.take_target_errors = loss.take_target_errors
    with pytest.raises(ValueError, match=r"index outside the model's maps between step 2 and "
                                         r"4 \(epoch 0\): batch\['parts'\] in 1 step;"):
        train(cfg, loss_fn=loss_fn, validate=False)
    assert not (tmp_path / "run" / "last.pt").exists()
