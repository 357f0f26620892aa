#!/usr/bin/env python
"""Training speed on a tiny real set, where every epoch is two steps: steps/min and the share
of the time spent at epoch boundaries, with persistent loader workers (data.persistent_workers,
one stream of batches over all epochs) and without (a loader and new workers every epoch), and
with loading in the main process (data.num_workers=0) for comparison.

configs/coco_ae.yaml on tests/data/coco_kp_ccby (17 COCO images: 2 steps of batch 8 per epoch)
with a 2-stack, 64-channel network at 256 px input / 64 px maps, on the CPU, one torch thread,
no validation. The time of step k is when the loss of step k is called; an epoch boundary's
cost is the time between the last step of an epoch and the first of the next (end-of-epoch
statistics, checkpoint, loader restart, waiting for the first batch) minus the median time
between two steps of one epoch. Prints the median over repeats.

Example:
    python benchmarks/bench_epochs.py --steps 40 --workers 1 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import torch

from aehg.checkpoint import save_checkpoint
from aehg.config import load_config
from aehg.engine import train, trainer
from aehg.models.losses import MultiStackLoss

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "coco_kp_ccby"
BATCH = 8


class _Clock:
    """The real loss, noting the time of every call (one per training step)."""

    def __init__(self, loss: MultiStackLoss) -> None:
        self.loss = loss
        self.times: list[float] = []

    def __call__(self, outputs: list, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        self.times.append(time.perf_counter())
        total, terms = self.loss(outputs, batch)
        return total, {k: float(v) for k, v in terms.items()}


class _SaveClock:
    """``save_checkpoint`` of the trainer, timed (the checkpoint written at every epoch end)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return save_checkpoint(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def _run(steps: int, workers: int, persistent: bool, out: Path, extra: list[str]
         ) -> tuple[float, float, float]:
    """(steps/min, epoch-boundary share of the time, checkpoint-write share) of one run."""
    cfg = load_config(ROOT / "configs" / "coco_ae.yaml", [
        f"data.root={SAMPLE}", "data.train_json=person_keypoints_ccby.json",
        "data.train_images=images", "data.val_json=person_keypoints_ccby.json",
        "data.val_images=images", "data.input_size=256", "data.output_size=64",
        f"data.num_workers={workers}", f"data.persistent_workers={str(persistent).lower()}",
        "model.num_stacks=2", "model.channels=64", f"train.batch_size={BATCH}",
        f"train.max_steps={steps}", "train.epochs=100000", "train.amp=none",
        "train.device=cpu", "train.threads=1", "train.warmup_steps=0",
        "train.log_interval=1000000", f"train.output_dir={out}", *extra])
    clock, saves = _Clock(MultiStackLoss(cfg.loss)), _SaveClock()
    trainer.save_checkpoint = saves
    try:
        summary = train(cfg, loss_fn=clock, validate=False)
    finally:
        trainer.save_checkpoint = save_checkpoint
    assert summary["step"] == steps
    t = clock.times
    per_epoch = 17 // BATCH
    gaps = [(b - a, (k + 1) % per_epoch == 0) for k, (a, b) in enumerate(zip(t[:-1], t[1:],
                                                                                strict=True))]
    inside = statistics.median(g for g, boundary in gaps if not boundary)
    excess = sum(g - inside for g, boundary in gaps if boundary)
    total = t[-1] - t[0]
    # The last epoch's checkpoint is written after the last step: outside ``total``.
    boundaries = sum(boundary for _, boundary in gaps)
    saved = saves.seconds * boundaries / max(boundaries + 1, 1)
    return 60.0 * (len(t) - 1) / total, excess / total, saved / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--workers", type=int, default=1, help="loader workers (data.num_workers)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--increase", type=int, default=None,
                        help="model.increase (default: the config's, 128)")
    args = parser.parse_args()
    if args.steps < 2 * 17 // BATCH + 1:
        parser.error("--steps: expected at least 5 (two epochs and a step)")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    arms = [(f"workers {args.workers}, persistent", args.workers, True),
            (f"workers {args.workers}, new per epoch", args.workers, False),
            ("main process (workers 0)", 0, True)]
    increase = "config's" if args.increase is None else args.increase
    print(f"configs/coco_ae.yaml on {SAMPLE.name}: 2 stacks x 64 channels (increase "
          f"{increase}), 256 px input, "
          f"batch {BATCH} (2 steps per epoch), CPU, torch threads 1, {args.steps} steps, "
          f"median of {args.repeats} repeat(s); times between step 1 and step {args.steps}")
    extra = [] if args.increase is None else [f"model.increase={args.increase}"]
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in arms}
    with tempfile.TemporaryDirectory() as tmp:
        # Repeats interleave the arms, so that a drift of the machine's load hits all of them.
        for r in range(args.repeats):
            for name, workers, persistent in arms:
                runs[name].append(_run(args.steps, workers, persistent,
                                       Path(tmp) / f"{workers}{persistent}{r}", extra))
        for name, _, _ in arms:
            rate, share, saved = (statistics.median(x[i] for x in runs[name]) for i in range(3))
            print(f"{name:<32} {rate:7.1f} steps/min   epoch boundaries {100 * share:5.1f}% "
                  f"of the time (checkpoint writes {100 * saved:4.1f}%, the rest "
                  f"{100 * (share - saved):4.1f}%)")


if __name__ == "__main__":
    main()
