#!/usr/bin/env python
"""Real photos learn: AP against minutes when fine-tuning on the 17 real COCO photos.

Trains ``configs/coco_finetune_small.yaml`` (a 2-stack, 64-channel network at 256 px on
``tests/data/coco_kp_ccby``: 17 COCO photos with 44 people, crowd masks, the real loader and
augmentation) from scratch and evaluates it on the same images every ``--eval-every`` steps with
pycocotools. A network that memorises these people proves the whole real-data path. Prints one
row per evaluation: steps, minutes since training started (earlier evaluations included),
keypoint AP, AP50 and AR. The issue's target is AP >= 0.5 within 10 minutes on 2 cores. Example::

    python benchmarks/bench_finetune.py                       # the config's step budget
    python benchmarks/bench_finetune.py --eval-every 100 train.max_steps=1200
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from aehg.config import load_config
from aehg.data import build_dataset
from aehg.engine import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "coco_finetune_small.yaml"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    ap.add_argument("--out", help="run folder (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        # The data root in the config is relative to the repository.
        cfg = load_config(args.config, [f"data.root={ROOT / 'tests/data/coco_kp_ccby'}",
                                        f"train.output_dir={out}", *args.overrides])
        tc = cfg.train
        # Validation every eval_every steps: val_interval counts epochs.
        n_train = len(build_dataset(cfg, "train"))
        steps_per_epoch = max(n_train // tc.batch_size, 1)
        cfg.train.val_interval = max(args.eval_every // steps_per_epoch, 1)
        threads = tc.threads or torch.get_num_threads()
        print(f"config {Path(args.config).name}: {cfg.model.num_stacks} stacks, "
              f"{cfg.model.channels} channels, input {cfg.data.input_size}, batch "
              f"{tc.batch_size}, {tc.max_steps} steps, loader workers {cfg.data.num_workers}, "
              f"torch threads {threads}", flush=True)
        summary = train(cfg, resume=None, validate=True, overwrite=True)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Minutes of training at a step: the time of the last training record at or before it.
    times = {r["step"]: r["time"] for r in records if "time" in r}
    print(f"\n{'steps':>6} {'minutes':>8} {'AP':>6} {'AP50':>6} {'AR':>6}")
    for r in records:
        if "val/AP" not in r:
            continue
        known = [s for s in times if s <= r["step"]]
        minutes = times[max(known)] / 60.0 if known else float("nan")
        print(f"{r['step']:>6} {minutes:>8.2f} {r['val/AP']:>6.3f} {r['val/AP50']:>6.3f} "
              f"{r['val/AR']:>6.3f}")
    print(f"\ntotal training time {summary['seconds'] / 60:.2f} min for {summary['step']} steps "
          f"(evaluations included)")


if __name__ == "__main__":
    main()
